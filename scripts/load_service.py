"""Load check of the HTTP service: N concurrent patient sessions on the deterministic (`none`) backend.

Bounded and loopback only: it starts `previsit serve` itself on 127.0.0.1 (or takes --url of one
already running on loopback), runs every session to its finished summary through the HTTP API, and
prints p50/p95 turn latency, throughput and errors. With --restart-midway it SIGKILLs the server
halfway and starts it again on the same database: clients retry on connection errors (and on 409
"busy" while a dead process's lock runs out), every answer carries its turn number so a retry is
never recorded twice, and at the end each session's transcript is read back from the checkpoint and
compared with what its client sent.

    python scripts/load_service.py --sessions 20
    python scripts/load_service.py --sessions 20 --restart-midway
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

KEY = "load-test-clinician-key"
CLINICIAN = {"Authorization": f"Bearer {KEY}"}
PATIENTS = [
    "57df2519-872e-4b5e-8743-264db11d4e5b",
    "1f99a0cb-594b-476a-b9cb-502594c1ee6b",
    "f1a650a5-737e-4fd7-828e-03c3348b9524",
]


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    answered: int = 0
    halfway: int = 0
    halfway_reached: asyncio.Event = field(default_factory=asyncio.Event)
    sent: dict[str, list[str]] = field(default_factory=dict)


class ServerProcess:
    """`previsit serve` on loopback, restartable on the same port and database."""

    def __init__(self, data_dir: Path, port: int, db: str | None, max_questions: int) -> None:
        self.data_dir, self.port, self.db, self.max_questions = data_dir, port, db, max_questions
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "previsit", "serve", "--port", str(self.port), "--model", "none"]
        command += ["--data-dir", str(self.data_dir), "--max-questions", str(self.max_questions)]
        command += ["--db", self.db] if self.db else []
        env = {**os.environ, "PREVISIT_CLINICIAN_KEY": KEY, "PREVISIT_SERVICE_LOCK_LEASE_S": "3"}
        with (self.data_dir / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def wait_up(self, timeout_s: float = 120) -> float:
        started = time.perf_counter()
        async with httpx.AsyncClient() as client:
            while time.perf_counter() - started < timeout_s:
                if self.process is not None and self.process.poll() is not None:
                    raise SystemExit(f"previsit serve exited; see {self.data_dir / 'serve.log'}")
                try:
                    if (await client.get(f"{self.url}/healthz", timeout=2)).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise SystemExit(f"previsit serve did not answer in {timeout_s:g} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


async def _send(
    client: httpx.AsyncClient, method: str, url: str, stats: Stats, deadline: float, **kwargs: Any
) -> httpx.Response:
    """One API call, retried on connection errors and on 409 'busy' until the deadline."""
    while True:
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError:
            response = None
        if response is not None and not (response.status_code == 409 and "session-busy" in response.text):
            if response.status_code >= 500 and time.monotonic() < deadline:
                stats.retries += 1
                await asyncio.sleep(0.5)
                continue
            return response
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {urlparse(url).path} kept failing")
        stats.retries += 1
        await asyncio.sleep(0.3)


async def run_session(client: httpx.AsyncClient, base: str, index: int, stats: Stats, deadline: float) -> None:
    created = await _send(
        client, "POST", f"{base}/api/sessions", stats, deadline,
        json={"patient_id": PATIENTS[index % len(PATIENTS)], "reason_for_visit": "load test"}, headers=CLINICIAN,
    )  # fmt: skip
    if created.status_code != 201:
        stats.errors.append(f"create: {created.status_code}")
        return
    body = created.json()
    session_id, state = body["session_id"], body["state"]
    headers = {"Authorization": f"Bearer {body['patient_token']}"}
    sent = stats.sent.setdefault(session_id, [])
    while state["status"] == "awaiting_answer":
        turn = state["question"]["turn"]
        text = f"Session {index} answer {turn}: it has been mild for about a week."
        started = time.perf_counter()
        response = await _send(
            client, "POST", f"{base}/api/sessions/{session_id}/messages", stats, deadline,
            json={"text": text, "turn": turn}, headers=headers,
        )  # fmt: skip
        if response.status_code != 200:
            stats.errors.append(f"turn: {response.status_code} {response.json().get('type', '')}")
            return
        stats.latencies.append(time.perf_counter() - started)
        stats.answered += 1
        if stats.halfway and stats.answered >= stats.halfway:
            stats.halfway_reached.set()
        sent.append(text)
        state = response.json()


async def restart_midway(server: ServerProcess, stats: Stats) -> tuple[float, int]:
    await stats.halfway_reached.wait()
    at = stats.answered
    server.kill()
    server.start()
    return await server.wait_up(), at


async def verify(client: httpx.AsyncClient, base: str, stats: Stats) -> tuple[int, int, int]:
    """(sessions finished, turns lost, turns duplicated) read back from the checkpoints."""
    finished = lost = duplicated = 0
    for session_id, sent in stats.sent.items():
        deadline = time.monotonic() + 60
        response = await _send(client, "GET", f"{base}/api/sessions/{session_id}", stats, deadline, headers=CLINICIAN)
        state = response.json()
        recorded = [t["answer"] for t in state["turns"]]
        finished += state["status"] == "finished"
        lost += len([t for t in sent if t not in recorded])
        duplicated += len(recorded) - len(set(recorded))
    return finished, lost, duplicated


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> int:
    server: ServerProcess | None = None
    if args.url:
        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--url must be a loopback address (this script only loads local servers)")
        if args.restart_midway:
            raise SystemExit("--restart-midway needs the script to start the server itself (leave out --url)")
        base = args.url.rstrip("/")
    else:
        data_dir = Path(args.data_dir)
        from previsit.sandbox import free_port

        server = ServerProcess(data_dir, args.port or free_port(), args.db, args.max_questions)
        server.start()
        print(f"server up in {await server.wait_up():.1f} s ({server.url}, data in {data_dir})")
        base = server.url
    stats = Stats()
    deadline = time.monotonic() + args.timeout
    limits = httpx.Limits(max_connections=args.sessions + 5)
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            started = time.perf_counter()
            work = [run_session(client, base, i, stats, deadline) for i in range(args.sessions)]
            restart = None
            if args.restart_midway and server is not None:
                stats.halfway = args.sessions * args.max_questions // 2
                restart = asyncio.create_task(restart_midway(server, stats))
            results = await asyncio.gather(*work, return_exceptions=True)
            wall = time.perf_counter() - started
            stats.errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
            finished, lost, duplicated = await verify(client, base, stats)
            restarted = await restart if restart is not None else None
    finally:
        if server is not None:
            server.stop()
    turns = len(stats.latencies)
    print(f"sessions: {args.sessions} started, {finished} finished; turns answered: {turns}")
    print(
        f"turn latency: p50 {_pct(stats.latencies, 0.5) * 1000:.0f} ms, p95 {_pct(stats.latencies, 0.95) * 1000:.0f} ms"
        f" (mean {statistics.fmean(stats.latencies) * 1000 if turns else float('nan'):.0f} ms)"
    )
    print(f"throughput: {turns / wall:.1f} turns/s over {wall:.1f} s wall")
    if restarted is not None:
        print(f"restart: SIGKILL after {restarted[1]} answered turns; back up in {restarted[0]:.1f} s")
    print(
        f"retries: {stats.retries}; errors: {len(stats.errors)}; turns lost: {lost}; turns recorded twice: {duplicated}"
    )
    for error in stats.errors[:10]:
        print(f"  error: {error}")
    ok = not stats.errors and lost == 0 and duplicated == 0 and finished == args.sessions
    print("OK: every session finished and every answer is in its checkpoint once" if ok else "FAILED")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent patient sessions (default 20)")
    parser.add_argument("--max-questions", type=int, default=6, help="question cap per session (default 6)")
    parser.add_argument("--url", help="a running server on loopback (default: start one)")
    parser.add_argument("--db", help="sessions database for the started server (SQLite path or postgresql://...)")
    parser.add_argument("--data-dir", help="data directory of the started server (default: a new temp dir)")
    parser.add_argument("--port", type=int, help="port of the started server (default: a free one)")
    parser.add_argument("--restart-midway", action="store_true", help="SIGKILL and restart the server halfway")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (default 300)")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 500:
        parser.error("--sessions must be 1..500 (this is a bounded load check)")
    if not args.url:
        args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="previsit-load-")
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
