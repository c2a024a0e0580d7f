"""The verifier: every statement must be grounded in the sources it cites, or it leaves the summary.

Checks are deterministic first: a cited turn or record entry must exist; the patient's words must really
be in the cited answer; a record line must name its entry; a model-written statement must share
most of its content words, and every number, with the answers it cites. A statement that fails is
moved to `removed_statements` and flagged as unsupported, so nothing unsupported reaches the
clinician as fact and nothing is silently dropped either. A model check then reads each
model-written statement against its cited answers; it can remove a statement, never restore one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from pydantic import BaseModel, Field

from agents.events import ModelEvent
from agents.summary_schema import ClinicianSummary, HpiItem, Statement, UncertaintyFlag
from agents.transcript import Turn, excerpt
from tools.fhir.record import PatientRecord
from tools.imaging.records import ImageRecord
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, ModelError

MODEL_OVERLAP_THRESHOLD = 0.6
"""Share of a model statement's content words that must appear in the answers it cites."""

_STOPWORDS = frozenset(
    (
        "a an and are as at be been but by did do does for from had has have he her his i in is it "
        "its me my of on or patient patients reports reported says said she that the their them "
        "they this to was were with you your yes no not about also has since"
    ).split()
)
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def _quoted(text: str) -> list[str]:
    return re.findall(r'"([^"]+)"', text) or [text]


def check_statement(
    statement: Statement, turns: dict[str, Turn], record: PatientRecord | None, image_ids: Collection[str] = ()
) -> str | None:
    """Why `statement` is not supported by its sources, or None when it is."""
    cited_turns: list[Turn] = []
    for source in statement.sources:
        if source.kind == "patient":
            if source.ref not in turns:
                return f"cites {source.ref}, which is not in the transcript"
            cited_turns.append(turns[source.ref])
        elif source.kind == "record":
            if record is None or record.find(source.ref) is None:
                return f"cites {source.ref}, which is not in the record"
        elif source.kind == "image":
            if source.ref not in image_ids:
                return f"cites {source.ref}, which is not an image attached in this intake"
        else:
            return f"cites {source.kind} source {source.ref}, which this intake has no results for"
    if all(s.kind == "image" for s in statement.sources):
        return None  # rendered by code from the cited image's triage result, which exists
    evidence = " ".join(t.answer for t in cited_turns)
    if statement.origin == "patient_words":
        for quote in _quoted(statement.text):
            parts = [p for p in re.split(r"\s*\[\.\.\. \d+ characters omitted \.\.\.\]\s*", quote) if p]
            if not all(_normalise(p) in _normalise(evidence) for p in parts):
                return "the quoted words are not in the cited answer"
        return None
    if statement.origin == "record":
        return None
    if statement.origin == "reconciled":
        quotes = re.findall(r'"([^"]+)"', statement.text)
        if quotes and not cited_turns:
            return "quotes the patient but cites no answer"
        for quote in quotes:
            if _normalise(quote) not in _normalise(evidence):
                return "the quoted words are not in the cited answer"
        return None
    words = _content_words(statement.text)
    if not words:
        return "the statement says nothing checkable"
    available = _content_words(evidence)
    overlap = len(words & available) / len(words)
    if overlap < MODEL_OVERLAP_THRESHOLD:
        return f"only {overlap:.0%} of its content words appear in the cited answers"
    missing_numbers = set(_NUMBER.findall(statement.text)) - set(_NUMBER.findall(evidence))
    if missing_numbers:
        return f"numbers not in the cited answers: {', '.join(sorted(missing_numbers))}"
    return None


