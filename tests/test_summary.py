"""The clinician summary: findings from the patient's words, stale values, renderers, and the rule
that nothing uncited reaches a clinician."""

from __future__ import annotations

import re
from datetime import date

from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.coverage import Coverage, IntakeElement, update_coverage
from agents.findings import extract_findings
from agents.reconciliation import reconcile
from agents.staleness import stale_flags
from agents.summarizer import build_summary
from agents.summary_schema import ClinicianSummary, SourceRef, Statement
from agents.transcript import Turn
from agents.verifier import verify_summary
from graphs.render import render_html, render_markdown
from graphs.render_fhir import render_fhir_bundle
from tools.fhir.record import PatientRecord, RecordMedication, RecordObservation

TODAY = date(2026, 11, 23)


def _turn(index: int, answer: str, element: IntakeElement = IntakeElement.CHIEF_COMPLAINT) -> Turn:
    return Turn(
        id=f"turn-{index}",
        index=index,
        element=element,
        question="Question?",
        question_source="template",
        answer=answer,
        answer_chars=len(answer),
    )


def _summary(
    turns: list[Turn], record: PatientRecord | None, narrative: list[Statement] | None = None
) -> ClinicianSummary:
    coverage = Coverage()
    for turn in turns:
        coverage = update_coverage(coverage, turn.element, turn.id, turn.answer)
    draft = build_summary(
        patient_id="p-1",
        reason="Cough",
        record=record,
        record_error=None if record else "server down",
        turns=turns,
        coverage=coverage,
        red_flags=[],
        model_events=[],
        stop_reason="covered",
        narrative=narrative or [],
        model_id="scripted",
        demo_model=False,
        today=TODAY,
        reconciliation=reconcile(record, turns),
    )
    return verify_summary(draft, turns, record)


def test_findings_separate_reported_and_denied_symptoms_and_group_them_by_system() -> None:
    turns = [
        _turn(1, "I have a cough and I feel tired all the time. No fever though."),
        _turn(2, "My mother had diabetes. I smoke about ten cigarettes a day."),
    ]
    findings = extract_findings(turns)
    assert [s.text for s in findings.pertinent_positives] == [
        "I have a cough and I feel tired all the time.",
        "I have a cough and I feel tired all the time.",
    ]
    assert [s.text for s in findings.pertinent_negatives] == ["No fever though."]
    assert set(findings.review_of_systems) == {"respiratory", "constitutional"}
    assert [s.text for s in findings.family_history] == ["My mother had diabetes."]
    assert [s.text for s in findings.social_history] == ["I smoke about ten cigarettes a day."]
    assert not findings.contradictions


def test_answers_that_contradict_each_other_are_flagged_with_both_turns() -> None:
    turns = [_turn(1, "No fever at all."), _turn(2, "Actually I had a fever of 39 last night.", IntakeElement.ONSET)]
    findings = extract_findings(turns)
    assert len(findings.contradictions) == 1
    flag = findings.contradictions[0]
    assert flag.kind == "conflict" and "fever" in flag.message
    assert [e.ref for e in flag.evidence] == ["turn-1", "turn-2"]


def test_a_family_members_symptom_or_a_past_one_is_not_the_patients() -> None:
    findings = extract_findings([_turn(1, "My father gets headaches. The rash I had years ago is gone.")])
    assert not findings.pertinent_positives and not findings.pertinent_negatives


def test_stale_vitals_and_old_prescriptions_are_flagged_with_their_dates(lisinopril_record: PatientRecord) -> None:
    record = lisinopril_record.model_copy(
        update={
            "observations": [
                RecordObservation(
                    ref="Observation/o-1",
                    name="Systolic BP",
                    code="8480-6",
                    value="128 mm[Hg]",
                    category="vital-signs",
                    effective=date(2022, 3, 1),
                ),
                RecordObservation(
                    ref="Observation/o-2",
                    name="Systolic BP",
                    code="8480-6",
                    value="131 mm[Hg]",
                    category="vital-signs",
                    effective=date(2026, 10, 1),
                ),
                RecordObservation(
                    ref="Observation/o-3",
                    name="Hemoglobin A1c",
                    code="4548-4",
                    value="6.1 %",
                    category="laboratory",
                    effective=date(2023, 1, 5),
                ),
            ],
            "medications": [
                RecordMedication(
                    ref="MedicationRequest/m-1", name="Lisinopril 10 MG", status="active", authored=date(2019, 1, 1)
                ),
            ],
        }
    )
    flags = stale_flags(record, TODAY, stale_after_days=365)
    assert [f.kind for f in flags] == ["stale", "stale"]
    assert "Hemoglobin A1c 6.1 % (2023-01-05)" in flags[0].message
    assert "Systolic" not in flags[0].message, "the latest BP is recent"
    assert [e.ref for e in flags[0].evidence] == ["Observation/o-3"]
    assert "Lisinopril" in flags[1].message and flags[1].evidence[0].ref == "MedicationRequest/m-1"


