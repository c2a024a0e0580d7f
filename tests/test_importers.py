"""Importers: AgentClinic OSCE JSONL and Synthea bundles to scenario files, and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.coverage import IntakeElement
from graphs.importers import AGENTCLINIC_SYSTEM, import_agentclinic, import_synthea, write_import
from graphs.scenario import Scenario, load_scenario
from graphs.scenario_run import run_scenario
from previsit.cli import main
from tests.conftest import FIXTURES, RECORDS
from tools.fhir.bundle_source import BundleRecordSource

AGENTCLINIC = FIXTURES / "agentclinic" / "agentclinic_medqa.jsonl"
BONNIE = RECORDS / "synthea" / "Bonnie_Marvin_5c55a67c-fb41-4509-9eae-a55eebf760e1.json"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Scenario]]:
    out = tmp_path_factory.mktemp("agentclinic")
    result = import_agentclinic(AGENTCLINIC)
    assert result.problems == []
    files = write_import(result, out)
    return out, [load_scenario(f) for f in files]


def _brief_text(scenario: Scenario) -> str:
    brief = scenario.brief()
    return " ".join([brief.persona, *(f.text for f in brief.facts), *brief.scripted_answers.values()])


def test_all_107_cases_import_and_load(imported: tuple[Path, list[Scenario]]) -> None:
    out, scenarios = imported
    assert len(scenarios) == 107
    assert len({s.id for s in scenarios}) == 107
    assert len(list((out / "fhir").glob("*.json"))) == 107
    for scenario in scenarios:
        assert "AgentClinic MedQA case" in scenario.source and "MIT" in scenario.source
        assert scenario.exam_findings or scenario.test_results
        assert any(f.element == IntakeElement.CHIEF_COMPLAINT for f in scenario.facts), scenario.id


def test_diagnosis_is_kept_for_evaluation_only(imported: tuple[Path, list[Scenario]]) -> None:
    _, scenarios = imported
    for scenario in scenarios:
        assert scenario.evaluation is not None and scenario.evaluation.correct_diagnosis
        diagnosis = scenario.evaluation.correct_diagnosis.lower()
        seen = " ".join([_brief_text(scenario), scenario.reason_for_visit or "", scenario.title]).lower()
        assert diagnosis not in seen, scenario.id
        assert "correct_diagnosis" not in scenario.brief().model_dump_json()


def test_patient_bundles_bind_the_scenarios(imported: tuple[Path, list[Scenario]]) -> None:
    out, scenarios = imported
    first = scenarios[0]
    bundle = json.loads(next((out / "fhir").glob(f"{first.id}_*.json")).read_text())
    patient = bundle["entry"][0]["resource"]
    assert bundle["type"] == "transaction"
    assert patient["id"] == first.patient_id
    assert patient["identifier"] == [{"system": AGENTCLINIC_SYSTEM, "value": first.id}]
    assert patient["gender"] == "female"  # "35-year-old female"
    assert patient["birthDate"] == "1990-01-15"
    assert patient["name"][0]["text"] == "AgentClinic Case 1"
    # Deterministic: a second import gives the same ids.
    again = import_agentclinic(AGENTCLINIC, limit=1)
    assert again.imported[0].scenario.patient_id == first.patient_id


async def test_an_imported_case_runs_through_the_real_graph(imported: tuple[Path, list[Scenario]]) -> None:
    out, scenarios = imported
    scenario = scenarios[0]
    output = await run_scenario(scenario, BundleRecordSource(sorted((out / "fhir").glob("*.json"))))
    assert output.summary is not None
    assert output.turns
    assert scenario.evaluation is not None and scenario.evaluation.correct_diagnosis
    assert scenario.evaluation.correct_diagnosis.lower() not in " ".join(t.question.lower() for t in output.turns)


def test_synthea_skeleton_has_bonnies_allergies(tmp_path: Path) -> None:
    result = import_synthea([BONNIE], "a cough for two weeks")
    assert result.problems == []
    [item] = result.imported
    files = write_import(result, tmp_path)
    scenario = load_scenario(files[0])
    assert scenario.patient_id == "5c55a67c-fb41-4509-9eae-a55eebf760e1"
    assert scenario.title.startswith("Bonnie")
    assert scenario.reason_for_visit == "a cough for two weeks"
    allergies = [f.text for f in scenario.facts if f.element == IntakeElement.ALLERGIES]
    assert len(allergies) == 3
    assert all(a.startswith("I'm allergic to") for a in allergies)
    assert any(f.element == IntakeElement.MEDICATIONS and f.text.startswith("I take") for f in scenario.facts)
    assert item.bundle is None


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _case(primary: str = "Cough", diagnosis: str = "Asthma") -> dict[str, object]:
    return {
        "OSCE_Examination": {
            "Patient_Actor": {
                "Demographics": "40-year-old man",
                "History": "The patient reports a cough for 2 weeks.",
                "Symptoms": {"Primary_Symptom": primary, "Secondary_Symptoms": ["Wheeze"]},
            },
            "Correct_Diagnosis": diagnosis,
        }
    }


def test_bad_json_line_is_named_and_the_rest_imported(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "cases.jsonl", [json.dumps(_case()), "{not json", json.dumps(_case("Chest pain"))])
    result = import_agentclinic(src)
    assert len(result.imported) == 2
    [problem] = result.problems
    assert f"{src}:2" in problem and "not valid JSON" in problem


def test_case_without_patient_actor_or_facts_is_skipped(tmp_path: Path) -> None:
    empty_actor = {"OSCE_Examination": {"Patient_Actor": {"Demographics": "40-year-old man", "History": ""}}}
    src = _write_jsonl(
        tmp_path / "cases.jsonl",
        [json.dumps({"OSCE_Examination": {"Correct_Diagnosis": "X"}}), json.dumps(empty_actor), json.dumps(_case())],
    )
    result = import_agentclinic(src)
    assert len(result.imported) == 1
    assert len(result.problems) == 2
    assert f"{src}:1" in result.problems[0] and "Patient_Actor" in result.problems[0]
    assert f"{src}:2" in result.problems[1] and "no facts" in result.problems[1]


def test_duplicate_scenario_id_is_named(tmp_path: Path) -> None:
    first = {**_case(), "id": "case-a"}
    second = {**_case("Chest pain"), "id": "case-a"}
    src = _write_jsonl(tmp_path / "cases.jsonl", [json.dumps(first), json.dumps(second), json.dumps(_case("Rash"))])
    result = import_agentclinic(src)
    assert [i.scenario.id for i in result.imported] == ["case-a", "agentclinic-medqa-003"]
    [problem] = result.problems
    assert f"{src}:2" in problem and "duplicate scenario id 'case-a'" in problem and "line 1" in problem


def test_diagnosis_in_a_symptom_is_kept_out(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "cases.jsonl", [json.dumps(_case("Asthma attack", "Asthma"))])
    [item] = import_agentclinic(src).imported
    assert "asthma" not in _brief_text(item.scenario).lower()
    assert item.scenario.reason_for_visit == "a health concern"


def test_cli_import_warns_and_exits_by_what_was_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "cases.jsonl", [json.dumps(_case()), "{not json"])
    out = tmp_path / "out"
    assert main(["scenarios", "import", "agentclinic", str(src), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "written 1 scenario(s)" in captured.out and "skipped 1" in captured.out
    assert f"{src}:2" in captured.err
    assert load_scenario(out / "agentclinic-medqa-001.yaml").reason_for_visit == "cough"
    assert len(list((out / "fhir").glob("*.json"))) == 1

    bad = _write_jsonl(tmp_path / "bad.jsonl", ["{not json"])
    assert main(["scenarios", "import", "agentclinic", str(bad), "--out", str(tmp_path / "none")]) == 1

    syn_out = tmp_path / "synthea"
    assert main(["scenarios", "import", "synthea", str(BONNIE), "--reason", "a cough", "--out", str(syn_out)]) == 0
    assert load_scenario(syn_out / "synthea-bonnie-marvin.yaml").reason_for_visit == "a cough"
