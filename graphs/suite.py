"""Running a suite of simulated intakes side by side, resumably.

Intakes run as asyncio tasks on one event loop, `concurrency` at a time, all sharing one model
object (a transformers model serialises its own generation; a remote server gets concurrent
requests) and one record source. Each finished scenario is scored, appended to the results log and
only then counted, so a killed run resumes where it stopped: keys already finished in the log are
skipped. A scenario whose intake crashes becomes an error row; the rest of the suite runs.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TextIO

from agents.sentence_embeddings import SentenceEmbedder
from agents.simulated_patient import PatientResponder, simulated_patient
from graphs.context import IntakeTuning
from graphs.expectations import check_expectations
from graphs.intake import compile_intake_graph
from graphs.metrics import FactMatcher, RunStats, score_intake
from graphs.scenario import Scenario
from graphs.scenario_run import run_scenario
from graphs.session import IntakeGraph
from graphs.suite_input import Suite, SuiteEntry
from graphs.suite_meter import MeteredModel, TimedPatient
from graphs.suite_results import FINISHED, ResultsLog, SuiteResult
from tools.fhir.record import PatientNotFoundError, PatientRecord, RecordSource
from tools.models.protocol import ChatModel

PatientKind = Literal["facts", "embedding", "model"]
ModelFor = Callable[[Scenario], ChatModel | None]
"""The model one scenario's intake uses: the one shared model, or a scenario's own scripted replies."""


class SuiteSetupError(Exception):
    """The suite cannot start at all (the runner's own configuration, not a scenario)."""


class ChainedRecordSource:
    """Records from the first source that knows the patient: imported case bundles, then the configured source."""

    def __init__(self, sources: Sequence[RecordSource]) -> None:
        if not sources:
            raise ValueError("a chained record source needs at least one source")
        self._sources = list(sources)

    async def fetch_record(self, patient_id: str) -> PatientRecord:
        for source in self._sources[:-1]:
            try:
                return await source.fetch_record(patient_id)
            except PatientNotFoundError:
                continue
        return await self._sources[-1].fetch_record(patient_id)

    async def list_patients(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for source in self._sources:
            found += await source.list_patients()
        return found


def _patient_for(
    scenario: Scenario, kind: PatientKind | None, model: ChatModel | None, embedder: SentenceEmbedder | None
) -> tuple[PatientResponder, str]:
    """The simulated patient of one run, and its name for the report."""
    chosen = kind or scenario.simulated_patient
    diagnosis = scenario.evaluation.correct_diagnosis if scenario.evaluation else None
    try:
        patient = simulated_patient(
            scenario.brief(), model, chosen, embedder=embedder, withheld=[diagnosis] if diagnosis else []
        )
    except ValueError as exc:
        raise SuiteSetupError(str(exc)) from exc
    return patient, f"model ({model.model_id})" if chosen == "model" and model is not None else chosen


class SuiteProgress:
    """A plain-text progress line on stderr: done/total, errors, rate, ETA.

    On a terminal the line is redrawn in place; otherwise (CI logs, a pipe) a new line is printed at
    most every `every_s` seconds and at the end, so logs stay short.
    """

    def __init__(
        self, total: int, stream: TextIO, *, clock: Callable[[], float] = time.monotonic, every_s: float = 1.0
    ) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self._stream = stream
        self._clock = clock
        self._every_s = every_s
        self._started = clock()
        self._last_print = float("-inf")
        self._tty = bool(getattr(stream, "isatty", lambda: False)())

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed * 60
        left = self.total - self.done
        eta = f"{_duration(left / (self.done / elapsed))}" if self.done and left else ("0s" if not left else "?")
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"suite [{bar}] {self.done}/{self.total} done, {self.errors} error(s), "
            f"{rate:.1f}/min, elapsed {_duration(elapsed)}, ETA {eta}"
        )

    def advance(self, result: SuiteResult) -> None:
        self.done += 1
        if result.status == "error":
            self.errors += 1
        self._show(final=self.done >= self.total)

    def start(self) -> None:
        self._started = self._clock()
        self._show(final=self.total == 0)

    def _show(self, *, final: bool) -> None:
        now = self._clock()
        if self._tty:
            self._stream.write("\r" + self.line() + ("\n" if final else ""))
        elif final or now - self._last_print >= self._every_s:
            self._stream.write(self.line() + "\n")
        else:
            return
        self._last_print = now
        self._stream.flush()


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _crash_message(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"the intake crashed: {type(exc).__name__}: {exc}{where}"


@dataclass
class SuiteRun:
    """What one invocation did: every result of the suite (earlier runs' included) and what was new."""

    results: list[SuiteResult] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class SuiteRunner:
    """Everything the intakes of a suite share."""

    records: RecordSource
    model_for: ModelFor
    matcher: FactMatcher
    patient: PatientKind | None = None
    embedder: SentenceEmbedder | None = None
    concurrency: int = 4
    tuning: IntakeTuning = field(default_factory=IntakeTuning)
    graph: IntakeGraph = field(default_factory=compile_intake_graph)
    """One compiled graph serves every intake of the suite, concurrently; with no checkpointer, since
    a simulated patient never pauses the graph and the suite resumes scenario by scenario."""

    async def run_entry(self, entry: SuiteEntry) -> SuiteResult:
        """One scenario, run and scored; any failure becomes an error row."""
        base = {"key": entry.key, "source": entry.source}
        scenario = entry.scenario
        if scenario is None:
            return SuiteResult(**base, status="error", error=entry.error or "not a scenario")
        base |= {"scenario_id": scenario.id, "title": scenario.title}
        try:
            model = self.model_for(scenario)
            metered = MeteredModel(model) if model is not None else None
            inner, patient_name = _patient_for(scenario, self.patient, model, self.embedder)
            timed = TimedPatient(inner)
            started = time.perf_counter()
            timed.restart()
            output = await run_scenario(
                scenario, self.records, metered, patient=timed, tuning=self.tuning, graph=self.graph
            )
            wall_s = time.perf_counter() - started
            score = await asyncio.to_thread(score_intake, scenario, output, self.matcher)
        except Exception as exc:
            return SuiteResult(**base, status="error", error=_crash_message(exc))
        stats = RunStats(
            wall_s=wall_s,
            turn_latencies_s=timed.latencies_s,
            prompt_tokens=metered.prompt_tokens if metered else 0,
            output_tokens=metered.output_tokens if metered else 0,
            model_calls=metered.calls if metered else 0,
        )
        problems: list[str] = []
        status: Literal["passed", "failed", "done"] = "done"
        if "expect" in scenario.model_fields_set:
            if output.summary is None:
                problems = ["the intake produced no summary"]
            else:
                problems = check_expectations(scenario.expect, output.summary, output.turns, bool(output.red_flags))
            status = "failed" if problems else "passed"
        return SuiteResult(
            **base,
            status=status,
            problems=problems,
            score=score,
            stats=stats,
            model_id=model.model_id if model is not None else "none (deterministic interview)",
            patient=patient_name,
            output=output,
        )

    async def run(self, suite: Suite, log: ResultsLog, progress: SuiteProgress | None = None) -> SuiteRun:
        """Run every entry not finished in `log`, `concurrency` at a time; results in suite order."""
        if self.concurrency < 1:
            raise SuiteSetupError("--concurrency must be at least 1")
        previous, notes = await asyncio.to_thread(log.read)
        outcome = SuiteRun(notes=notes)
        results: dict[str, SuiteResult] = {}
        todo: list[SuiteEntry] = []
        write_lock = asyncio.Lock()
        for entry in suite.entries:
            earlier = previous.get(entry.key)
            if earlier is not None and earlier.status in FINISHED:
                results[entry.key] = earlier
                outcome.skipped += 1
            elif entry.scenario is None:
                # Bad input is not run; its row is logged once (again only if the message changed).
                row = await self.run_entry(entry)
                if earlier is None or earlier.error != row.error:
                    await asyncio.to_thread(log.append, row)
                results[entry.key] = row
            else:
                todo.append(entry)
        if progress is not None:
            progress.total = len(todo)
            progress.start()
        queue: asyncio.Queue[SuiteEntry] = asyncio.Queue()
        for entry in todo:
            queue.put_nowait(entry)

        async def worker() -> None:
            while True:
                try:
                    entry = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self.run_entry(entry)
                async with write_lock:
                    await asyncio.to_thread(log.append, result)
                results[entry.key] = result
                outcome.ran += 1
                if progress is not None:
                    progress.advance(result)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, max(len(todo), 1)))))
        outcome.results = [results[e.key] for e in suite.entries if e.key in results]
        return outcome