def test_html_escapes_patient_text_and_puts_red_flags_and_uncertainties_first(lisinopril_record: PatientRecord) -> None:
    turns = [_turn(1, "<script>alert(1)</script> a cough & a fever")]
    summary = _summary(turns, lisinopril_record)
    page = render_html(summary, turns)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert page.index("Uncertainties") < page.index("Chief complaint")
    assert "does not diagnose" in page


def test_the_fhir_bundle_validates_references_the_patient_and_is_idempotent(lisinopril_record: PatientRecord) -> None:
    turns = [_turn(1, "A cough."), _turn(2, "No allergies.", IntakeElement.ALLERGIES)]
    summary = _summary(turns, lisinopril_record)
    bundle = render_fhir_bundle(summary, turns, "session-1", patient_ref="Patient/p-1")
    Bundle.model_validate(bundle)
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types.count("Composition") == 1 and types.count("QuestionnaireResponse") == 1
    assert "DetectedIssue" in types, "the allergy conflict becomes a DetectedIssue"
    assert all(
        e["request"]["ifNoneExist"].startswith("identifier=urn:previsit:session|session-1/") for e in bundle["entry"]
    )
    again = render_fhir_bundle(summary, turns, "session-1", patient_ref="Patient/p-1")
    assert [e["fullUrl"] for e in again["entry"]] == [e["fullUrl"] for e in bundle["entry"]]
    response = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "QuestionnaireResponse")
    assert [i["answer"][0]["valueString"] for i in response["item"]] == ["A cough.", "No allergies."]


_answers = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=120),
    min_size=1,
    max_size=6,
)
_claims = st.lists(
    st.tuples(st.text(min_size=3, max_size=80), st.lists(st.integers(1, 9), min_size=1, max_size=3)), max_size=4
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=_answers, claims=_claims)
def test_no_rendered_summary_holds_an_uncited_statement(
    lisinopril_record: PatientRecord, answers: list[str], claims: list[tuple[str, list[int]]]
) -> None:
    elements = list(IntakeElement)
    turns = [_turn(i + 1, a, elements[i % len(elements)]) for i, a in enumerate(answers)]
    narrative = [
        Statement(text=text, sources=[SourceRef(kind="patient", ref=f"turn-{n}") for n in refs], origin="model")
        for text, refs in claims
    ]
    summary = _summary(turns, lisinopril_record, narrative)
    valid = {t.id for t in turns} | {
        e.ref for e in [*lisinopril_record.medications, *lisinopril_record.allergies, *lisinopril_record.conditions]
    }
    for statement in summary.statements():
        assert statement.sources and all(s.ref in valid for s in statement.sources), statement
    markdown = render_markdown(summary, turns)
    body = markdown.split("## Sources")[0]
    for section in body.split("\n## ")[1:]:
        title, _, content = section.partition("\n")
        if title in ("Uncertainties", "Removed by the verifier (not supported by their sources)"):
            continue
        for line in content.splitlines():
            if line.startswith("- "):
                assert re.search(r"\[\^\d+\]", line), f"uncited line in {title}: {line}"


def test_a_model_repeating_an_unsupported_statement_gets_one_flag_with_every_citation(
    lisinopril_record: PatientRecord,
) -> None:
    turns = [_turn(1, "A cough."), _turn(2, "Since Monday.", IntakeElement.ONSET)]
    echo = "What brings you in today and how are you feeling?"
    narrative = [
        Statement(text=echo, sources=[SourceRef(kind="patient", ref="turn-1")], origin="model"),
        Statement(text=echo, sources=[SourceRef(kind="patient", ref="turn-2")], origin="model"),
    ]
    summary = _summary(turns, lisinopril_record, narrative)
    flags = [f for f in summary.flags if f.kind == "unsupported"]
    assert len(flags) == 1
    assert [e.ref for e in flags[0].evidence] == ["turn-1", "turn-2"]
    assert len(summary.removed_statements) == 2
