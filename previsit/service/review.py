"""The clinician's side of a finished intake: the summary in three formats, edits, approval, write-back.

Edits are kept as a list beside the checkpoint (who, when, what), never written into the graph's
state: the original summary stays as the intake produced it and the edited one is derived from it.
Write-back is gated on approval, and an edit after approval withdraws it, so what goes to the EHR
is exactly what a clinician approved.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agents.summary_schema import ClinicianSummary, Statement
from graphs.render import render_markdown
from graphs.render_fhir import render_fhir_bundle
from graphs.state import IntakeState
from previsit.service.problems import Problem
from previsit.service.schemas import EditRequest
from previsit.service.store import SessionData, SummaryEdit

LIST_SECTIONS = [
    "red_flags",
    "hpi",
    "hpi_narrative",
    "pertinent_positives",
    "pertinent_negatives",
    "medications",
    "allergies",
    "history",
    "social_history",
    "family_history",
    "image_findings",
    "patient_concerns",
]
_TITLES = {
    "chief complaint": "chief_complaint",
    "history of present illness": "hpi",
    "hpi narrative": "hpi_narrative",
    "pertinent positives": "pertinent_positives",
    "pertinent negatives": "pertinent_negatives",
    "medications": "medications",
    "allergies": "allergies",
    "relevant history": "history",
    "social history": "social_history",
    "family history": "family_history",
    "image triage signals": "image_findings",
    "patient's concerns and questions": "patient_concerns",
    "red flags": "red_flags",
}


def section_field(section: str) -> str:
    """The summary field an edit names, by field name ('medications') or section title ('Medications')."""
    name = section.strip()
    if name in LIST_SECTIONS or name == "chief_complaint":
        return name
    mapped = _TITLES.get(name.lower())
    if mapped is None:
        raise Problem(422, f"Unknown summary section {section!r}.", kind="bad-edit")
    return mapped


def apply_edit(summary: ClinicianSummary, edit: EditRequest | SummaryEdit) -> ClinicianSummary:
    """The summary with one statement's text replaced (or the statement removed when text is None)."""
    field = section_field(edit.section)

    def changed(statement: Statement) -> Statement:
        assert edit.text is not None
        return statement.model_copy(update={"text": edit.text})

    if field == "chief_complaint":
        if edit.index != 0 or summary.chief_complaint is None:
            raise Problem(422, "The chief complaint has one statement, index 0.", kind="bad-edit")
        value = None if edit.text is None else changed(summary.chief_complaint)
        return summary.model_copy(update={"chief_complaint": value})
    items: list[Any] = list(getattr(summary, field))
    if not 0 <= edit.index < len(items):
        raise Problem(422, f"Section {field} has no statement {edit.index}.", kind="bad-edit")
    if edit.text is None:
        del items[edit.index]
    elif field == "hpi":
        item = items[edit.index]
        items[edit.index] = item.model_copy(update={"statement": changed(item.statement)})
    else:
        items[edit.index] = changed(items[edit.index])
    return summary.model_copy(update={field: items})


def edited_summary(state: IntakeState, data: SessionData) -> ClinicianSummary:
    summary = finished_summary(state)
    for edit in data.edits:
        summary = apply_edit(summary, edit)
    return summary


def finished_summary(state: IntakeState | None) -> ClinicianSummary:
    if state is None or state.summary is None:
        raise Problem(409, "The intake has not finished; there is no summary yet.", kind="no-summary")
    return state.summary


def record_edits(state: IntakeState, data: SessionData, patch_edits: list[EditRequest], by: str) -> ClinicianSummary:
    """Check the edits against the current edited summary, keep them, and withdraw any approval."""
    summary = edited_summary(state, data)
    now = datetime.now(UTC)
    for edit in patch_edits:
        summary = apply_edit(summary, edit)
        data.edits.append(
            SummaryEdit(section=section_field(edit.section), index=edit.index, text=edit.text, by=by, at=now)
        )
    if patch_edits:
        data.approved_at = None
        data.approved_by = None
    return summary


def markdown_with_review(summary: ClinicianSummary, state: IntakeState, data: SessionData) -> str:
    text = render_markdown(summary, state.turns, state.images)
    lines: list[str] = []
    if data.clinician_note:
        lines += ["", "## Clinician note", "", data.clinician_note]
    if data.edits:
        lines += ["", "## Clinician edits", ""]
        for edit in data.edits:
            what = "removed" if edit.text is None else "changed"
            lines.append(f"- {edit.at:%Y-%m-%d %H:%M} UTC, {edit.by}: {edit.section}[{edit.index}] {what}")
    if data.approved_at:
        lines += ["", f"Approved by {data.approved_by} at {data.approved_at:%Y-%m-%d %H:%M} UTC."]
    return text + ("\n" + "\n".join(lines) + "\n" if lines else "")


def patient_ref(state: IntakeState) -> str:
    return state.record.demographics.ref if state.record else f"Patient/{state.patient_id}"


def fhir_bundle(summary: ClinicianSummary, state: IntakeState, session_id: str) -> dict[str, Any]:
    return render_fhir_bundle(summary, state.turns, session_id, patient_ref=patient_ref(state))