def verify_summary(
    summary: ClinicianSummary,
    turns: list[Turn],
    record: PatientRecord | None,
    images: Sequence[ImageRecord] = (),
) -> ClinicianSummary:
    """The summary with unsupported statements removed and flagged."""
    by_id = {t.id: t for t in turns}
    image_ids = {i.id for i in images if i.status == "triaged"}
    removed: list[Statement] = []
    flags: list[UncertaintyFlag] = []

    def keep(statement: Statement) -> bool:
        problem = check_statement(statement, by_id, record, image_ids)
        if problem is None:
            return True
        removed.append(statement)
        repeat = next((f for f in flags if f.message.endswith(f": {statement.text[:200]}")), None)
        if repeat is not None:  # a model that repeats itself gets one flag, with every citation
            repeat.evidence += [s for s in statement.sources if s not in repeat.evidence]
            return False
        flags.append(
            UncertaintyFlag(
                kind="unsupported",
                severity="medium",
                message=f"Removed a statement the sources do not support ({problem}): {statement.text[:200]}",
                evidence=list(statement.sources),
            )
        )
        return False

    def keep_all(statements: list[Statement]) -> list[Statement]:
        return [s for s in statements if keep(s)]

    complaint = summary.chief_complaint if summary.chief_complaint and keep(summary.chief_complaint) else None
    return summary.model_copy(
        update={
            "red_flags": summary.red_flags,  # never removed: a red flag is shown even if its quote is odd
            "chief_complaint": complaint,
            "hpi": [HpiItem(element=h.element, statement=h.statement) for h in summary.hpi if keep(h.statement)],
            "hpi_narrative": keep_all(summary.hpi_narrative),
            "pertinent_positives": keep_all(summary.pertinent_positives),
            "pertinent_negatives": keep_all(summary.pertinent_negatives),
            "review_of_systems": {
                system: kept for system, group in summary.review_of_systems.items() if (kept := keep_all(group))
            },
            "medications": keep_all(summary.medications),
            "allergies": keep_all(summary.allergies),
            "history": keep_all(summary.history),
            "social_history": keep_all(summary.social_history),
            "family_history": keep_all(summary.family_history),
            "image_findings": keep_all(summary.image_findings),
            "patient_concerns": keep_all(summary.patient_concerns),
            "flags": [*summary.flags, *flags],
            "removed_statements": [*summary.removed_statements, *removed],
        }
    )


class SupportVerdict(BaseModel):
    """The model's judgement of one statement against the answers it cites."""

    supported: bool
    reason: str = Field(default="", max_length=160)


VERIFIER_SYSTEM = (
    "You check a clinical summary statement against the patient's own answers it cites. Reply "
    "supported=true only if the answers state it; anything added, inferred or diagnostic is not "
    'supported. Reply with JSON only: {"supported": true|false, "reason": "..."}'
)


async def model_check(
    model: ChatModel, summary: ClinicianSummary, turns: list[Turn]
) -> tuple[ClinicianSummary, list[ModelEvent]]:
    """Second check of model-written statements that passed the deterministic checks.

    The model can only remove: a statement it judges unsupported leaves the summary, flagged. When
    the model cannot answer, the statement stays (code already grounded it) and the failure is
    recorded so the summary says the second check did not run.
    """
    by_id = {t.id: t for t in turns}
    kept: list[Statement] = []
    removed: list[Statement] = []
    flags: list[UncertaintyFlag] = []
    events: list[ModelEvent] = []
    for statement in summary.hpi_narrative:
        cited = "\n".join(f"[{s.ref}] {excerpt(by_id[s.ref].answer, 600)}" for s in statement.sources if s.ref in by_id)
        request = ChatRequest(
            task="verifier.check",
            messages=[
                ChatMessage(role="system", content=VERIFIER_SYSTEM),
                ChatMessage(role="user", content=f"Statement: {statement.text}\nCited answers:\n{cited}"),
            ],
            max_new_tokens=80,
        )
        try:
            verdict = (await model.complete(request, SupportVerdict)).value
        except ModelError as exc:
            events.append(ModelEvent(task="verifier.check", outcome="failed", detail=str(exc)))
            kept.append(statement)
            continue
        if verdict.supported:
            kept.append(statement)
        else:
            removed.append(statement)
            flags.append(
                UncertaintyFlag(
                    kind="unsupported",
                    severity="medium",
                    message=f"Removed a statement the model check found unsupported ({verdict.reason or 'no reason'}): "
                    f"{statement.text[:200]}",
                    evidence=statement.sources,
                )
            )
    updated = summary.model_copy(
        update={
            "hpi_narrative": kept,
            "flags": [*summary.flags, *flags],
            "removed_statements": [*summary.removed_statements, *removed],
        }
    )
    return updated, events
