"""The summarizer: a clinician summary built by code from cited facts, with a model-written HPI.

Sections that can be stated from evidence alone (the patient's own words per intake element, the
record's medications, allergies and problems) are assembled by code, so they are right even with
a weak model. The model writes only the HPI narrative, citing turns; the verifier then checks
every statement. Uncertainties are derived here from the same evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from pydantic import BaseModel, Field

from agents.coverage import HPI_ELEMENTS, Coverage, IntakeElement, mentioning_sentence
from agents.events import ModelEvent
from agents.findings import extract_findings
from agents.reconciliation import Reconciliation
from agents.reconciliation_summary import (
    allergy_statement,
    condition_statement,
    medication_statement,
    reconciliation_flags,
)
from agents.safety import RedFlag
from agents.staleness import DEFAULT_STALE_AFTER_DAYS, stale_flags
from agents.summary_schema import (
    ClinicianSummary,
    HpiItem,
    SourceRef,
    Statement,
    StopReason,
    UncertaintyFlag,
)
from agents.transcript import Turn, excerpt
from tools.fhir.record import PatientRecord
from tools.imaging.records import ImageRecord
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest

QUOTE_CHARS = 400


class NarrativeStatement(BaseModel):
    text: str = Field(min_length=3, max_length=160)
    turns: list[str] = Field(min_length=1, max_length=4, description="Ids of the turns this statement rests on.")


class HpiNarrative(BaseModel):
    """What the model returns: the history of present illness as short cited statements."""

    statements: list[NarrativeStatement] = Field(max_length=6)


SUMMARIZER_SYSTEM = (
    "You write the history of present illness for a clinician from a pre-visit intake transcript. "
    "Write short factual statements using only what the patient said; cite the turn ids each "
    "statement rests on. No diagnosis, no speculation, no advice. Reply with JSON only: "
    '{"statements": [{"text": "...", "turns": ["turn-1"]}]}'
)

_MISSING_WHY: dict[StopReason, str] = {
    "covered": "no answer was given",
    "patient_ended": "the patient ended the interview first",
    "question_cap": "the question limit was reached first",
    "red_flag": "the intake stopped for a red flag",
    "ended_by_clinician": "a clinician ended the interview first",
    "escalated_by_clinician": "a clinician escalated the intake first",
}


def _patient(turn: Turn, text: str | None = None) -> Statement:
    quote = excerpt(text if text is not None else turn.answer, QUOTE_CHARS)
    return Statement(text=quote, sources=[SourceRef(kind="patient", ref=turn.id)], origin="patient_words")


def _record(text: str, ref: str) -> Statement:
    return Statement(text=text, sources=[SourceRef(kind="record", ref=ref)], origin="record")


def _turns_for(coverage: Coverage, element: IntakeElement, turns_by_id: dict[str, Turn]) -> list[Turn]:
    return [turns_by_id[t] for t in coverage.elements[element].turn_ids if t in turns_by_id]


def _element_statements(element: IntakeElement, coverage: Coverage, turns_by_id: dict[str, Turn]) -> list[Statement]:
    statements = []
    for turn in _turns_for(coverage, element, turns_by_id):
        if turn.element == element:
            statements.append(_patient(turn))
        elif sentence := mentioning_sentence(element, turn.answer):
            statements.append(_patient(turn, sentence))
    return statements


def _unquoted(answers: list[Statement], section: list[Statement]) -> list[Statement]:
    """The patient's answers that the section's reconciled lines do not already quote in full."""
    quoted = " ".join(s.text for s in section if s.origin == "reconciled")
    return [a for a in answers if f'"{a.text}"' not in quoted]


def narrative_request(turns: list[Turn], reason: str | None) -> ChatRequest:
    transcript = "\n".join(f"[{t.id}] Q: {t.question}\n[{t.id}] A: {excerpt(t.answer, 600)}" for t in turns)
    return ChatRequest(
        task="summarizer.hpi",
        messages=[
            ChatMessage(role="system", content=SUMMARIZER_SYSTEM),
            ChatMessage(
                role="user",
                content=f"Reason for visit: {reason or 'not given'}\nTranscript:\n{transcript}\n\nWrite the HPI.",
            ),
        ],
        max_new_tokens=448,
    )


async def write_narrative(model: ChatModel, turns: list[Turn], reason: str | None) -> list[Statement]:
    """The model's HPI; raises `ModelError` for the caller to record."""
    reply = await model.complete(narrative_request(turns, reason), HpiNarrative)
    return [
        Statement(
            text=s.text.strip(),
            sources=[SourceRef(kind="patient", ref=t) for t in dict.fromkeys(s.turns)],
            origin="model",
        )
        for s in reply.value.statements
    ]


