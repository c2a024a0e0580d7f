"""Reading a suite: a folder of scenario YAML files, a JSONL of scenario objects, or AgentClinic OSCE JSONL.

Bad input never stops a suite. A file that is not valid YAML, a line that is not JSON, a scenario
with no facts or a duplicate id becomes an entry with an error naming the file and the line (or the
file and the field); the report shows it as an error row and every other scenario still runs.
AgentClinic cases are imported on the fly, and each one's Patient bundle is written next to the
results, so imported cases run with no server and no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graphs.importers import import_agentclinic
from graphs.scenario import Scenario, ScenarioError, load_scenario

_PROBLEM_AT = re.compile(r"^(?P<where>.+?:\d+): ")


@dataclass(frozen=True)
class SuiteEntry:
    """One row of a suite: a scenario to run, or the reason a piece of input could not become one."""

    key: str
    """Unique within the suite: the scenario id, or where the bad input is (``cases.jsonl:7``)."""
    source: str
    """The file (and line) the entry came from."""
    scenario: Scenario | None = None
    error: str | None = None


@dataclass
class Suite:
    """The entries in input order and the extra FHIR bundles their patients live in."""

    name: str
    entries: list[SuiteEntry] = field(default_factory=list)
    bundle_paths: list[Path] = field(default_factory=list)

    @property
    def runnable(self) -> list[SuiteEntry]:
        return [e for e in self.entries if e.scenario is not None]


def _validation_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}" for err in exc.errors()
    )


def _no_facts_message(where: str) -> str:
    return f"{where}: the scenario has no facts (field 'facts'): a simulated patient needs at least one hidden fact"


def _scenario_from_object(raw: Any, where: str) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a scenario must be a JSON object, got {type(raw).__name__}")
    if not raw.get("facts"):
        raise ScenarioError(_no_facts_message(where))
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"{where}: invalid scenario: {_validation_problems(exc)}") from exc


def _scenario_file(path: Path) -> Scenario:
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        if "field 'facts'" in str(exc):
            raise ScenarioError(_no_facts_message(str(path))) from exc
        raise


def _first_object(lines: list[str]) -> Any:
    for line in lines:
        if line.strip():
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def _is_agentclinic(first: Any) -> bool:
    return isinstance(first, dict) and ("OSCE_Examination" in first or "Patient_Actor" in first)


class _Collector:
    """Adds entries and turns repeated scenario ids into error rows naming the first occurrence."""

    def __init__(self, suite: Suite) -> None:
        self._suite = suite
        self._seen: dict[str, str] = {}

    def error(self, key: str, source: str, message: str) -> None:
        self._suite.entries.append(SuiteEntry(key=key, source=source, error=message))

    def scenario(self, scenario: Scenario, source: str) -> None:
        first = self._seen.get(scenario.id)
        if first is not None:
            self.error(
                f"{source} (duplicate {scenario.id})",
                source,
                f"{source}: duplicate scenario id {scenario.id!r} (first in {first}); this one is not run",
            )
            return
        self._seen[scenario.id] = source
        self._suite.entries.append(SuiteEntry(key=scenario.id, source=source, scenario=scenario))


def _read_directory(folder: Path, collect: _Collector, suite: Suite) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    for path in files:
        try:
            collect.scenario(_scenario_file(path), str(path))
        except ScenarioError as exc:
            collect.error(str(path), str(path), str(exc))
    bundles = folder / "fhir"
    if bundles.is_dir():
        suite.bundle_paths.extend(sorted(bundles.glob("*.json")))


def _read_agentclinic(path: Path, collect: _Collector, suite: Suite, bundle_dir: Path) -> None:
    result = import_agentclinic(path)
    for problem in result.problems:
        match = _PROBLEM_AT.match(problem)
        where = match.group("where") if match else str(path)
        collect.error(where, where, problem)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    for item in result.imported:
        number = re.search(r"case (\d+)", item.scenario.source)
        collect.scenario(item.scenario, f"{path} (case {number.group(1) if number else '?'})")
        if item.bundle is not None:
            target = bundle_dir / f"{item.scenario.id}_{item.scenario.patient_id}.json"
            text = json.dumps(item.bundle, indent=2) + "\n"
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
            suite.bundle_paths.append(target)


def _read_jsonl(path: Path, collect: _Collector, suite: Suite, bundle_dir: Path) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        collect.error(str(path), str(path), f"{path}: cannot be read ({exc})")
        return
    if _is_agentclinic(_first_object(lines)):
        _read_agentclinic(path, collect, suite, bundle_dir)
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            collect.error(where, where, f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); line skipped")
            continue
        try:
            collect.scenario(_scenario_from_object(raw, where), where)
        except ScenarioError as exc:
            collect.error(where, where, str(exc))


def load_suite(path: str | Path, bundle_dir: Path) -> Suite:
    """The suite at `path`; imported AgentClinic bundles are written to `bundle_dir`.

    Raises `ScenarioError` only when `path` itself is unusable (missing, or neither a folder, a
    JSONL file nor a YAML file); everything inside it that is bad becomes an error entry.
    """
    target = Path(path)
    suite = Suite(name=target.stem if target.is_file() else target.name)
    collect = _Collector(suite)
    if target.is_dir():
        _read_directory(target, collect, suite)
    elif target.is_file() and target.suffix in (".jsonl", ".ndjson"):
        _read_jsonl(target, collect, suite, bundle_dir)
    elif target.is_file() and target.suffix in (".yaml", ".yml"):
        try:
            collect.scenario(_scenario_file(target), str(target))
        except ScenarioError as exc:
            collect.error(str(target), str(target), str(exc))
    elif not target.exists():
        raise ScenarioError(f"{target}: no such suite (a folder of scenario YAML files or a JSONL file)")
    else:
        raise ScenarioError(f"{target}: a suite is a folder of scenario YAML files, a .jsonl file or one .yaml file")
    return suite
