"""Suites: many simulated intakes at once, scored, resumable, reported; bad input becomes error rows.

The scenarios are real scenario files (the fixtures, copied under new ids, and two small knee-pain
scenarios written here); the intakes run through the real graph with the scripted backend or no
model; the suite runs through the real command line, once as a process killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from graphs.metrics import FactMatcher
from graphs.scenario import Scenario
from graphs.suite import SuiteRunner
from graphs.suite_input import load_suite
from graphs.suite_results import ResultsLog, SuiteResult
from previsit.cli import main
from tests.conftest import RECORDS, REPO_ROOT, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.protocol import ChatModel, ChatRequest, SchemaT, StructuredReply
from tools.models.scripted import ScriptedChatModel

KNEE_PATIENT = "0d7b3d83-652c-417f-b846-caf3c8b6a8e2"  # a fixture bundle's patient with an empty chart
KNEE_SCRIPT: dict[str, Any] = {
    "interviewer.ask:chief_complaint": [{"question": "What brings you in today?"}],
    "interviewer.ask:onset": [{"question": "When did it start?"}],
    "interviewer.ask:location": [{"question": "Where exactly is the pain?"}],
    "interviewer.ask:duration": [{"question": "Has it been there all the time?"}],
    "summarizer.hpi": [
        {
            "statements": [
                {"text": "Left knee pain that started two weeks ago after a long hike.", "turns": ["turn-1", "turn-2"]},
                {"text": "On the inside of the knee, there the whole time.", "turns": ["turn-3", "turn-4"]},
            ]
        }
    ],
    "verifier.check": [{"supported": True}, {"supported": True}],
}
KNEE_FACTS: list[dict[str, str]] = [
    {"element": "chief_complaint", "text": "My left knee hurts."},
    {"element": "onset", "text": "It started two weeks ago after a long hike."},
    {"element": "location", "text": "It is on the inside of the knee."},
    {"element": "duration", "text": "It has been there the whole time."},
]
PLANTED_MISS = "I take warfarin every day."
EXACT = ["--fact-matching", "exact"]  # exact rules only: no sentence encoder to load


def _knee(scenario_id: str, extra_facts: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Four questions cover four facts; a medication fact is never asked about within that cap."""
    return {
        "id": scenario_id,
        "title": "Knee pain, scripted",
        "source": "written for tests/test_suite.py",
        "patient_id": KNEE_PATIENT,
        "reason_for_visit": "knee pain",
        "max_questions": 4,
        "facts": KNEE_FACTS + (extra_facts or []),
        "model_script": KNEE_SCRIPT,
    }


def _write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _results(out: Path) -> dict[str, SuiteResult]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [SuiteResult.model_validate_json(line) for line in lines]
    return {r.key: r for r in rows}


