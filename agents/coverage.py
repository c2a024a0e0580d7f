"""The coverage tracker: which intake elements are covered, and whether the interview should stop.

This is code, not the model, on purpose: a weak or misbehaving model can phrase questions badly,
but it cannot make the interview skip allergies or run forever. An element is covered when the
question aimed at it got a substantive answer, or when any answer plainly speaks to it (a patient
who says "it started three days ago, a sharp pain" has covered onset and character too).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class IntakeElement(StrEnum):
    """What a complete pre-visit intake asks about, in the order it is asked."""

    CHIEF_COMPLAINT = "chief_complaint"
    ONSET = "onset"
    LOCATION = "location"
    DURATION = "duration"
    CHARACTER = "character"
    AGGRAVATING_RELIEVING = "aggravating_relieving"
    RADIATION = "radiation"
    TIMING = "timing"
    SEVERITY = "severity"
    MEDICATIONS = "medications"
    ALLERGIES = "allergies"
    HISTORY = "history"
    PATIENT_CONCERNS = "patient_concerns"


HPI_ELEMENTS: tuple[IntakeElement, ...] = (
    IntakeElement.ONSET,
    IntakeElement.LOCATION,
    IntakeElement.DURATION,
    IntakeElement.CHARACTER,
    IntakeElement.AGGRAVATING_RELIEVING,
    IntakeElement.RADIATION,
    IntakeElement.TIMING,
    IntakeElement.SEVERITY,
)

ELEMENT_LABELS: dict[IntakeElement, str] = {
    IntakeElement.CHIEF_COMPLAINT: "chief complaint (the main reason for the visit, in the patient's words)",
    IntakeElement.ONSET: "onset (when it started and how)",
    IntakeElement.LOCATION: "location (where in the body)",
    IntakeElement.DURATION: "duration (how long it lasts or has lasted)",
    IntakeElement.CHARACTER: "character (what it feels like)",
    IntakeElement.AGGRAVATING_RELIEVING: "aggravating and relieving factors (what makes it worse or better)",
    IntakeElement.RADIATION: "radiation (whether it spreads anywhere)",
    IntakeElement.TIMING: "timing (constant or comes and goes, time of day)",
    IntakeElement.SEVERITY: "severity (how bad, 0 to 10, effect on daily life)",
    IntakeElement.MEDICATIONS: "current medications, including over-the-counter and supplements",
    IntakeElement.ALLERGIES: "allergies and what reaction they cause",
    IntakeElement.HISTORY: "relevant medical history",
    IntakeElement.PATIENT_CONCERNS: "the patient's own concerns and questions for the visit",
}

CoverageStatus = Literal["covered", "declined", "unanswered"]

# Phrases that show an answer speaks to an element even when the question was about another one.
_MENTIONS: dict[IntakeElement, re.Pattern[str]] = {
    IntakeElement.ONSET: re.compile(
        r"\b(started|began|begun|since|ago|yesterday|last (night|week|month|year)|this morning|"
        r"suddenly|gradually|came on)\b",
        re.I,
    ),
    IntakeElement.DURATION: re.compile(
        r"\b(\d+|a few|several|couple( of)?|one|two|three|four|five|six|seven)\s+"
        r"(minutes?|hours?|days?|weeks?|months?|years?)\b(?!\s+ago)|\blasts?\b|\bfor (a|about)\b",
        re.I,
    ),
    IntakeElement.CHARACTER: re.compile(
        r"\b(sharp|dull|aching|achy|burning|stabbing|throbbing|pressure|tight(ness)?|cramp(ing|y)?|"
        r"squeezing|shooting|itchy|itching|tingling|numb(ness)?|sore|heavy|pounding)\b(?<!blood pressure)",
        re.I,
    ),
    IntakeElement.AGGRAVATING_RELIEVING: re.compile(
        r"\b(worse|better|helps?|relie(f|ves?|ved)|aggravat\w*|eases?|triggers?)\b", re.I
    ),
    IntakeElement.RADIATION: re.compile(r"\b(spreads?|radiat\w*|moves? (to|into|down|up)|goes (to|into|down))\b", re.I),
    IntakeElement.TIMING: re.compile(
        r"\b(constant(ly)?|comes and goes|on and off|intermittent\w*|at night|in the morning|"
        r"all the time|every (day|night|morning)|episodes?)\b",
        re.I,
    ),
    IntakeElement.SEVERITY: re.compile(
        r"\b(\d{1,2}\s*(/|out of)\s*10|mild|moderate|severe|unbearable|excruciating|worst (pain|ever|i'?ve))\b", re.I
    ),
}

_DECLINE = re.compile(
    r"\b(rather not (say|answer|talk)|prefer not|don'?t want to (say|answer|talk)|decline|skip( this| that)?|"
    r"no comment|not comfortable)\b",
    re.I,
)
_END = re.compile(
    r"\b(end (the|this) (interview|intake|chat|conversation)|stop (the )?(interview|intake|questions)|"
    r"i want to stop|i('d| would) like to stop|that'?s all( for now)?|no more questions|i'?m done|"
    r"let'?s stop|quit|goodbye|bye)\b",
    re.I,
)


class ElementCoverage(BaseModel):
    """What the interview knows about one element."""

    element: IntakeElement
    status: CoverageStatus = "unanswered"
    turn_ids: list[str] = Field(default_factory=list, description="Turns whose answers cover this element.")
    attempts: int = Field(default=0, description="Questions aimed at this element so far.")


class Coverage(BaseModel):
    """The tracker's state; kept in the graph state so a resumed session continues where it was."""

    elements: dict[IntakeElement, ElementCoverage] = Field(
        default_factory=lambda: {e: ElementCoverage(element=e) for e in IntakeElement}
    )

    def status(self, element: IntakeElement) -> CoverageStatus:
        return self.elements[element].status

    def open_elements(self, max_attempts: int) -> list[IntakeElement]:
        """Elements still worth asking about, in interview order."""
        return [e for e, c in self.elements.items() if c.status == "unanswered" and c.attempts < max_attempts]

    def complete(self, max_attempts: int) -> bool:
        return not self.open_elements(max_attempts)


