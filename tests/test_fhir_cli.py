"""The sandbox and write-back commands, run as real subprocesses against a real local FHIR server:
``sandbox up`` / ``load`` / ``status`` / ``down``, ``simulate --fhir-base sandbox --writeback`` and
``writeback`` run twice (the second creates nothing)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from previsit import sandbox
from tests.cli_support import run_previsit
from tests.conftest import RECORDS, SCENARIOS

MALIK_BUNDLE = next((RECORDS / "synthea").glob("Malik_Ward_*.json"))
MALIK_SCENARIO = SCENARIOS / "synthea-malik-ward-bruising-polypharmacy.yaml"


def _previsit(*args: str, data_dir: Path, typed: str = "") -> subprocess.CompletedProcess[str]:
    return run_previsit(*args, data_dir=data_dir, typed=typed)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    sandbox.stop(tmp_path)  # whatever a failed test left running, stopped by its PID


def test_sandbox_simulate_and_write_back_twice(data_dir: Path) -> None:
    port = str(sandbox.free_port())
    up = _previsit("sandbox", "up", "--port", port, data_dir=data_dir)
    assert up.returncode == 0, up.stderr
    assert f"http://127.0.0.1:{port}/fhir" in up.stdout
    pid = int((data_dir / "sandbox" / "sekmet.pid").read_text())
    assert f"PID {pid}" in up.stdout
    assert "simulator" in (data_dir / "sandbox" / "settings.yaml").read_text()

    loaded = _previsit("sandbox", "load", str(MALIK_BUNDLE), data_dir=data_dir)
    assert loaded.returncode == 0, loaded.stderr
    assert re.search(r"Malik Ward: \d{3} resources created", loaded.stdout)
    again = _previsit("sandbox", "load", str(MALIK_BUNDLE), data_dir=data_dir)
    assert "Malik Ward: already loaded, skipped" in again.stdout

    run = _previsit(
        "simulate",
        str(MALIK_SCENARIO),
        "--model",
        "none",
        "--session",
        "malik-fhir",
        "--fhir-base",
        "sandbox",
        "--writeback",
        data_dir=data_dir,
    )
    assert run.returncode == 0, run.stderr
    assert "CLINICIAN SUMMARY" in run.stdout
    assert "Warfarin" in run.stdout, "the chart came from the server"
    written = re.search(r"write-back \(read-then-put\): (\d+) created, 0 already there", run.stdout)
    assert written and int(written.group(1)) >= 2, run.stdout
    assert "created  Composition/" in run.stdout and "created  QuestionnaireResponse/" in run.stdout

    rewrite = _previsit("writeback", "malik-fhir", data_dir=data_dir)
    assert rewrite.returncode == 0, rewrite.stderr
    assert "FHIR server: sandbox (the one this session started with)" in rewrite.stdout
    assert f"0 created, {written.group(1)} already there" in rewrite.stdout

    # A live chat paused after one answer (Ctrl-D), resumed later without naming the server again.
    paused = _previsit(
        "chat",
        "--patient",
        "57df2519-872e-4b5e-8743-264db11d4e5b",
        "--model",
        "none",
        "--session",
        "malik-chat",
        "--fhir-base",
        "sandbox",
        data_dir=data_dir,
        typed="Bruises on my arms since last week.\n",
    )
    assert paused.returncode == 0, paused.stderr
    assert "is paused with 1 answer(s) saved" in paused.stdout
    resumed = _previsit(
        "resume", "malik-chat", "--writeback", data_dir=data_dir, typed="That's all, I want to stop now.\n"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "FHIR server: sandbox (the one this session started with)" in resumed.stdout
    assert "Warfarin" in resumed.stdout and "CLINICIAN SUMMARY" in resumed.stdout
    assert re.search(r"write-back \(read-then-put\): [1-9]\d* created, 0 already there", resumed.stdout)

    unknown = _previsit("chat", "--patient", "nobody", "--fhir-base", "sandbox", data_dir=data_dir)
    assert unknown.returncode == 2 and "No patient 'nobody'" in unknown.stderr

    down = _previsit("sandbox", "down", data_dir=data_dir)
    assert down.returncode == 0 and f"stopped (PID {pid})" in down.stdout
    assert sandbox.status(data_dir) is None
    status = _previsit("sandbox", "status", data_dir=data_dir)
    assert status.returncode == 1 and "Not running" in status.stdout


def test_clear_errors_without_a_server(data_dir: Path) -> None:
    no_box = _previsit("simulate", str(MALIK_SCENARIO), "--model", "none", "--fhir-base", "sandbox", data_dir=data_dir)
    assert no_box.returncode == 2
    assert "no FHIR sandbox is running" in no_box.stderr and "previsit sandbox up" in no_box.stderr

    run = _previsit("simulate", str(MALIK_SCENARIO), "--model", "none", "--session", "s1", data_dir=data_dir)
    assert run.returncode == 0, run.stderr
    no_base = _previsit("writeback", "s1", data_dir=data_dir)
    assert no_base.returncode == 2 and "write-back needs a FHIR server" in no_base.stderr

    bad_url = _previsit("writeback", "s1", "--fhir-base", "not a url", data_dir=data_dir)
    assert bad_url.returncode == 2 and "not an http(s) FHIR base URL" in bad_url.stderr
