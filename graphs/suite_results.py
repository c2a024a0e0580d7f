"""The results of a suite: one JSON line per finished scenario, appended as it finishes.

Each line is flushed and fsynced before the next scenario is counted as done, so a run killed at any
moment loses at most the scenario it was writing. Reading is forgiving: a half-written last line
(the kill came mid-write) is cut off with a note and that scenario runs again; a later line for the
same key replaces an earlier one (an error that was retried).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from graphs.metrics import IntakeScore, RunStats
from graphs.state import IntakeOutput

ResultStatus = Literal["passed", "failed", "done", "error"]
"""passed/failed: the scenario's expectations were met or not; done: it sets none; error: it did not run."""

FINISHED: frozenset[str] = frozenset(("passed", "failed", "done"))


class SuiteResult(BaseModel):
    """One scenario's outcome: what the report shows and what a re-run checks before running it again."""

    key: str = Field(description="The scenario id, or where the bad input is.")
    scenario_id: str | None = None
    title: str = ""
    source: str = Field(description="The file (and line) the scenario came from.")
    status: ResultStatus
    error: str | None = Field(default=None, description="Why it did not run (bad input, or the intake crashed).")
    problems: list[str] = Field(default_factory=list, description="Unmet expectations, readable.")
    score: IntakeScore | None = None
    stats: RunStats | None = None
    model_id: str | None = None
    patient: str | None = Field(default=None, description="Which simulated patient answered.")
    output: IntakeOutput | None = Field(default=None, description="Transcript and summary, for review and research.")


class ResultsLog:
    """Append-only JSONL of `SuiteResult`s."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[dict[str, SuiteResult], list[str]]:
        """The latest result per key, and notes about lines that could not be used.

        A trailing line with no newline is what a killed writer leaves: it is cut off the file here
        so the next append starts on a clean line.
        """
        if not self.path.exists():
            return {}, []
        data = self.path.read_bytes()
        notes: list[str] = []
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data):
            notes.append(
                f"{self.path}: the last line is incomplete ({len(data) - complete_end} bytes, a run was killed "
                "while writing it); it is ignored and that scenario runs again"
            )
            with self.path.open("r+b") as handle:
                handle.truncate(complete_end)
                handle.flush()
                os.fsync(handle.fileno())
        results: dict[str, SuiteResult] = {}
        for number, line in enumerate(data[:complete_end].decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                result = SuiteResult.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else f"{exc.error_count()} invalid field(s)"
                notes.append(f"{self.path}:{number}: not a result line ({reason}); ignored")
                continue
            results[result.key] = result
        return results, notes

    def append(self, result: SuiteResult) -> None:
        """Write one result durably (blocking: call it in a thread from async code)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = result.model_dump_json() + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