def low_confidence_flags(model_events: list[ModelEvent]) -> list[UncertaintyFlag]:
    """One low-confidence flag per model task whose output was not used as given."""
    by_family: dict[str, list[ModelEvent]] = {}
    for event in model_events:
        by_family.setdefault(event.task.split(":", 1)[0].split("#", 1)[0], []).append(event)
    flags = []
    for family, events in by_family.items():
        outcomes = ", ".join(sorted({e.outcome for e in events}))
        flags.append(
            UncertaintyFlag(
                kind="low_confidence",
                severity="low",
                message=f"Model output for {family} was not used as given {len(events)} time(s) ({outcomes}); "
                f"a deterministic fallback or repaired reply was used. Last: {events[-1].detail[:160]}",
                evidence=[SourceRef(kind="patient", ref=e.turn_id) for e in events if e.turn_id],
            )
        )
    return flags


def image_findings(images: Sequence[ImageRecord]) -> tuple[list[Statement], list[UncertaintyFlag]]:
    """Triage signals as image-cited statements; weak, ambiguous, untriaged and unreadable images as flags.

    The statement text is rendered by code from the triage result (scores, label set, model), so
    it is checked against the image record, never against the patient's words.
    """
    statements: list[Statement] = []
    flags: list[UncertaintyFlag] = []
    for image in images:
        evidence = [SourceRef(kind="image", ref=image.id), SourceRef(kind="patient", ref=image.turn_id)]
        if image.status == "triaged" and image.triage is not None:
            result = image.triage
            statements.append(
                Statement(
                    text=f"{image.label}: {result.signal_text()}",
                    sources=[SourceRef(kind="image", ref=image.id)],
                    origin="model",
                )
            )
            if result.low_confidence or result.ambiguous:
                why = " and ".join(
                    w
                    for w, on in (
                        (f"its highest score is {result.top.probability:.2f}", result.low_confidence),
                        ("its two highest scores are close", result.ambiguous),
                    )
                    if on
                )
                flags.append(
                    UncertaintyFlag(
                        kind="low_confidence",
                        severity="low",
                        message=f"Image triage of {image.label} is a weak signal ({why}); look at the image itself.",
                        evidence=evidence,
                    )
                )
        elif image.status == "not_triaged":
            flags.append(
                UncertaintyFlag(
                    kind="low_confidence",
                    severity="low",
                    message=f"Image {image.label} was not triaged ({image.error or 'no reason given'}); "
                    "look at the image itself.",
                    evidence=evidence,
                )
            )
        else:
            what = "could not be read" if image.status == "unreadable" else "could not be triaged"
            flags.append(
                UncertaintyFlag(
                    kind="low_confidence",
                    severity="medium",
                    message=f"Image {image.label} {what}: {image.error or 'no reason given'}. "
                    "Ask the patient to send it again or bring it to the visit.",
                    evidence=evidence,
                )
            )
    return statements, flags


def _medication_line(name: str, dosage: str | None) -> str:
    return f"{name} ({dosage})" if dosage else name