def _copies(folder: Path, count: int) -> Path:
    """`count` fixture scenarios (cycled) under distinct ids: a realistic suite that runs with `scripted`."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SCENARIOS.glob("*.yaml"))
    for number in range(count):
        data = yaml.safe_load(sources[number % len(sources)].read_text(encoding="utf-8"))
        data["id"] = f"{data['id']}-{number:02d}"
        for image in data.get("images", []):  # attachments are found relative to the scenario file
            image["path"] = str((SCENARIOS / image["path"]).resolve())
        _write_yaml(folder / f"{data['id']}.yaml", data)
    return folder


def test_perfect_intake_scores_full_recall_and_a_planted_miss_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    _write_yaml(suite / "perfect.yaml", _knee("knee-perfect"))
    _write_yaml(suite / "planted.yaml", _knee("knee-planted-miss", [{"element": "medications", "text": PLANTED_MISS}]))
    out = tmp_path / "out"

    code = main(["simulate", "--suite", str(suite), "--model", "scripted", "--out", str(out), "--concurrency", "2"])

    assert code == 0, capsys.readouterr().err
    rows = _results(out)
    perfect, planted = rows["knee-perfect"].score, rows["knee-planted-miss"].score
    assert perfect is not None and planted is not None
    assert perfect.fact_recall == 1.0 and perfect.missed_facts == []
    assert planted.fact_recall == pytest.approx(4 / 5)
    assert planted.missed_facts == [PLANTED_MISS]
    stats = rows["knee-perfect"].stats
    assert stats is not None and len(stats.turn_latencies_s) == 4 and stats.model_calls >= 5
    assert stats.prompt_tokens > 0 and stats.output_tokens > 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| knee-planted-miss | done | 80% (4/5) |" in report
    assert PLANTED_MISS in report
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 4
    assert "Fact recall per scenario" in html and "<script" not in html
    assert {p.name for p in (out / "plots").iterdir()} == {
        "fact-recall.svg",
        "flags.svg",
        "questions.svg",
        "turn-latency.svg",
    }
    err = capsys.readouterr().err
    assert "2/2 done, 0 error(s)" in err and "ETA" in err


def _comparable(result: SuiteResult) -> dict[str, Any]:
    """Everything a run decides (transcript, summary, scores), without timings and timestamps."""
    assert result.output is not None and result.output.summary is not None and result.score is not None
    return {
        "status": result.status,
        "problems": result.problems,
        "turns": [t.model_dump(mode="json") for t in result.output.turns],
        "summary": result.output.summary.model_dump(mode="json", exclude={"generated_at"}),
        "red_flags": [f.model_dump(mode="json") for f in result.output.red_flags],
        "score": result.score.model_dump(mode="json"),
        "tokens": (result.stats.prompt_tokens, result.stats.output_tokens) if result.stats else None,
    }


async def test_twenty_concurrent_intakes_match_sequential_runs(tmp_path: Path) -> None:
    suite = load_suite(_copies(tmp_path / "suite", 20), tmp_path / "bundles")
    assert len(suite.runnable) == 20
    outcomes = {}
    for concurrency in (1, 20):
        runner = SuiteRunner(
            records=BundleRecordSource(RECORDS),
            model_for=lambda scenario: ScriptedChatModel(scenario.model_script),
            matcher=FactMatcher(None),
            concurrency=concurrency,
        )
        run = await runner.run(suite, ResultsLog(tmp_path / f"c{concurrency}" / "results.jsonl"))
        assert run.ran == 20 and [r.status for r in run.results] == ["passed"] * 20
        outcomes[concurrency] = {r.key: _comparable(r) for r in run.results}
    assert outcomes[1] == outcomes[20]


class ExplodingModel:
    """A model server that fails in a way no backend anticipates (not a ModelError)."""

    model_id = "exploding"
    is_demo = False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        raise RuntimeError("connection reset by the model server")


async def test_a_crashing_intake_is_an_error_row_and_the_rest_run(tmp_path: Path) -> None:
    suite = load_suite(_copies(tmp_path / "suite", 3), tmp_path / "bundles")
    crashing = suite.runnable[1].key

    def model_for(scenario: Scenario) -> ChatModel:
        return ExplodingModel() if scenario.id == crashing else ScriptedChatModel(scenario.model_script)

    runner = SuiteRunner(records=BundleRecordSource(RECORDS), model_for=model_for, matcher=FactMatcher(None))
    run = await runner.run(suite, ResultsLog(tmp_path / "results.jsonl"))

    by_key = {r.key: r for r in run.results}
    assert by_key[crashing].status == "error"
    assert "RuntimeError: connection reset by the model server" in (by_key[crashing].error or "")
    assert [r.status for k, r in by_key.items() if k != crashing] == ["passed", "passed"]
    # A crash is not a finished scenario: the next run tries it again and keeps the others.
    runner.model_for = lambda scenario: ScriptedChatModel(scenario.model_script)
    again = await runner.run(suite, ResultsLog(tmp_path / "results.jsonl"))
    assert (again.ran, again.skipped) == (1, 2)
    assert {r.status for r in again.results} == {"passed"}


def test_bad_input_is_named_by_file_and_line_and_the_rest_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    _write_yaml(suite / "a-good.yaml", _knee("knee-good"))
    _write_yaml(suite / "b-duplicate.yaml", _knee("knee-good"))
    _write_yaml(suite / "c-no-facts.yaml", {**_knee("knee-no-facts"), "facts": []})
    (suite / "d-broken.yaml").write_text("id: knee-broken\ntitle: [unclosed\n", encoding="utf-8")
    out = tmp_path / "out"

    code = main(["simulate", "--suite", str(suite), "--model", "scripted", "--out", str(out), *EXACT])

    assert code == 1
    rows = _results(out)
    assert rows["knee-good"].status == "done"
    errors = {r.key: r.error or "" for r in rows.values() if r.status == "error"}
    assert len(errors) == 3
    duplicate = next(e for e in errors.values() if "duplicate" in e)
    assert "b-duplicate.yaml" in duplicate and "a-good.yaml" in duplicate and "'knee-good'" in duplicate
    no_facts = errors[str(suite / "c-no-facts.yaml")]
    assert "has no facts (field 'facts')" in no_facts
    assert "d-broken.yaml: not valid YAML at line 3" in errors[str(suite / "d-broken.yaml")]
    err = capsys.readouterr().err
    assert "error: " in err and "c-no-facts.yaml" in err
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.count("| error |") == 3 and "## Errors" in report


def test_agentclinic_jsonl_is_imported_on_the_fly_with_bad_lines_as_error_rows(tmp_path: Path) -> None:
    cases = (REPO_ROOT / "fixtures" / "agentclinic" / "agentclinic_medqa.jsonl").read_text().splitlines()[:3]
    jsonl = tmp_path / "cases.jsonl"
    jsonl.write_text("\n".join([cases[0], '{"OSCE_Examination": {', cases[1], cases[0]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"

    code = main(["simulate", "--suite", str(jsonl), "--model", "none", "--out", str(out), *EXACT])

    assert code == 1
    rows = list(_results(out).values())
    assert [r.status for r in rows].count("done") == 2
    errors = [r.error or "" for r in rows if r.status == "error"]
    assert any(f"{jsonl}:2: not valid JSON" in e for e in errors)
    assert any(f"{jsonl}:4: duplicate" in e for e in errors)
    done = next(r for r in rows if r.status == "done")
    assert done.output is not None and done.output.summary is not None and done.score is not None
    assert len(list((out / "fhir").glob("*.json"))) == 2  # the cases' Patient bundles, read offline


def test_scenario_jsonl_lines_are_validated_with_file_line_and_field(tmp_path: Path) -> None:
    jsonl = tmp_path / "scenarios.jsonl"
    lines = [json.dumps(_knee("knee-one")), json.dumps({**_knee("knee-two"), "max_questions": "many"}), "[1, 2"]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    suite = load_suite(jsonl, tmp_path / "bundles")
    assert [e.key for e in suite.runnable] == ["knee-one"]
    errors = [e.error or "" for e in suite.entries if e.error]
    assert f"{jsonl}:2: invalid scenario: field 'max_questions'" in errors[0]
    assert f"{jsonl}:3: not valid JSON" in errors[1]


def test_a_killed_suite_run_resumes_without_running_finished_scenarios_again(tmp_path: Path) -> None:
    suite = _copies(tmp_path / "suite", 12)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "previsit", "simulate", "--suite", str(suite), "--model", "scripted"]
    command += ["--out", str(out), "--concurrency", "1", "--fact-matching", "exact", "--data-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = out / "results.jsonl"
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    finished_before = results.read_bytes().count(b"\n")
    assert 3 <= finished_before < 12, "the run was not killed mid-suite"
    with results.open("ab") as handle:  # what a kill in the middle of a write leaves behind
        handle.write(b'{"key": "synthea-jorge-brekke-child-question-cap-99", "status": "pas')

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)

    assert rerun.returncode == 0, rerun.stderr
    assert f"ran {12 - finished_before}, skipped {finished_before} already finished" in rerun.stdout
    assert "the last line is incomplete" in rerun.stderr
    keys = [json.loads(line)["key"] for line in results.read_text(encoding="utf-8").splitlines()]
    assert sorted(keys) == sorted(p.stem for p in suite.glob("*.yaml"))  # each scenario exactly once
    assert (out / "report.html").exists()
