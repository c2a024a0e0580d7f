"""Simulated patients: they answer the interviewer from a scenario's hidden facts.

A simulated patient is a pure function of (question, element, turn index) over its scenario, with
no memory of its own: a simulation killed mid-intake and resumed gets exactly the same answers.
The fact patient is deterministic and needs no model; the model persona speaks through any chat
backend and falls back to the fact patient when the model fails.
"""

from __future__ import annotations

import re
import zlib
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.coverage import IntakeElement
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, ModelError

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a an and any are as at be did do does for have how i in is it me my of on or the to was "
        "what when where which who why with you your anything else there this that can tell"
    ).split()
)

_NOTHING_TO_ADD = ("No, not that I know of.", "I'm not sure.", "No, nothing like that.")


class HiddenFact(BaseModel):
    """Something the simulated patient knows and tells only when asked."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="In the patient's own voice.")
    element: IntakeElement | None = Field(default=None, description="The intake element it answers, if one.")


class PatientBrief(BaseModel):
    """What a simulated patient knows: the part of a scenario the interviewer never sees."""

    id: str = Field(description="Seeds the choice among 'nothing to add' replies.")
    persona: str = ""
    facts: list[HiddenFact]
    scripted_answers: dict[IntakeElement, str] = Field(default_factory=dict)


class PatientResponder(Protocol):
    """Anything that can answer the interviewer in place of a live patient."""

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        """The patient's reply to one question."""
        ...


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


class FactPatient:
    """Answers from hidden facts: facts tagged with the asked element first, then word overlap."""

    def __init__(self, brief: PatientBrief) -> None:
        self._brief = brief

    def _matching_facts(self, question: str, element: IntakeElement) -> list[HiddenFact]:
        tagged = [f for f in self._brief.facts if f.element == element]
        if tagged:
            return tagged[:3]
        asked = _words(question)
        scored = [(len(asked & _words(f.text)), i, f) for i, f in enumerate(self._brief.facts) if f.element is None]
        best = [f for score, _, f in sorted(scored, key=lambda s: (-s[0], s[1])) if score >= 2]
        return best[:2]

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        scripted = self._brief.scripted_answers.get(element)
        if scripted is not None:
            return scripted
        facts = self._matching_facts(question, element)
        if facts:
            return " ".join(f.text.strip() for f in facts)
        return _NOTHING_TO_ADD[zlib.crc32(f"{self._brief.id}:{turn_index}".encode()) % len(_NOTHING_TO_ADD)]


class PatientReply(BaseModel):
    answer: str = Field(min_length=1, max_length=400)


PERSONA_SYSTEM = (
    "You are role-playing a patient (or the parent of a child patient) in a pre-visit intake. "
    "Answer only what is asked, in 1 to 3 plain sentences, using only the facts below. If the facts do "
    "not cover the question, say you are not sure or that you don't have that. Never name a diagnosis. "
    'Reply with JSON only: {"answer": "..."}'
)


class ModelPatient:
    """A model persona; falls back to the fact patient's answer when the model fails."""

    def __init__(self, brief: PatientBrief, model: ChatModel) -> None:
        self._brief = brief
        self._model = model
        self._fallback = FactPatient(brief)

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        scripted = self._brief.scripted_answers.get(element)
        if scripted is not None:
            return scripted
        facts = "\n".join(f"- {f.text}" for f in self._brief.facts)
        request = ChatRequest(
            task="patient.answer",
            messages=[
                ChatMessage(
                    role="system", content=f"{PERSONA_SYSTEM}\nWho you are: {self._brief.persona}\nFacts:\n{facts}"
                ),
                ChatMessage(role="user", content=question),
            ],
            max_new_tokens=120,
        )
        try:
            reply = await self._model.complete(request, PatientReply)
        except ModelError:
            return await self._fallback.answer(question, element, turn_index)
        return reply.value.answer.strip()


def simulated_patient(brief: PatientBrief, model: ChatModel | None) -> PatientResponder:
    """The model persona when a model is given, else the deterministic fact patient."""
    if model is not None:
        return ModelPatient(brief, model)
    return FactPatient(brief)
