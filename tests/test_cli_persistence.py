"""The command line, run as a real subprocess: kills, resumes, and clear errors for bad input.

A session killed with SIGKILL between two turns must resume with every answer intact. These
tests start `python -m previsit` for real, kill it for real, and resume it for real.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.cli_support import cli_env, run_previsit
from tests.conftest import REPO_ROOT, SCENARIOS

BONNIE = "5c55a67c-fb41-4509-9eae-a55eebf760e1"
FULL_INTAKE = SCENARIOS / "synthea-malik-ward-bruising-polypharmacy.yaml"
TIMEOUT_S = 120


def _previsit(*args: str, data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_previsit(*args, data_dir=data_dir, typed=stdin or "")


class Running:
    """A previsit process whose output is read line by line while it runs."""

    def __init__(self, *args: str, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "previsit", *args, "--data-dir", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
            env=cli_env(),
        )
        self.lines: list[str] = []
        self._timer = threading.Timer(TIMEOUT_S, self.proc.kill)
        self._timer.start()

    def read_until(self, marker: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if marker in line:
                return
        raise AssertionError(f"process ended before {marker!r}:\n" + "\n".join(self.lines))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._timer.cancel()


def _turns(data_dir: Path, session: str) -> list[dict[str, object]]:
    shown = _previsit("show", session, "--json", data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    turns: list[dict[str, object]] = json.loads(shown.stdout)["turns"]
    return turns


def test_a_live_chat_killed_between_turns_resumes_with_every_answer(tmp_path: Path) -> None:
    chat = Running(
        "chat", "--patient", BONNIE, "--reason", "rash", "--model", "none", "--session", "s1", data_dir=tmp_path
    )
    chat.read_until("[1] previsit:")
    chat.send("An itchy rash on both arms.")
    chat.read_until("[2] previsit:")
    chat.send("It started four days ago after gardening.")
    chat.read_until("[3] previsit:")
    chat.kill()
    assert chat.proc.returncode == -signal.SIGKILL

    turns = _turns(tmp_path, "s1")
    assert [t["answer"] for t in turns] == ["An itchy rash on both arms.", "It started four days ago after gardening."]

    resumed = _previsit("resume", "s1", data_dir=tmp_path, stdin="On my forearms.\nthat's all, I need to go\n")
    assert resumed.returncode == 0, resumed.stderr
    assert "An itchy rash on both arms." in resumed.stdout
    assert "CLINICIAN SUMMARY" in resumed.stdout
    final = _turns(tmp_path, "s1")
    assert [t["answer"] for t in final] == [
        "An itchy rash on both arms.",
        "It started four days ago after gardening.",
        "On my forearms.",
        "that's all, I need to go",
    ]
    assert (tmp_path / "out" / "s1" / "summary.json").exists()


def test_a_simulation_killed_mid_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    scenario = str(FULL_INTAKE)
    reference = _previsit("simulate", scenario, "--model", "none", "--session", "ref", data_dir=tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    expected = [t["answer"] for t in _turns(tmp_path / "ref", "ref")]
    assert len(expected) >= 3

    run = Running("simulate", scenario, "--model", "none", "--session", "k1", data_dir=tmp_path / "k")
    run.read_until("[2] patient:")
    run.kill()
    saved = [t["answer"] for t in _turns(tmp_path / "k", "k1")]
    assert saved == expected[: len(saved)] and len(saved) >= 2

    resumed = _previsit("resume", "k1", data_dir=tmp_path / "k")
    assert resumed.returncode == 0, resumed.stderr
    assert [t["answer"] for t in _turns(tmp_path / "k", "k1")] == expected


def test_sessions_lists_finished_and_paused_sessions(tmp_path: Path) -> None:
    scenario = str(FULL_INTAKE)
    assert _previsit("simulate", scenario, "--model", "none", "--session", "done", data_dir=tmp_path).returncode == 0
    paused = _previsit(
        "chat", "--patient", BONNIE, "--model", "none", "--session", "open", data_dir=tmp_path, stdin="Cough.\n"
    )
    assert paused.returncode == 0, paused.stderr
    assert "previsit resume open" in paused.stdout
    listing = _previsit("sessions", data_dir=tmp_path)
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["done"][2] == "finished"
    assert rows["open"][2:] == ["waiting_for_patient", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "--patient", "no-such-patient", "--model", "none"], "No patient 'no-such-patient'"),
        (["simulate", "fixtures/scenarios/does-not-exist.yaml"], "no such scenario file"),
        (["resume", "never-started"], "No sessions database"),
        (["show", "never-started"], "No sessions database"),
        (["chat", "--patient", BONNIE, "--model", "mystery"], "Unknown model 'mystery'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_no_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    result = _previsit(*args, data_dir=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_malformed_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: Bad Id!\ntitle: x\nsource: x\npatient_id: p\nfacts: []\nmax_questions: many\n")
    result = _previsit("simulate", str(bad), "--model", "none", data_dir=tmp_path)
    assert result.returncode == 2
    for part in (str(bad), "field 'id'", "field 'facts'", "field 'max_questions'"):
        assert part in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_session_in_an_existing_database_is_named(tmp_path: Path) -> None:
    scenario = str(FULL_INTAKE)
    assert _previsit("simulate", scenario, "--model", "none", "--session", "a", data_dir=tmp_path).returncode == 0
    result = _previsit("resume", "b", data_dir=tmp_path)
    assert result.returncode == 2
    assert "No session 'b'" in result.stderr


def test_a_locked_database_is_reported_and_loses_nothing(tmp_path: Path) -> None:
    scenario = str(FULL_INTAKE)
    assert _previsit("simulate", scenario, "--model", "none", "--session", "a", data_dir=tmp_path).returncode == 0
    before = _turns(tmp_path, "a")
    holder = sqlite3.connect(tmp_path / "sessions.sqlite")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        env = {**cli_env(), "PREVISIT_LOCK_TIMEOUT_S": "0.5"}
        result = subprocess.run(
            [sys.executable, "-m", "previsit", "simulate", scenario, "--model", "none", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=TIMEOUT_S,
            check=False,
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 3
    assert "locked" in result.stderr
    assert "Traceback" not in result.stderr
    assert _turns(tmp_path, "a") == before


def test_a_scenario_that_asks_for_the_embedding_patient_gets_it_from_the_cli(tmp_path: Path) -> None:
    """Regression: the CLI used to give every non-model scenario the fact patient."""
    import asyncio

    import yaml

    from agents.coverage import IntakeElement
    from agents.sentence_embeddings import load_minilm
    from agents.simulated_patient import EmbeddingPatient
    from graphs.scenario import load_scenario

    raw = yaml.safe_load((SCENARIOS / "agentclinic-dizzy-spells-older-woman.yaml").read_text(encoding="utf-8"))
    raw["simulated_patient"] = "embedding"
    raw["id"] = "dizzy-embedding"
    path = tmp_path / "dizzy-embedding.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    run = _previsit("simulate", str(path), "--model", "none", data_dir=tmp_path / "data")
    assert run.returncode == 0, run.stderr
    session = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("Session "))
    turns = _turns(tmp_path / "data", session)
    assert turns

    patient = EmbeddingPatient(load_scenario(path).brief(), load_minilm())

    async def expected() -> list[str]:
        return [
            await patient.answer(str(t["question"]), IntakeElement(str(t["element"])), int(str(t["index"])))
            for t in turns
        ]

    assert [t["answer"] for t in turns] == asyncio.run(expected())
