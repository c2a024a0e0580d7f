"""build_chart_context over the Synthea fixtures: priority, citations and the token budget."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.chart_context import build_chart_context
from tools.fhir.record import (
    ChartContext,
    Demographics,
    PatientRecord,
    RecordAllergy,
    RecordCondition,
    RecordMedication,
    RecordObservation,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_DIR = REPO_ROOT / "fixtures" / "fhir" / "synthea"
BUNDLES = sorted(SYNTHEA_DIR.glob("*.json"))
BONNIE = SYNTHEA_DIR / "Bonnie_Marvin_5c55a67c-fb41-4509-9eae-a55eebf760e1.json"
GABRIELA = SYNTHEA_DIR / "Gabriela_Streich_2469aaa6-cd76-46be-89cf-1443858151b5.json"
TODAY = date(2025, 1, 1)


def short(path: Path) -> str:
    return path.stem.split("_")[0]


def count_tokens(text: str) -> int:
    """Roughly what a tokenizer does: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@functools.cache
def _raw(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def raw_resources(path: Path, kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in _raw(path)["entry"] if e["resource"]["resourceType"] == kind]


def clinical_status(resource: dict[str, Any]) -> str:
    return str(resource["clinicalStatus"]["coding"][0]["code"])


def must_show(path: Path) -> set[str]:
    """Refs of the active conditions, medications and allergies, read from the raw JSON."""
    refs = {f"Condition/{c['id']}" for c in raw_resources(path, "Condition") if clinical_status(c) == "active"}
    requests = raw_resources(path, "MedicationRequest")
    refs |= {f"MedicationRequest/{m['id']}" for m in requests if m["status"] == "active"}
    refs |= {
        f"AllergyIntolerance/{a['id']}"
        for a in raw_resources(path, "AllergyIntolerance")
        if clinical_status(a) == "active"
    }
    return refs


@pytest.fixture(scope="module")
def source() -> BundleRecordSource:
    return BundleRecordSource(SYNTHEA_DIR)


async def record_of(source: BundleRecordSource, path: Path) -> PatientRecord:
    return await source.fetch_record(path.stem)


def assert_within_budget(context: ChartContext, budget: int) -> None:
    assert context.tokens_used <= budget
    assert count_tokens(context.render()) == context.tokens_used
    assert context.token_budget == budget


@pytest.mark.parametrize("path", BUNDLES, ids=short)
async def test_every_active_problem_medication_and_allergy_fits_2000_tokens(
    source: BundleRecordSource, path: Path
) -> None:
    record = await record_of(source, path)
    context = build_chart_context(record, 2000, count_tokens, today=TODAY)
    cited = [line.ref for line in context.lines]

    assert must_show(path) <= set(cited)
    assert_within_budget(context, 2000)
    (patient,) = raw_resources(path, "Patient")
    assert cited[0] == f"Patient/{patient['id']}"
    assert all(record.find(ref) is not None for ref in cited), "every line cites an entry of the record"
    assert len(cited) == len(set(cited)), "no entry is cited twice"


@pytest.mark.parametrize("path", BUNDLES, ids=short)
async def test_lines_follow_clinical_priority(source: BundleRecordSource, path: Path) -> None:
    context = build_chart_context(await record_of(source, path), 2000, count_tokens, today=TODAY)
    cited = [line.ref for line in context.lines]
    essential = must_show(path)
    last_essential = max((i for i, ref in enumerate(cited) if ref in essential), default=0)
    first_other = min(
        (i for i, ref in enumerate(cited) if ref.split("/")[0] in {"Observation", "Encounter", "Immunization"}),
        default=len(cited),
    )
    assert last_essential < first_other
    kinds = [ref.split("/")[0] for ref in cited]
    assert "Immunization" not in kinds or kinds[-1] == "Immunization", "immunizations come last"


@pytest.mark.parametrize("path", BUNDLES, ids=short)
async def test_tiny_budget_omits_lower_priority_lines(source: BundleRecordSource, path: Path) -> None:
    record = await record_of(source, path)
    full = build_chart_context(record, 2000, count_tokens, today=TODAY)
    tiny = build_chart_context(record, 60, count_tokens, today=TODAY)

    assert tiny.omitted > 0
    assert_within_budget(tiny, 60)
    assert tiny.lines == full.lines[: len(tiny.lines)], "a smaller budget keeps the highest-priority lines"
    assert len(tiny.lines) + tiny.omitted == len(full.lines) + full.omitted
    assert tiny.lines and tiny.lines[0].ref.startswith("Patient/")


async def test_zero_budget_gives_nothing(source: BundleRecordSource) -> None:
    record = await record_of(source, BONNIE)
    full = build_chart_context(record, 2000, count_tokens, today=TODAY)
    empty = build_chart_context(record, 0, count_tokens, today=TODAY)
    assert empty.lines == []
    assert empty.tokens_used == 0
    assert empty.omitted == len(full.lines) + full.omitted
    assert empty.render() == ""


async def test_budget_holds_for_a_tokenizer_that_is_not_additive(source: BundleRecordSource) -> None:
    def newline_heavy(text: str) -> int:  # joining lines costs more than the lines alone
        return count_tokens(text) + 5 * text.count("\n")

    record = await record_of(source, BONNIE)
    full = build_chart_context(record, 2000, count_tokens, today=TODAY)
    budget = sum(count_tokens(line.render()) for line in full.lines[:6]) + 2
    context = build_chart_context(record, budget, newline_heavy, today=TODAY)
    assert context.tokens_used == newline_heavy(context.render()) <= budget
    assert 0 < len(context.lines) < 6
    assert context.lines == full.lines[: len(context.lines)]


async def test_demographics_line_has_age_and_sex(source: BundleRecordSource) -> None:
    (patient,) = raw_resources(BONNIE, "Patient")
    born = date.fromisoformat(patient["birthDate"])
    record = await record_of(source, BONNIE)
    for today in (TODAY, date(2021, 9, 25), date(2021, 9, 26)):
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        line = build_chart_context(record, 2000, count_tokens, today=today).lines[0]
        assert f"{age} years old" in line.text
        assert patient["gender"] in line.text
        assert "Bonnie Marvin" in line.text


async def test_deceased_patient_shows_age_at_death(source: BundleRecordSource) -> None:
    (patient,) = raw_resources(GABRIELA, "Patient")
    born, died = date.fromisoformat(patient["birthDate"]), date.fromisoformat(patient["deceasedDateTime"][:10])
    age = died.year - born.year - ((died.month, died.day) < (born.month, born.day))
    line = build_chart_context(await record_of(source, GABRIELA), 2000, count_tokens, today=TODAY).lines[0]
    assert f"died {died.isoformat()}" in line.text
    assert f"aged {age} years" in line.text


async def test_vitals_are_the_latest_per_code(source: BundleRecordSource) -> None:
    context = build_chart_context(await record_of(source, BONNIE), 2000, count_tokens, today=TODAY)
    cited = {line.ref for line in context.lines}
    for loinc in ("55284-4", "29463-7", "8302-2"):  # blood pressure, weight, height
        observations = [o for o in raw_resources(BONNIE, "Observation") if o["code"]["coding"][0]["code"] == loinc]
        latest = max(observations, key=lambda o: o["effectiveDateTime"])
        shown = [o for o in observations if f"Observation/{o['id']}" in cited]
        assert shown == [latest]
    bp = next(line for line in context.lines if line.text.startswith("Blood Pressure"))
    assert re.search(r"\d+/\d+ mmHg", bp.text)


async def test_allergies_and_medications_lines(source: BundleRecordSource) -> None:
    context = build_chart_context(await record_of(source, BONNIE), 2000, count_tokens, today=TODAY)
    texts = {line.ref: line.text for line in context.lines}
    for allergy in raw_resources(BONNIE, "AllergyIntolerance"):
        text = texts[f"AllergyIntolerance/{allergy['id']}"]
        assert text.startswith("Allergy: ")
        assert f"criticality {allergy['criticality']}" in text
    fexofenadine = next(t for t in texts.values() if "Fexofenadine" in t)
    assert fexofenadine.startswith("Active medication:") and "as needed" in fexofenadine


async def test_past_problems_are_grouped_by_code(source: BundleRecordSource) -> None:
    context = build_chart_context(await record_of(source, BONNIE), 2000, count_tokens, today=TODAY)
    past = [line for line in context.lines if line.text.startswith("Past problem:")]
    resolved = [c for c in raw_resources(BONNIE, "Condition") if clinical_status(c) == "resolved"]
    episodes = Counter(c["code"]["coding"][0]["code"] for c in resolved)
    assert len(past) == len(episodes)
    for code, count in episodes.items():
        name = next(c["code"]["text"] for c in resolved if c["code"]["coding"][0]["code"] == code)
        line = next(line for line in past if name in line.text)
        assert (f"{count} episodes" in line.text) == (count > 1)


def _record() -> PatientRecord:
    return PatientRecord(
        patient_id="p",
        demographics=Demographics(ref="Patient/p", name="Ann Example", birth_date=date(2023, 6, 15), gender="female"),
        conditions=[
            RecordCondition(ref="Condition/a", name="Asthma", clinical_status="active", onset=date(2024, 1, 2)),
            RecordCondition(ref="Condition/r", name="Otitis media", clinical_status="resolved"),
            RecordCondition(ref="Condition/x", name="Measles", clinical_status="entered-in-error"),
        ],
        medications=[
            RecordMedication(ref="MedicationRequest/m", name="Salbutamol inhaler", status="active"),
            RecordMedication(ref="MedicationRequest/s", name="Amoxicillin", status="stopped"),
        ],
        allergies=[
            RecordAllergy(ref="AllergyIntolerance/low", substance="Dust", criticality="low"),
            RecordAllergy(
                ref="AllergyIntolerance/high",
                substance="Allergy to peanut",
                criticality="high",
                category=["food"],
                reactions=["Anaphylaxis (severe)"],
            ),
        ],
        observations=[
            RecordObservation(
                ref="Observation/bp-old",
                name="Blood Pressure",
                code="55284-4",
                value="90/60 mmHg",
                category="vital-signs",
                effective=date(2024, 1, 2),
            ),
            RecordObservation(
                ref="Observation/bp-new",
                name="Blood Pressure",
                code="55284-4",
                value="95/62 mmHg",
                category="vital-signs",
                effective=date(2024, 6, 1),
            ),
            RecordObservation(
                ref="Observation/eos",
                name="Eosinophils",
                code="26449-9",
                value="1.2 x10^3/uL",
                category="laboratory",
                effective=date(2024, 5, 30),
                interpretation="H",
            ),
            RecordObservation(
                ref="Observation/hb-stale",
                name="Hemoglobin",
                code="718-7",
                value="11 g/dL",
                category="laboratory",
                effective=date(2022, 1, 1),
            ),
        ],
    )


def test_tiers_on_a_hand_made_record() -> None:
    context = build_chart_context(_record(), 2000, count_tokens, today=date(2025, 1, 20))
    texts = [line.text for line in context.lines]
    refs = [line.ref for line in context.lines]
    assert texts[0] == "Patient: Ann Example, female, 19 months old, born 2023-06-15"
    assert refs[1:4] == ["Condition/a", "MedicationRequest/m", "AllergyIntolerance/high"]
    assert "Allergy: peanut (criticality high; food; reactions: Anaphylaxis (severe))" in texts
    assert refs.index("AllergyIntolerance/high") < refs.index("AllergyIntolerance/low")
    assert refs.index("Observation/eos") < refs.index("Observation/bp-new"), "abnormal results before vitals"
    assert any(t.startswith("Abnormal result: Eosinophils 1.2 x10^3/uL flag H") for t in texts)
    assert "Observation/bp-old" not in refs, "only the latest vital per code"
    assert "Observation/hb-stale" not in refs, "labs older than the results window are left out"
    assert "MedicationRequest/s" not in refs and "Condition/x" not in refs
    assert texts[-1] == "Past problem: Otitis media (resolved)"
    assert context.omitted == 0
