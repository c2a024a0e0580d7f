"""What a live patient sends back for one turn: their words and, optionally, images.

A paused intake resumes with `Command(resume=...)`; the value may be a plain string (the answer
alone, as the CLI chat sends) or a `PatientMessage` dumped to a dict (what the HTTP service and
image-capable clients send). Images travel by path to a file the caller has already stored (the
service keeps uploads under its session directory), never as bytes in the checkpoint, so a
resumed session finds the same file again.

The same resume can instead carry a `StopRequest`: ending or escalating the interview from outside
(the patient's "end" button, a clinician). It goes through the graph's own path, the pending
question is dropped without recording a turn, and the summary's stop reason says who stopped it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ImageAttachment(BaseModel):
    """An image the patient attached to a turn."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="Where the stored upload is on disk.")
    filename: str = Field(default="", description="The name the patient's file had (shown, never trusted).")
    modality: str | None = Field(
        default=None, description="Label set to triage with (chest_xray, dermatology, ...); None detects it."
    )
    content_type: str | None = Field(default=None, description="The MIME type the client declared, if any.")


class PatientMessage(BaseModel):
    """One patient turn: the answer text and any images attached with it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(default="", description="The answer as typed; may be empty when only an image is sent.")
    images: list[ImageAttachment] = Field(default_factory=list, max_length=8)


def as_patient_message(raw: Any) -> PatientMessage:
    """Read a resume value: a string, a `PatientMessage`, a dict of one, or anything else as text."""
    if isinstance(raw, PatientMessage):
        return raw
    if isinstance(raw, str):
        return PatientMessage(text=raw)
    if isinstance(raw, dict) and ("text" in raw or "images" in raw):
        return PatientMessage.model_validate(raw)
    return PatientMessage(text="" if raw is None else str(raw))


StopRequestReason = Literal["patient_ended", "ended_by_clinician", "escalated_by_clinician"]


class StopRequest(BaseModel):
    """Stop the interview at the pending question, from outside the conversation."""

    model_config = ConfigDict(extra="forbid")

    stop: StopRequestReason
    patient_message: str | None = Field(
        default=None, description="What the patient is told instead of the usual closing words."
    )


def as_stop_request(raw: Any) -> StopRequest | None:
    """A resume value that asks to stop, or None for an ordinary answer."""
    if isinstance(raw, StopRequest):
        return raw
    if isinstance(raw, dict) and "stop" in raw:
        return StopRequest.model_validate(raw)
    return None
