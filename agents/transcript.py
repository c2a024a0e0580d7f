"""The transcript: what was asked and answered, turn by turn, kept whole.

A turn keeps the patient's answer exactly as received (control characters aside); prompts see a
bounded excerpt, and the summary cites turns by id. Nothing a patient typed is dropped.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, Field

from agents.coverage import IntakeElement

MAX_ANSWER_CHARS = 20_000
"""Answers longer than this are kept in full but marked; prompts never see more than an excerpt."""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class Turn(BaseModel):
    """One question and its answer."""

    id: str = Field(description="Stable citation id: 'turn-1', 'turn-2', ...")
    index: int = Field(ge=1)
    element: IntakeElement = Field(description="The intake element the question aimed at.")
    question: str
    question_source: Literal["model", "template"]
    answer: str = Field(description="The patient's answer, control characters removed, otherwise verbatim.")
    answer_chars: int = Field(description="Length of the answer as received.")
    long_answer: bool = Field(default=False, description="Longer than prompts show; excerpted there.")


def clean_answer(raw: str) -> str:
    """Remove control and bidi-override characters; keep the patient's words and line breaks."""
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", text).strip()


def excerpt(answer: str, limit: int = 1500) -> str:
    """What a prompt sees of a long answer: its start and end, marked as cut."""
    if len(answer) <= limit:
        return answer
    half = limit // 2
    return f"{answer[:half]} [... {len(answer) - limit} characters omitted ...] {answer[-half:]}"
