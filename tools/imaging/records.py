"""What the intake keeps about each attached image: provenance, and the triage result or why there is none.

The file stays where the caller stored it; the record holds its path and sha256 so a reviewer can
check that the image they open is the one that was triaged. Triage output lives here and in the
clinician summary only: nothing in this record is ever put in front of the patient.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.imaging.triage import TriageResult

ImageStatus = Literal["triaged", "not_triaged", "unreadable", "triage_failed"]


class ImageRecord(BaseModel):
    """One image a patient sent during the intake."""

    id: str = Field(pattern=r"^image-\d+$", description="'image-1', ...: what summary statements cite.")
    turn_id: str = Field(description="The turn whose answer carried it.")
    filename: str = Field(description="The name the patient's file had (shown, never trusted).")
    path: str = Field(description="Where the stored file is.")
    sha256: str | None = Field(default=None, description="Of the file's bytes; None when it could not be read.")
    format: str | None = Field(default=None, description="Format judged from the content (png, jpeg, dicom, ...).")
    width: int | None = None
    height: int | None = None
    modality_requested: str | None = Field(default=None, description="The modality the sender named, if any.")
    status: ImageStatus
    triage: TriageResult | None = None
    error: str | None = Field(default=None, description="Why it was not triaged or could not be read.")
    notes: list[str] = Field(default_factory=list, description="How the pixels were normalised.")

    @property
    def label(self) -> str:
        """How the clinician sees it named: id, file name and turn."""
        name = f" '{self.filename}'" if self.filename else ""
        return f"{self.id}{name} (sent at {self.turn_id})"
