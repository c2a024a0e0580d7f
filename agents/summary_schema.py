"""The clinician summary: every statement cites its sources, every doubt is a typed flag.

This is the contract between the summarizer, the verifier and the renderers, and what a clinician
or an EHR integration reads as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from agents.coverage import IntakeElement

SourceKind = Literal["patient", "record", "image"]


class SourceRef(BaseModel):
    """Where a statement came from."""

    kind: SourceKind
    ref: str = Field(
        description="'turn-3' for a patient answer, 'Condition/abc' for a record entry, 'image-1' for an image."
    )


class Statement(BaseModel):
    """One line of the summary and its evidence."""

    text: str
    sources: list[SourceRef] = Field(min_length=1)
    origin: Literal["patient_words", "record", "reconciled", "model"] = Field(
        description="Verbatim patient words, rendered from the record, the record and the patient's quoted words "
        "side by side (reconciliation), or written by the model."
    )


class HpiItem(BaseModel):
    element: IntakeElement
    statement: Statement


FlagKind = Literal[
    "red_flag", "conflict", "unverified", "missing", "stale", "low_confidence", "unsupported", "record_unavailable"
]
Severity = Literal["high", "medium", "low"]


class UncertaintyFlag(BaseModel):
    """Something the clinician should not take at face value."""

    kind: FlagKind
    severity: Severity
    message: str
    evidence: list[SourceRef] = Field(default_factory=list)


StopReason = Literal[
    "covered", "patient_ended", "question_cap", "red_flag", "ended_by_clinician", "escalated_by_clinician"
]


class ClinicianSummary(BaseModel):
    """What a clinician reads before the visit."""

    patient_id: str
    patient_name: str | None
    reason_for_visit: str | None
    generated_at: datetime
    model_id: str
    demo_model: bool = Field(description="True when a small demo model wrote parts of it: not for clinical use.")
    stop_reason: StopReason
    questions_asked: int
    red_flags: list[Statement] = Field(default_factory=list)
    chief_complaint: Statement | None = None
    hpi: list[HpiItem] = Field(default_factory=list)
    hpi_narrative: list[Statement] = Field(default_factory=list, description="Model-written, verifier-checked.")
    pertinent_positives: list[Statement] = Field(default_factory=list, description="Symptoms the patient reports.")
    pertinent_negatives: list[Statement] = Field(default_factory=list, description="Symptoms the patient denies.")
    review_of_systems: dict[str, list[Statement]] = Field(
        default_factory=dict, description="Reported and denied symptoms grouped by body system."
    )
    medications: list[Statement] = Field(default_factory=list)
    allergies: list[Statement] = Field(default_factory=list)
    history: list[Statement] = Field(default_factory=list)
    social_history: list[Statement] = Field(default_factory=list)
    family_history: list[Statement] = Field(default_factory=list)
    image_findings: list[Statement] = Field(
        default_factory=list, description="Image triage signals for the clinician (never shown to the patient)."
    )
    patient_concerns: list[Statement] = Field(default_factory=list)
    flags: list[UncertaintyFlag] = Field(default_factory=list)
    removed_statements: list[Statement] = Field(
        default_factory=list, description="Statements the verifier could not ground; kept out of the summary."
    )

    def statements(self) -> list[Statement]:
        """Every statement in the summary body, for verification and search."""
        items: list[Statement] = [*self.red_flags]
        if self.chief_complaint:
            items.append(self.chief_complaint)
        items += [h.statement for h in self.hpi]
        items += self.hpi_narrative + self.pertinent_positives + self.pertinent_negatives
        items += [s for group in self.review_of_systems.values() for s in group]
        items += self.medications + self.allergies + self.history + self.social_history + self.family_history
        items += self.image_findings + self.patient_concerns
        return items

    def sections(self) -> list[tuple[str, list[Statement]]]:
        """The body in reading order, as (title, statements); renderers share it."""
        # The review of systems regroups the pertinent positives and negatives by body system; it is
        # in the JSON for systems that want it, and not repeated in the reading order.
        return [
            ("Chief complaint", [self.chief_complaint] if self.chief_complaint else []),
            ("History of present illness", [h.statement for h in self.hpi]),
            ("HPI narrative", self.hpi_narrative),
            ("Pertinent positives", self.pertinent_positives),
            ("Pertinent negatives", self.pertinent_negatives),
            ("Medications", self.medications),
            ("Allergies", self.allergies),
            ("Relevant history", self.history),
            ("Social history", self.social_history),
            ("Family history", self.family_history),
            ("Image triage signals", self.image_findings),
            ("Patient's concerns and questions", self.patient_concerns),
        ]