def mentioning_sentence(element: IntakeElement, answer: str) -> str | None:
    """The sentence of `answer` that speaks to `element`, if any does."""
    pattern = _MENTIONS.get(element)
    if pattern is None:
        return None
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", answer):
        if pattern.search(sentence):
            return sentence.strip()
    return None


def is_decline(answer: str) -> bool:
    return bool(_DECLINE.search(answer))


def wants_to_end(answer: str) -> bool:
    """The patient asked to end the interview."""
    return bool(_END.search(answer))


def update_coverage(coverage: Coverage, target: IntakeElement, turn_id: str, answer: str) -> Coverage:
    """The tracker after one answer to a question aimed at `target`."""
    updated = coverage.model_copy(deep=True)
    aimed = updated.elements[target]
    aimed.attempts += 1
    if is_decline(answer):
        aimed.status = "declined"
        aimed.turn_ids.append(turn_id)
    elif answer.strip():
        # "I don't know" to "does it spread anywhere?" is an answer; only silence is not.
        aimed.status = "covered"
        aimed.turn_ids.append(turn_id)
    if target not in (IntakeElement.CHIEF_COMPLAINT, *HPI_ELEMENTS):
        # "I take it every day" answers the medication question, not the symptom's timing.
        return updated
    for element, pattern in _MENTIONS.items():
        entry = updated.elements[element]
        if element != target and entry.status == "unanswered" and pattern.search(answer):
            entry.status = "covered"
            entry.turn_ids.append(turn_id)
    return updated


StopReason = Literal["covered", "patient_ended", "question_cap", "red_flag"]


def stop_reason(
    coverage: Coverage, questions_asked: int, max_questions: int, max_attempts: int, ended_by_patient: bool
) -> StopReason | None:
    """Why the interview stops now, or None to ask another question."""
    if ended_by_patient:
        return "patient_ended"
    if coverage.complete(max_attempts):
        return "covered"
    if questions_asked >= max_questions:
        return "question_cap"
    return None
