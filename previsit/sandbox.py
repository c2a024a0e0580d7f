"""The embedded FHIR sandbox: a real local FHIR R4 server (SEKMET, ``sekmet-fhir`` on PyPI).

``previsit sandbox up`` writes a SEKMET ``settings.yaml`` into ``<data-dir>/sandbox`` (bound to
127.0.0.1, its hospital simulator off, its ``base_url`` set to where it listens), starts
``sekmet serve -c settings.yaml`` as a detached process, writes its PID to
``<data-dir>/sandbox/sekmet.pid`` and waits until ``/metadata`` answers. ``sandbox down`` stops that
PID (after checking it is still that server). ``sandbox load`` posts transaction bundles so the
server resolves their ``urn:uuid`` references itself and assigns its own ids; each Patient gets an
extra identifier (``urn:previsit:source-id|<its id in the file>``) so a scenario that names the
file's id still finds it, and a bundle whose patients are already there is skipped.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tools.fhir.client import FhirClient, FhirError
from tools.fhir.resources import SYNTHEA_IDENTIFIER_SYSTEM
from tools.fhir.server_source import SOURCE_ID_SYSTEM

DEFAULT_PORT = 8090
HOST = "127.0.0.1"
_SERVER_CODE = "from sekmet.cli import app; app()"


class SandboxError(Exception):
    """The sandbox could not be started, reached, loaded or stopped (one line for the user)."""


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox server this data directory started."""

    pid: int
    port: int
    base_url: str
    directory: Path

    @property
    def log_path(self) -> Path:
        return self.directory / "sekmet.log"


def sandbox_dir(data_dir: Path) -> Path:
    return data_dir / "sandbox"


def _pid_path(data_dir: Path) -> Path:
    return sandbox_dir(data_dir) / "sekmet.pid"


def _state_path(data_dir: Path) -> Path:
    return sandbox_dir(data_dir) / "sandbox.json"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def write_settings(directory: Path, port: int, server_auth: Mapping[str, Any] | None = None) -> Path:
    """A SEKMET settings.yaml for a loopback server on `port` keeping its data in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "base_url": f"http://{HOST}:{port}/fhir",
        "host": HOST,
        "port": port,
        "data_dir": str((directory / "data").resolve()),
        "own_private_key_path": str((directory / "keys" / "sekmet_private.pem").resolve()),
        "simulator": {"enabled": False},
        "log_inbound": False,
        # Stored as sent: a record with an invalid resource must reach the client, which leaves it out.
        "validation": {"inbound": "warn"},
        "server_auth": dict(server_auth or {"types": ["none"]}),
    }
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)  # it may hold a static token
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int, directory: Path) -> bool:
    """Is `pid` still the SEKMET process started for `directory` (not a reused PID)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return _alive(pid)  # no /proc (not Linux): trust the PID file
    return "sekmet" in cmdline and str(directory.resolve()) in cmdline


