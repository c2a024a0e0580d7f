"""The API's request and response bodies (the contract in notes/api_contract.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.transcript import MAX_ANSWER_CHARS
from previsit.service.store import ApiStatus, LaunchContext, SummaryEdit, WriteBackRecord


class Question(BaseModel):
    turn: int
    text: str
    element: str


class Progress(BaseModel):
    asked: int = Field(description="Questions put to the patient so far (the open one included).")
    max_questions: int
    covered: int = Field(description="Intake elements answered so far.")
    total: int


class ImageInfo(BaseModel):
    id: str
    filename: str
    turn_id: str
    triage: dict[str, Any] | None = Field(
        default=None, description="The triage result (clinicians only; patients never see it)."
    )
    error: str | None = Field(default=None, description="Why the image was not triaged (clinicians only).")
    ref: str | None = Field(default=None, description="The intake's id of the image ('image-1'), as summaries cite it.")
    status: str | None = Field(
        default=None, description="triaged, not_triaged, unreadable or triage_failed (clinicians only)."
    )


class TurnView(BaseModel):
    id: str
    question: str
    answer: str
    images: list[ImageInfo] = Field(default_factory=list)


class ReviewInfo(BaseModel):
    """What clinicians did with the summary (clinician views only)."""

    approved_at: datetime | None = None
    approved_by: str | None = None
    clinician_note: str | None = None
    edits: list[SummaryEdit] = Field(default_factory=list)
    writebacks: list[WriteBackRecord] = Field(default_factory=list)
    escalated_by_clinician: bool = False


class SessionState(BaseModel):
    session_id: str
    status: ApiStatus
    question: Question | None
    progress: Progress
    turns: list[TurnView]
    patient_message: str | None
    red_flag: bool
    approved: bool
    review: ReviewInfo | None = Field(default=None, description="Clinician views only.")


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: str | None = Field(default=None, min_length=1, max_length=200)
    reason_for_visit: str | None = Field(default=None, max_length=1000)
    max_questions: int | None = Field(default=None, ge=0, le=200)
    launch: LaunchContext | None = None


class CreatedSession(BaseModel):
    session_id: str
    patient_token: str
    patient_url: str
    state: SessionState


class SessionListItem(BaseModel):
    session_id: str
    patient_id: str
    status: ApiStatus
    questions_asked: int
    red_flag: bool
    updated_at: datetime
    approved: bool


class SessionList(BaseModel):
    sessions: list[SessionListItem]


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_ANSWER_CHARS)
    turn: int | None = Field(
        default=None,
        ge=1,
        description="The question number this answers (optional). A retry of an answer already recorded "
        "returns the state without recording it twice; an answer to another question is a 409.",
    )


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    section: str = Field(min_length=1, max_length=60)
    index: int = Field(ge=0)
    text: str | None = Field(default=None, max_length=4000)


class SummaryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clinician_note: str | None = Field(default=None, max_length=8000)
    edits: list[EditRequest] = Field(default_factory=list, max_length=200)


class Approval(BaseModel):
    approved: Literal[True] = True
    approved_at: datetime
    approved_by: str


class WriteBackResponse(BaseModel):
    written: list[str]
    already_present: list[str]
    mode: str
    notes: list[str]
