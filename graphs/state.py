"""The intake graph's state, in three layers: what a caller gives, what the graph keeps, what it returns.

Layering follows the LangGraph templates: `IntakeInput` is all a caller may set, `IntakeState`
adds what the nodes work on (checkpointed after every step, so a killed process resumes with every
answer intact), and `IntakeOutput` is what `invoke` hands back.
"""

from __future__ import annotations

import operator
from typing import Annotated

from pydantic import BaseModel, Field

from agents.coverage import Coverage
from agents.events import ModelEvent
from agents.interviewer import ProposedQuestion
from agents.safety import RedFlag
from agents.summary_schema import ClinicianSummary, StopReason
from agents.transcript import Turn
from graphs.patient_message import StopRequestReason
from tools.fhir.record import PatientRecord
from tools.imaging.records import ImageRecord


class IntakeInput(BaseModel):
    """What starts an intake. Fixed for the session: nothing a patient or a model says changes it."""

    patient_id: str = Field(min_length=1, description="The patient this session is bound to, for its whole life.")
    reason_for_visit: str | None = Field(
        default=None, description="The reason given when the appointment was booked, if any."
    )
    max_questions: int = Field(default=20, ge=0, le=200, description="Hard cap on questions asked.")
    scenario_path: str | None = Field(
        default=None,
        description="Simulations only: the scenario file whose simulated patient answers, so a resumed "
        "simulation gets the same patient back.",
    )
    model_spec: str = Field(
        default="none", description="The model backend the session started with; resume uses the same."
    )
    fhir_base: str | None = Field(
        default=None,
        description="The FHIR server the session reads its record from and writes back to, as given (a URL "
        "or 'sandbox'); resume and write-back use it again. None: the fixture bundles.",
    )
    write_back: bool = Field(
        default=False, description="Write the summary to the FHIR server once finished, also after a resume."
    )


class IntakeState(IntakeInput):
    """Everything the nodes read and write."""

    record: PatientRecord | None = Field(default=None, description="The chart, once loaded.")
    record_error: str | None = Field(default=None, description="Why the chart could not be loaded, if it could not.")
    chart_context: str = Field(default="", description="Cited chart lines the prompts see, under a token budget.")
    coverage: Coverage = Field(default_factory=Coverage, description="Which intake elements are covered.")
    pending: ProposedQuestion | None = Field(default=None, description="The question waiting for an answer.")
    turns: Annotated[list[Turn], operator.add] = Field(default_factory=list, description="The transcript so far.")
    red_flags: Annotated[list[RedFlag], operator.add] = Field(
        default_factory=list, description="Red flags found by the safety screen."
    )
    images: Annotated[list[ImageRecord], operator.add] = Field(
        default_factory=list, description="Images the patient attached, with their triage (clinician-only)."
    )
    model_events: Annotated[list[ModelEvent], operator.add] = Field(
        default_factory=list, description="Model calls that failed, needed repair or were overruled."
    )
    ended_by_patient: bool = Field(default=False, description="The patient asked to end the interview.")
    stop_requested: StopRequestReason | None = Field(
        default=None, description="Someone outside the conversation stopped it (end button, clinician)."
    )
    stop_reason: StopReason | None = Field(default=None, description="Why the interview stopped, once it has.")
    summary: ClinicianSummary | None = Field(default=None, description="The summary, draft then verified.")
    markdown: str = Field(default="", description="The summary rendered for clinicians.")
    patient_message: str | None = Field(
        default=None, description="The last thing the patient is told (closing words or the emergency advice)."
    )


class IntakeOutput(BaseModel):
    """What a finished intake returns."""

    patient_id: str
    turns: list[Turn] = Field(default_factory=list, description="The full transcript.")
    red_flags: list[RedFlag] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list, description="Attached images and their triage.")
    stop_reason: StopReason | None = None
    summary: ClinicianSummary | None = None
    markdown: str = ""
    patient_message: str | None = None
