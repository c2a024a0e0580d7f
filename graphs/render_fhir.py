"""The summary as FHIR R4 resources: what a write-back sends to the EHR.

One transaction Bundle holds a `Composition` (the clinician summary, a section per part, every
entry's sources listed), a `QuestionnaireResponse` (the questions and answers), and a `Flag` per
uncertainty (`DetectedIssue` for conflicts between patient and record), all referencing the patient
and each other. Every resource carries an identifier derived from the session, and each entry is a
conditional create on it, so sending the same bundle twice creates nothing new.
Resources are built as JSON and validated with `fhir.resources` (R4B reads and writes R4 JSON).
"""

from __future__ import annotations

import hashlib
import html
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from agents.summary_schema import ClinicianSummary, SourceRef, Statement, UncertaintyFlag
from agents.transcript import Turn

IDENTIFIER_SYSTEM = "urn:previsit:session"
LOINC = "http://loinc.org"
_FLAG_SEVERITY = {"high": "high", "medium": "moderate", "low": "low"}


def _urn(session_id: str, name: str) -> str:
    digest = hashlib.sha256(f"{session_id}/{name}".encode()).hexdigest()
    return f"urn:uuid:{uuid.UUID(digest[:32])}"


def _identifier(session_id: str, name: str) -> dict[str, str]:
    return {"system": IDENTIFIER_SYSTEM, "value": f"{session_id}/{name}"}


def _sources_text(sources: list[SourceRef]) -> str:
    return ", ".join(s.ref for s in sources)


def _narrative(statements: list[Statement]) -> str:
    items = "".join(
        f"<li>{html.escape(s.text)} <i>[{html.escape(_sources_text(s.sources))}]</i></li>" for s in statements
    )
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><ul>{items}</ul></div>'


def _record_entries(statements: list[Statement]) -> list[dict[str, str]]:
    refs = {s.ref for st in statements for s in st.sources if s.kind == "record"}
    return [{"reference": ref} for ref in sorted(refs)]


def _section(title: str, code: str | None, statements: list[Statement]) -> dict[str, Any] | None:
    if not statements:
        return None
    section: dict[str, Any] = {
        "title": title,
        "text": {"status": "generated", "div": _narrative(statements)},
    }
    if code:
        section["code"] = {"coding": [{"system": LOINC, "code": code}]}
    entries = _record_entries(statements)
    if entries:
        section["entry"] = entries
    return section


def _flag_resource(flag: UncertaintyFlag, patient_ref: str, identifier: dict[str, str]) -> dict[str, Any]:
    if flag.kind == "conflict":
        return {
            "resourceType": "DetectedIssue",
            "identifier": [identifier],
            "status": "preliminary",
            "severity": _FLAG_SEVERITY[flag.severity],
            "patient": {"reference": patient_ref},
            "detail": flag.message,
            "implicated": [{"reference": s.ref} for s in flag.evidence if s.kind == "record"] or None,
        }
    return {
        "resourceType": "Flag",
        "identifier": [identifier],
        "status": "active",
        "category": [{"text": f"previsit {flag.kind.replace('_', ' ')} ({flag.severity})"}],
        "code": {"text": flag.message[:1000]},
        "subject": {"reference": patient_ref},
    }


def render_fhir_bundle(
    summary: ClinicianSummary, turns: list[Turn], session_id: str, patient_ref: str | None = None
) -> dict[str, Any]:
    """A transaction Bundle (validated) with the Composition, QuestionnaireResponse and flags."""
    patient = patient_ref or f"Patient/{summary.patient_id}"
    composition_urn = _urn(session_id, "composition")
    response_urn = _urn(session_id, "questionnaire-response")
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any], name: str, full_url: str) -> None:
        resource = {k: v for k, v in resource.items() if v is not None}
        ident = f"{IDENTIFIER_SYSTEM}|{session_id}/{name}"
        entries.append(
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": f"identifier={ident}"},
            }
        )

    flag_refs: list[dict[str, str]] = []
    for index, flag in enumerate(summary.flags, start=1):
        name = f"flag-{index}"
        full_url = _urn(session_id, name)
        add(_flag_resource(flag, patient, _identifier(session_id, name)), name, full_url)
        flag_refs.append({"reference": full_url})

    answers = [
        {
            "linkId": turn.id,
            "text": turn.question,
            "answer": [{"valueString": turn.answer}] if turn.answer else None,
        }
        for turn in turns
    ]
    add(
        {
            "resourceType": "QuestionnaireResponse",
            "identifier": _identifier(session_id, "questionnaire-response"),
            "status": "completed",
            "subject": {"reference": patient},
            "authored": summary.generated_at.isoformat(),
            "item": [{k: v for k, v in a.items() if v is not None} for a in answers] or None,
        },
        "questionnaire-response",
        response_urn,
    )

    codes = {
        "Chief complaint": "10154-3",
        "History of present illness": "10164-2",
        "Medications": "10160-0",
        "Allergies": "48765-2",
        "Relevant history": "11348-0",
        "Social history": "29762-2",
        "Family history": "10157-6",
        "Review of systems": "10187-3",
    }
    parts = [("Red flags", summary.red_flags), *summary.sections()]
    sections = [s for title, statements in parts if (s := _section(title, codes.get(title), statements))]
    sections.append(
        {
            "title": "Uncertainties",
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml"><ul>'
                + "".join(f"<li>{html.escape(f.severity)}: {html.escape(f.message)}</li>" for f in summary.flags)
                + "</ul></div>",
            },
            "entry": flag_refs or None,
            "emptyReason": None if summary.flags else {"text": "No uncertainties were flagged"},
        }
    )
    add(
        {
            "resourceType": "Composition",
            "identifier": _identifier(session_id, "composition"),
            "status": "preliminary",
            "type": {"coding": [{"system": LOINC, "code": "34109-9", "display": "Note"}], "text": "Pre-visit summary"},
            "subject": {"reference": patient},
            "date": summary.generated_at.isoformat(),
            "author": [{"display": f"previsit ({summary.model_id})"}],
            "title": f"Pre-visit summary{' (demo model)' if summary.demo_model else ''}",
            "relatesTo": None,
            "section": [{k: v for k, v in s.items() if v is not None} for s in sections]
            + [{"title": "Questions and answers", "entry": [{"reference": response_urn}]}],
        },
        "composition",
        composition_urn,
    )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)
