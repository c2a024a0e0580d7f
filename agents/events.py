"""Model events: what each model call did, so the summary can say where a model was not trusted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

EventOutcome = Literal["repaired", "failed", "rejected"]


class ModelEvent(BaseModel):
    """A model call that did not simply succeed."""

    task: str
    outcome: EventOutcome
    detail: str
    turn_id: str | None = None
