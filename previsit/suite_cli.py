"""`previsit simulate --suite`: many simulated intakes at once, resumable, with a report.

This is the glue between the command line and `graphs.suite`: it builds the one shared model, the
record source (imported case bundles first, then the configured records) and the fact matcher,
runs the suite, and writes the report even when some scenarios failed or could not be read.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from agents.sentence_embeddings import EmbedderUnavailableError, SentenceEmbedder, load_minilm
from graphs.metrics import FactMatcher
from graphs.scenario import Scenario, ScenarioError
from graphs.suite import ChainedRecordSource, ModelFor, PatientKind, SuiteProgress, SuiteRunner, SuiteSetupError
from graphs.suite_input import load_suite
from graphs.suite_report import suite_totals, write_reports
from graphs.suite_results import ResultsLog
from previsit.config import Settings, build_model
from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.record import RecordSource
from tools.models.protocol import ChatModel, ModelError
from tools.models.scripted import ScriptedChatModel


def _progress(message: str) -> None:
    print(f"[model] {message}", file=sys.stderr, flush=True)


def suite_model(spec: str, settings: Settings) -> ModelFor:
    """One model for every intake, or each scenario's own recorded replies for `scripted`."""
    if spec.partition(":")[0] == "scripted":

        def scripted(scenario: Scenario) -> ChatModel:
            return ScriptedChatModel(scenario.model_script, model_id="scripted (recorded replies)")

        return scripted
    try:
        shared = build_model(spec, settings, progress=_progress)
    except ModelError as exc:
        raise SuiteSetupError(f"cannot load model {spec!r}: {exc}") from exc
    return lambda _scenario: shared


def load_embedder(settings: Settings, notes: list[str]) -> SentenceEmbedder | None:
    """The sentence encoder, or None (exact matching only) with a note saying so and how to fix it."""
    try:
        return load_minilm()
    except EmbedderUnavailableError as exc:
        notes.append(f"fact recall uses exact matching only: {exc}")
        return None


def simulate_suite(
    suite_path: Path,
    settings: Settings,
    base_records: RecordSource,
    *,
    out_dir: Path | None,
    concurrency: int,
    patient: PatientKind | None,
    max_questions: int | None = None,
    exact_matching: bool = False,
    err: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the suite; 0 when every scenario ran and met its expectations, 1 otherwise."""
    err = err or sys.stderr
    out = out or sys.stdout
    if concurrency < 1:
        raise SuiteSetupError("--concurrency must be at least 1")
    name = suite_path.stem if suite_path.is_file() else suite_path.resolve().name
    target = out_dir or settings.data_dir / "suites" / name
    try:
        suite = load_suite(suite_path, bundle_dir=target / "fhir")
    except ScenarioError as exc:
        raise SuiteSetupError(str(exc)) from exc
    if max_questions is not None:
        suite.entries = [
            replace(e, scenario=e.scenario.model_copy(update={"max_questions": max_questions})) if e.scenario else e
            for e in suite.entries
        ]
    records: RecordSource = base_records
    if suite.bundle_paths:
        records = ChainedRecordSource([BundleRecordSource(suite.bundle_paths), base_records])
    notes: list[str] = []
    model_for = suite_model(settings.model, settings)
    embedder = None if exact_matching and patient != "embedding" else load_embedder(settings, notes)
    matcher = FactMatcher(None if exact_matching else embedder)
    if exact_matching:
        notes.append("fact recall uses the exact rules only (--fact-matching exact)")
    if patient == "embedding" and embedder is None:
        raise SuiteSetupError(f"--patient embedding needs the sentence encoder: {notes[-1]}")
    runner = SuiteRunner(
        records=records,
        model_for=model_for,
        matcher=matcher,
        patient=patient,
        embedder=embedder,
        concurrency=concurrency,
        tuning=settings.tuning(),
    )
    log = ResultsLog(target / "results.jsonl")
    print(
        f"Suite {suite_path}: {len(suite.entries)} entries ({len(suite.runnable)} runnable), "
        f"model {settings.model}, concurrency {concurrency}; results in {log.path}",
        file=out,
        flush=True,
    )
    progress = SuiteProgress(0, err)
    run = asyncio.run(runner.run(suite, log, progress))
    for note in run.notes:
        print(f"note: {note}", file=err)
        notes.append(note)
    for result in run.results:
        if result.status == "error":
            print(f"error: {result.error}", file=err)
    written = write_reports(target, f"previsit suite: {name}", run.results, notes)
    totals = suite_totals(run.results)
    status = ", ".join(f"{n} {s}" for s, n in sorted(totals.by_status.items()))
    recall = "n/a" if totals.mean_fact_recall is None else f"{totals.mean_fact_recall * 100:.1f}%"
    print(
        f"ran {run.ran}, skipped {run.skipped} already finished; {status}; mean fact recall {recall}",
        file=out,
    )
    print(f"report: {written[-3]} and {written[-2]}", file=out)
    return 0 if all(r.status in ("passed", "done") for r in run.results) else 1