def wait_until_up(base_url: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> float:
    """Seconds until ``/metadata`` answered 200; raises `SandboxError` on timeout or early exit."""
    started = time.perf_counter()
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if process is not None and process.poll() is not None:
            raise SandboxError(f"the FHIR sandbox exited at start (code {process.returncode})")
        try:
            if httpx.get(f"{base_url}/metadata", timeout=1.0).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SandboxError(f"the FHIR sandbox did not answer {base_url}/metadata within {timeout_s:g} s")


def status(data_dir: Path) -> SandboxInfo | None:
    """The running sandbox of this data directory, or None (a stale PID file is removed)."""
    state_path = _state_path(data_dir)
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        info = SandboxInfo(
            pid=int(state["pid"]),
            port=int(state["port"]),
            base_url=str(state["base_url"]),
            directory=Path(state["directory"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_our_server(info.pid, info.directory):
        state_path.unlink(missing_ok=True)
        _pid_path(data_dir).unlink(missing_ok=True)
        return None
    return info


def start(
    data_dir: Path,
    *,
    port: int | None = None,
    server_auth: Mapping[str, Any] | None = None,
    wait_s: float = 30.0,
) -> tuple[SandboxInfo, float]:
    """Start the sandbox (or find it running); returns it and the seconds it took to answer."""
    running = status(data_dir)
    if running is not None:
        return running, 0.0
    chosen = port if port is not None else DEFAULT_PORT
    if _port_in_use(chosen):
        raise SandboxError(f"port {chosen} on {HOST} is in use; pick another with --port")
    directory = sandbox_dir(data_dir).resolve()
    settings = write_settings(directory, chosen, server_auth)
    log_file = (directory / "sekmet.log").open("ab")
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CODE, "serve", "-c", str(settings)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the FHIR sandbox: {exc}") from exc
    finally:
        log_file.close()
    info = SandboxInfo(pid=process.pid, port=chosen, base_url=f"http://{HOST}:{chosen}/fhir", directory=directory)
    _pid_path(data_dir).write_text(f"{process.pid}\n", encoding="utf-8")
    _state_path(data_dir).write_text(
        json.dumps({"pid": info.pid, "port": info.port, "base_url": info.base_url, "directory": str(directory)}),
        encoding="utf-8",
    )
    try:
        seconds = wait_until_up(info.base_url, wait_s, process)
    except SandboxError as exc:
        _stop_pid(process.pid)
        _clear(data_dir)
        tail = _log_tail(info.log_path)
        raise SandboxError(f"{exc}; log {info.log_path}{': ' + tail if tail else ''}") from None
    return info, seconds


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _stop_pid(pid: int, wait_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = 0 if _alive(pid) else pid
        if reaped == pid or not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _clear(data_dir: Path) -> None:
    _pid_path(data_dir).unlink(missing_ok=True)
    _state_path(data_dir).unlink(missing_ok=True)


def stop(data_dir: Path) -> SandboxInfo | None:
    """Stop this data directory's sandbox by its PID; None when none was running."""
    info = status(data_dir)
    if info is None:
        _clear(data_dir)
        return None
    _stop_pid(info.pid)
    _clear(data_dir)
    return info


def resolve_base(value: str, data_dir: Path) -> str:
    """``--fhir-base`` as given, or the running sandbox's base URL for the word ``sandbox``."""
    if value.strip().lower() != "sandbox":
        return value.strip()
    info = status(data_dir)
    if info is None:
        raise SandboxError(f"no FHIR sandbox is running for {data_dir}; start one with: previsit sandbox up")
    return info.base_url


@dataclass(frozen=True)
class LoadResult:
    path: Path
    patients: list[str]
    """Display names of the bundle's patients."""
    created: int
    skipped: bool = False
    """The bundle's patients were already on the server: nothing was sent."""
    error: str | None = None
    """Why the bundle did not load (the others still do)."""


def _patient_entries(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    return [e for e in entries if e["resource"].get("resourceType") == "Patient"]


def _source_id(entry: Mapping[str, Any]) -> str | None:
    resource = entry["resource"]
    if resource.get("id"):
        return str(resource["id"])
    full_url = str(entry.get("fullUrl") or "")
    return full_url.removeprefix("urn:uuid:") if full_url.startswith("urn:uuid:") else None


def _lookup_identifiers(entry: Mapping[str, Any]) -> list[str]:
    resource = entry["resource"]
    tokens = [
        f"{i['system']}|{i['value']}"
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == SYNTHEA_IDENTIFIER_SYSTEM and i.get("value")
    ]
    source = _source_id(entry)
    if source:
        tokens.append(f"{SOURCE_ID_SYSTEM}|{source}")
    return tokens


def prepare_bundle(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle with a ``urn:previsit:source-id`` identifier on each Patient (a copy)."""
    prepared = copy.deepcopy(dict(bundle))
    for entry in _patient_entries(prepared):
        source = _source_id(entry)
        identifiers = entry["resource"].setdefault("identifier", [])
        if source and not any(i.get("system") == SOURCE_ID_SYSTEM for i in identifiers if isinstance(i, dict)):
            identifiers.append({"system": SOURCE_ID_SYSTEM, "value": source})
    return prepared


def _display(entry: Mapping[str, Any]) -> str:
    for name in entry["resource"].get("name") or []:
        if isinstance(name, dict):
            text = " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()
            if text:
                return text
    return str(_source_id(entry) or "unnamed patient")


def read_bundle(path: Path) -> dict[str, Any]:
    """A transaction or batch Bundle from a file; `SandboxError` naming the file otherwise."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SandboxError(f"cannot read {path}: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise SandboxError(f"{path} is not a FHIR Bundle")
    if bundle.get("type") not in ("transaction", "batch"):
        raise SandboxError(f"{path} is a {bundle.get('type')!r} bundle; only transaction or batch bundles load")
    return bundle


async def load_bundles(client: FhirClient, paths: Iterable[Path]) -> list[LoadResult]:
    """Post each transaction bundle once; bundles whose patients are already there are skipped. A
    bundle that cannot be read or that the server refuses is reported in its `LoadResult.error`."""
    results: list[LoadResult] = []
    for path in paths:
        try:
            bundle = read_bundle(path)
        except SandboxError as exc:
            results.append(LoadResult(path, [], 0, error=str(exc)))
            continue
        patients = _patient_entries(bundle)
        names = [_display(e) for e in patients]
        try:
            loaded = [await _already_loaded(client, e) for e in patients]
            if patients and all(loaded):
                results.append(LoadResult(path, names, 0, skipped=True))
                continue
            answer = await client.transaction(prepare_bundle(bundle), prefer="return=minimal", idempotent=False)
        except FhirError as exc:
            results.append(LoadResult(path, names, 0, error=str(exc)))
            continue
        statuses = [str((e.get("response") or {}).get("status", "")) for e in answer.get("entry") or []]
        results.append(LoadResult(path, names, sum(1 for status in statuses if status.startswith("201"))))
    return results


async def _already_loaded(client: FhirClient, entry: Mapping[str, Any]) -> bool:
    for token in _lookup_identifiers(entry):
        found = await client.get_json("Patient", params=[("identifier", token), ("_summary", "count")], expect="Bundle")
        if isinstance(found.get("total"), int) and found["total"] > 0:
            return True
    return False
