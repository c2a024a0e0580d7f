"""Real `previsit serve` processes: two of them sharing one PostgreSQL database serve alternate turns
of the same session, and a server killed with SIGKILL mid-intake comes back with every answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from previsit import sandbox
from tests.postgres_fixture import postgres_db, postgres_server  # noqa: F401 - fixtures
from tests.service_support import ANSWERS, CLINICIAN, CLINICIAN_KEY, MALIK

SECRET = "shared-secret-of-the-test-servers"


class Server:
    """A `previsit serve` process on a free loopback port (started at once; `wait_up` waits for it)."""

    def __init__(self, data_dir: Path, db: str | None = None) -> None:
        port = sandbox.free_port()
        command = [sys.executable, "-m", "previsit", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        command += ["--model", "none", "--max-questions", "4"] + (["--db", db] if db else [])
        env = {
            **os.environ,
            "PREVISIT_CLINICIAN_KEY": CLINICIAN_KEY,
            "PREVISIT_SERVICE_SECRET": SECRET,
            "PREVISIT_SERVICE_LOCK_LEASE_S": "3",
        }
        self.log_path = data_dir / f"serve-{port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"

    def wait_up(self, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"previsit serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"previsit serve did not come up in {timeout_s:g} s"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@contextmanager
def serving(*servers: Server) -> Iterator[list[str]]:
    """Servers started together (their start-ups overlap), their URLs once all are up, killed at the end."""
    try:
        yield [server.wait_up() for server in servers]
    finally:
        for server in servers:
            server.stop()


def _answer(url: str, created: dict[str, Any], text: str, turn: int) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/api/sessions/{created['session_id']}/messages",
        json={"text": text, "turn": turn},
        headers={"Authorization": f"Bearer {created['patient_token']}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def _create(url: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/sessions", json={"patient_id": MALIK}, headers=CLINICIAN, timeout=60)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_two_server_processes_on_one_postgres_serve_alternate_turns_of_one_session(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database: str = request.getfixturevalue("postgres_db")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serving(Server(tmp_path / "a", database), Server(tmp_path / "b", database)) as (a, b):
        created = _create(a)
        state = created["state"]
        servers = [a, b]
        turn = 0
        while state["status"] == "awaiting_answer":
            server = servers[turn % 2]
            state = _answer(server, created, ANSWERS[turn], state["question"]["turn"])
            turn += 1
        assert state["status"] == "finished" and turn == 4
        assert [t["answer"] for t in state["turns"]] == ANSWERS[:4]
        summaries = [
            httpx.get(f"{url}/api/sessions/{created['session_id']}/summary", headers=CLINICIAN, timeout=30).json()
            for url in servers
        ]
        assert summaries[0] == summaries[1] and summaries[0]["questions_asked"] == 4
        listed = httpx.get(f"{b}/api/sessions", headers=CLINICIAN, timeout=30).json()["sessions"]
        assert [(s["session_id"], s["status"]) for s in listed] == [(created["session_id"], "finished")]


def test_a_server_killed_mid_intake_continues_the_session_after_a_restart(tmp_path: Path) -> None:
    first = Server(tmp_path)
    with serving(first) as (url,):
        created = _create(url)
        state = _answer(url, created, ANSWERS[0], 1)
        state = _answer(url, created, ANSWERS[1], 2)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
    with serving(Server(tmp_path)) as (url,):
        headers = {"Authorization": f"Bearer {created['patient_token']}"}
        state = httpx.get(f"{url}/api/sessions/{created['session_id']}", headers=headers, timeout=30).json()
        assert [t["answer"] for t in state["turns"]] == ANSWERS[:2] and state["question"]["turn"] == 3
        while state["status"] == "awaiting_answer":
            turn = state["question"]["turn"]
            state = _answer(url, created, ANSWERS[turn - 1], turn)
        assert state["status"] == "finished" and len(state["turns"]) == 4
