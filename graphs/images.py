"""Images a patient attaches during the intake: loaded, triaged when a triager is configured, recorded.

An image never stops an intake. A file that cannot be read, a triage model that is missing or
fails: each becomes an `ImageRecord` with the reason, and the summary turns it into a flag. Live
patients attach images in their resume value (`PatientMessage`); simulated patients answer with
text only, so a scenario's attachment schedule reaches `patient_turn` through the context.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from agents.coverage import IntakeElement
from agents.transcript import Turn
from graphs.patient_message import ImageAttachment
from tools.imaging.errors import ImageInputError, TriageError
from tools.imaging.load import LoadedImage, load_image_async
from tools.imaging.records import ImageRecord
from tools.imaging.triage import ImageTriager

NO_TRIAGER = "no image triage model is configured"


class ScheduledImage(BaseModel):
    """A simulation's attachment: the simulated patient sends it with the answer to one turn or element."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attachment: ImageAttachment
    at_turn: int | None = Field(default=None, ge=1)
    at_element: IntakeElement | None = None


def scheduled_for(
    schedule: Sequence[ScheduledImage], turn_index: int, element: IntakeElement, earlier: Sequence[Turn]
) -> list[ImageAttachment]:
    """The attachments due with this answer: by turn number, or at the first question about an element."""
    first_time = not any(t.element == element for t in earlier)
    return [
        s.attachment
        for s in schedule
        if s.at_turn == turn_index or (s.at_element == element and s.at_turn is None and first_time)
    ]


async def _triage(
    triager: ImageTriager, records: list[ImageRecord], loaded: list[LoadedImage], modality: str | None
) -> list[ImageRecord]:
    try:
        results = await triager.triage(loaded, modality)
    except (TriageError, RuntimeError, ValueError, OSError, MemoryError) as exc:
        return [
            r.model_copy(update={"status": "triage_failed", "error": str(exc) or type(exc).__name__}) for r in records
        ]
    return [r.model_copy(update={"status": "triaged", "triage": t}) for r, t in zip(records, results, strict=True)]


async def record_attachments(
    attachments: Sequence[ImageAttachment], turn_id: str, already: int, triager: ImageTriager | None
) -> list[ImageRecord]:
    """Load and triage what came with one answer; numbering continues after `already` images."""
    records: list[ImageRecord] = []
    loaded: dict[int, LoadedImage] = {}
    for offset, attachment in enumerate(attachments):
        base = ImageRecord(
            id=f"image-{already + offset + 1}",
            turn_id=turn_id,
            filename=attachment.filename or attachment.path.rsplit("/", 1)[-1],
            path=attachment.path,
            modality_requested=attachment.modality,
            status="not_triaged",
            error=NO_TRIAGER,
        )
        try:
            image = await load_image_async(attachment.path)
        except ImageInputError as exc:
            records.append(base.model_copy(update={"status": "unreadable", "error": str(exc)}))
            continue
        loaded[offset] = image
        width, height = image.size
        records.append(
            base.model_copy(
                update={
                    "sha256": image.sha256,
                    "format": image.format,
                    "width": width,
                    "height": height,
                    "notes": image.notes,
                }
            )
        )
    if triager is None or not loaded:
        return records
    by_modality: dict[str | None, list[int]] = {}
    for offset in loaded:
        by_modality.setdefault(attachments[offset].modality, []).append(offset)
    for modality, offsets in by_modality.items():
        group = [records[o].model_copy(update={"error": None}) for o in offsets]
        triaged = await _triage(triager, group, [loaded[o] for o in offsets], modality)
        for offset, done in zip(offsets, triaged, strict=True):
            records[offset] = done
    return records
