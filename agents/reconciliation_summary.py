"""Reconciliation as the clinician reads it: one cited line per medicine, allergy and problem, and
the flags that follow (conflicts with the record, claims only the patient makes, things not
discussed).

Each line cites the record entry and the patient's turns it rests on and quotes the patient's
words exactly, so the verifier can check it like any other statement.
"""

from __future__ import annotations

from agents.reconciliation import AllergyLine, ConditionLine, MedicationLine, Reconciliation, allergen_name
from agents.summary_schema import Severity, SourceRef, Statement, UncertaintyFlag

_MEDICATION_STATUS = {
    "confirmed": "patient confirms taking it",
    "stopped": "patient says they stopped it",
    "taking_differently": "patient takes it differently",
    "not_discussed": "not discussed",
    "patient_reported_only": "reported by the patient; not in the record",
    "unsure": "patient unsure",
}
_ALLERGY_STATUS = {
    "confirmed": "patient confirms",
    "denied_by_patient": "patient denies it",
    "not_discussed": "not discussed",
    "patient_reported_only": "reported by the patient; not in the record",
}
_CONDITION_STATUS = {
    "confirmed": "patient confirms",
    "denied_by_patient": "patient denies it",
    "not_discussed": "not discussed",
    "patient_reported_only": "reported by the patient; not in the record",
}


def _sources(record_ref: str | None, turn_ids: list[str]) -> list[SourceRef]:
    refs = [SourceRef(kind="record", ref=record_ref)] if record_ref else []
    return refs + [SourceRef(kind="patient", ref=t) for t in turn_ids]


def _line(
    name: str, record_ref: str | None, status_text: str, words: str | None, turn_ids: list[str], extra: str = ""
) -> Statement | None:
    sources = _sources(record_ref, turn_ids if words else [])
    if not sources:
        return None
    origin = "record" if record_ref else "patient"
    text = f"{name} ({'record' if origin == 'record' else 'patient'}): {status_text}{extra}"
    if words:
        text += f' - "{words}"'
    return Statement(text=text, sources=sources, origin="reconciled")


def medication_statement(line: MedicationLine) -> Statement | None:
    extra = f" ({line.detail})" if line.detail and line.status == "taking_differently" else ""
    if line.otc_or_supplement and line.status == "patient_reported_only":
        extra += " [over the counter / supplement]"
    return _line(line.name, line.record_ref, _MEDICATION_STATUS[line.status], line.patient_words, line.turn_ids, extra)


def allergy_statement(line: AllergyLine) -> Statement | None:
    reactions = line.reactions or line.record_reactions
    extra = f" (reaction: {', '.join(reactions)})" if reactions else ""
    if line.criticality:
        extra += f", criticality {line.criticality}"
    return _line(
        line.substance, line.record_ref, _ALLERGY_STATUS[line.status], line.patient_words, line.turn_ids, extra
    )


def condition_statement(line: ConditionLine) -> Statement | None:
    return _line(line.name, line.record_ref, _CONDITION_STATUS[line.status], line.patient_words, line.turn_ids)


def _flag(kind: str, severity: Severity, message: str, record_ref: str | None, turn_ids: list[str]) -> UncertaintyFlag:
    return UncertaintyFlag(
        kind="conflict" if kind == "conflict" else "unverified",
        severity=severity,
        message=message,
        evidence=_sources(record_ref, turn_ids),
    )


def reconciliation_flags(reconciliation: Reconciliation, medications_discussed: bool) -> list[UncertaintyFlag]:
    """Conflicts with the record, claims only the patient makes, record items left undiscussed."""
    flags: list[UncertaintyFlag] = []
    undiscussed: list[MedicationLine] = []
    for med in reconciliation.medications:
        if med.status == "stopped" and med.record_ref:
            flags.append(
                _flag(
                    "conflict",
                    "medium",
                    f"The record lists {med.name} as active, but the patient says they stopped it.",
                    med.record_ref,
                    med.turn_ids,
                )
            )
        elif med.status == "taking_differently" and med.record_ref:
            flags.append(
                _flag(
                    "conflict",
                    "medium",
                    f"The patient takes {med.name} differently from the record"
                    + (f": {med.detail}." if med.detail else "."),
                    med.record_ref,
                    med.turn_ids,
                )
            )
        elif med.status == "patient_reported_only":
            kind = "an over-the-counter medicine or supplement" if med.otc_or_supplement else "a medication"
            flags.append(
                _flag(
                    "unverified",
                    "low" if med.otc_or_supplement else "medium",
                    f"The patient reports {kind} the record does not list: {med.name}.",
                    None,
                    med.turn_ids,
                )
            )
        elif med.status == "not_discussed" and med.record_ref:
            undiscussed.append(med)
    if undiscussed and medications_discussed:
        flags.append(
            UncertaintyFlag(
                kind="missing",
                severity="low",
                message="Active record medications the patient did not mention: "
                + ", ".join(m.name for m in undiscussed)
                + ". Confirm whether they are still taken.",
                evidence=[SourceRef(kind="record", ref=m.record_ref) for m in undiscussed if m.record_ref],
            )
        )
    denied = [a for a in reconciliation.allergies if a.status == "denied_by_patient" and a.record_ref]
    if denied:
        names = ", ".join(allergen_name(a.substance) for a in denied)
        flags.append(
            UncertaintyFlag(
                kind="conflict",
                severity="high",
                message=f"The patient reports no allergy to {names}, but the record lists "
                f"{'it' if len(denied) == 1 else 'them'} as active.",
                evidence=[SourceRef(kind="record", ref=a.record_ref) for a in denied if a.record_ref]
                + [SourceRef(kind="patient", ref=t) for t in dict.fromkeys(t for a in denied for t in a.turn_ids)],
            )
        )
    for allergy in reconciliation.allergies:
        if allergy.status == "patient_reported_only":
            flags.append(
                _flag(
                    "unverified",
                    "medium",
                    f"The patient reports an allergy the record does not list: {allergy.substance}"
                    + (f" (reaction: {', '.join(allergy.reactions)})." if allergy.reactions else "."),
                    None,
                    allergy.turn_ids,
                )
            )
    for condition in reconciliation.conditions:
        if condition.status == "patient_reported_only":
            flags.append(
                _flag(
                    "unverified",
                    "low",
                    f"The patient reports a condition the record does not list: {condition.name}.",
                    None,
                    condition.turn_ids,
                )
            )
        elif condition.status == "denied_by_patient" and condition.record_ref:
            flags.append(
                _flag(
                    "conflict",
                    "medium",
                    f"The patient says they do not have {condition.name}, which the record lists as active.",
                    condition.record_ref,
                    condition.turn_ids,
                )
            )
    if reconciliation.rejected_claims:
        flags.append(
            UncertaintyFlag(
                kind="low_confidence",
                severity="low",
                message=f"{len(reconciliation.rejected_claims)} model claim(s) about medicines, allergies or history "
                "were dropped because the patient's words do not support them: "
                + "; ".join(reconciliation.rejected_claims[:3]),
            )
        )
    return flags