def build_summary(
    *,
    patient_id: str,
    reason: str | None,
    record: PatientRecord | None,
    record_error: str | None,
    turns: list[Turn],
    coverage: Coverage,
    red_flags: list[RedFlag],
    model_events: list[ModelEvent],
    stop_reason: StopReason,
    narrative: list[Statement],
    model_id: str,
    demo_model: bool,
    today: date,
    stale_after_days: int = DEFAULT_STALE_AFTER_DAYS,
    reconciliation: Reconciliation | None = None,
    images: Sequence[ImageRecord] = (),
) -> ClinicianSummary:
    """Assemble the draft summary; the verifier checks it next."""
    by_id = {t.id: t for t in turns}
    flags: list[UncertaintyFlag] = []

    red = [
        Statement(
            text=f'{flag.description}: "{excerpt(flag.evidence, QUOTE_CHARS)}"',
            sources=[SourceRef(kind="patient", ref=flag.turn_id)],
            origin="patient_words",
        )
        for flag in red_flags
    ]
    for flag in red_flags:
        flags.append(
            UncertaintyFlag(
                kind="red_flag",
                severity="high",
                message=f"Red flag ({flag.category}, detected by {flag.detected_by}): {flag.description}. "
                "The patient was told to seek emergency care now.",
                evidence=[SourceRef(kind="patient", ref=flag.turn_id)],
            )
        )

    complaint = _element_statements(IntakeElement.CHIEF_COMPLAINT, coverage, by_id)
    hpi = [
        HpiItem(element=element, statement=statement)
        for element in HPI_ELEMENTS
        for statement in _element_statements(element, coverage, by_id)[:1]
    ]

    medications: list[Statement] = []
    allergies: list[Statement] = []
    history: list[Statement] = []
    if reconciliation is not None:
        medications += [s for line in reconciliation.medications if (s := medication_statement(line))]
        allergies += [s for line in reconciliation.allergies if (s := allergy_statement(line))]
        history += [s for line in reconciliation.conditions if (s := condition_statement(line))]
        discussed = coverage.status(IntakeElement.MEDICATIONS) == "covered"
        flags += reconciliation_flags(reconciliation, medications_discussed=discussed)
    elif record:
        medications += [
            _record(f"Record lists active medication: {_medication_line(m.name, m.dosage)}", m.ref)
            for m in record.active_medications
        ]
        allergies += [_record(f"Record lists allergy: {a.substance}", a.ref) for a in record.active_allergies]
        history += [_record(f"Record lists active problem: {c.name}", c.ref) for c in record.active_conditions]
    medications += _unquoted(_element_statements(IntakeElement.MEDICATIONS, coverage, by_id), medications)
    allergies += _unquoted(_element_statements(IntakeElement.ALLERGIES, coverage, by_id), allergies)
    history += _unquoted(_element_statements(IntakeElement.HISTORY, coverage, by_id), history)
    concerns = _element_statements(IntakeElement.PATIENT_CONCERNS, coverage, by_id)

    for element, entry in coverage.elements.items():
        if entry.status == "covered":
            continue
        if entry.status == "declined":
            why = "the patient declined to answer"
        elif entry.attempts > 0:
            why = "the patient gave no answer"
        else:
            why = _MISSING_WHY[stop_reason]
        severity = "medium" if element in (IntakeElement.MEDICATIONS, IntakeElement.ALLERGIES) else "low"
        flags.append(
            UncertaintyFlag(
                kind="missing",
                severity="high" if element == IntakeElement.CHIEF_COMPLAINT else severity,
                message=f"Not covered: {element.value.replace('_', ' ')} ({why}).",
                evidence=[SourceRef(kind="patient", ref=t) for t in entry.turn_ids],
            )
        )

    findings = extract_findings(turns)
    flags += findings.contradictions
    if record is not None:
        flags += stale_flags(record, today, stale_after_days)

    if record is None:
        flags.append(
            UncertaintyFlag(
                kind="record_unavailable",
                severity="high",
                message=f"The patient record could not be loaded: {record_error or 'unknown error'}. "
                "Nothing in this summary was checked against the chart.",
            )
        )
    elif record.skipped_resources:
        flags.append(
            UncertaintyFlag(
                kind="record_unavailable",
                severity="medium",
                message=f"The record is partial: {record.skipped_resources} resource(s) could not be used (failed "
                "validation, named another patient, or lay beyond a broken page link) and were left out.",
            )
        )

    flags += low_confidence_flags(model_events)
    image_statements, image_flags = image_findings(images)
    flags += image_flags

    for turn in turns:
        if turn.long_answer:
            flags.append(
                UncertaintyFlag(
                    kind="low_confidence",
                    severity="low",
                    message=f"A very long answer ({turn.answer_chars} characters) was excerpted for the model; "
                    "read it in full in the transcript.",
                    evidence=[SourceRef(kind="patient", ref=turn.id)],
                )
            )

    return ClinicianSummary(
        patient_id=patient_id,
        patient_name=record.demographics.name if record else None,
        reason_for_visit=reason,
        generated_at=datetime.now(UTC),
        model_id=model_id,
        demo_model=demo_model,
        stop_reason=stop_reason,
        questions_asked=len(turns),
        red_flags=red,
        chief_complaint=complaint[0] if complaint else None,
        hpi=hpi,
        hpi_narrative=narrative,
        pertinent_positives=findings.pertinent_positives,
        pertinent_negatives=findings.pertinent_negatives,
        review_of_systems=findings.review_of_systems,
        medications=medications,
        allergies=allergies,
        history=history,
        social_history=findings.social_history,
        family_history=findings.family_history,
        image_findings=image_statements,
        patient_concerns=concerns,
        flags=flags,
    )
