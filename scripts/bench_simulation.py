"""Benchmark: simulated intakes per minute at concurrency 1, 4 and 16.

(a) The scripted backend: replies are instant, so this is the orchestration's own cost (graph,
    checkpoints in memory, safety screen, verifier, scoring, the fsynced results log); it also
    prints milliseconds per turn.
(b) The same replies after a fixed delay (default 100 ms, `asyncio.sleep`), as a remote model
    server would answer; with the model's wait dominating, throughput should grow close to
    linearly with concurrency, and the script prints how close (speed-up and efficiency).

Run: python scripts/bench_simulation.py [--intakes 32] [--delay-ms 100] [--levels 1 4 16]
Uses the fixture scenarios (cycled under distinct ids), the fixture FHIR bundles and exact fact
matching (the sentence encoder is a scoring cost, not orchestration; see docs/metrics.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from graphs.metrics import FactMatcher
from graphs.scenario import Scenario, load_scenario
from graphs.suite import ModelFor, SuiteRunner
from graphs.suite_input import Suite, SuiteEntry
from graphs.suite_results import ResultsLog
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.protocol import ChatModel, ChatRequest, SchemaT, StructuredReply
from tools.models.scripted import ScriptedChatModel

REPO = Path(__file__).resolve().parent.parent


class DelayedModel:
    """A backend that answers after a fixed delay: a stand-in for a remote model server."""

    def __init__(self, inner: ChatModel, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    @property
    def model_id(self) -> str:
        return f"{self._inner.model_id} + {self._delay_s * 1000:.0f} ms"

    @property
    def is_demo(self) -> bool:
        return False

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        await asyncio.sleep(self._delay_s)
        return await self._inner.complete(request, schema)


@dataclass
class Point:
    concurrency: int
    intakes: int
    wall_s: float
    turns: int
    model_calls: int
    mean_turn_ms: float
    errors: int

    @property
    def per_minute(self) -> float:
        return self.intakes / self.wall_s * 60


def _suite(count: int) -> Suite:
    scenarios = [load_scenario(p) for p in sorted((REPO / "fixtures" / "scenarios").glob("*.yaml"))]
    entries = []
    for number in range(count):
        base = scenarios[number % len(scenarios)]
        scenario = base.model_copy(update={"id": f"{base.id}-{number:03d}"})
        entries.append(SuiteEntry(key=scenario.id, source="bench", scenario=scenario))
    return Suite(name="bench", entries=entries)


def _model_for(delay_s: float) -> ModelFor:
    def model_for(scenario: Scenario) -> ChatModel:
        scripted = ScriptedChatModel(scenario.model_script)
        return DelayedModel(scripted, delay_s) if delay_s > 0 else scripted

    return model_for


async def _measure(suite: Suite, concurrency: int, delay_s: float, work: Path) -> Point:
    runner = SuiteRunner(
        records=BundleRecordSource(REPO / "fixtures" / "fhir"),
        model_for=_model_for(delay_s),
        matcher=FactMatcher(None),
        concurrency=concurrency,
    )
    log = ResultsLog(work / f"c{concurrency}-d{delay_s}" / "results.jsonl")
    started = time.perf_counter()
    run = await runner.run(suite, log)
    wall_s = time.perf_counter() - started
    stats = [r.stats for r in run.results if r.stats is not None]
    latencies = [t for s in stats for t in s.turn_latencies_s]
    return Point(
        concurrency=concurrency,
        intakes=len(run.results),
        wall_s=wall_s,
        turns=len(latencies),
        model_calls=sum(s.model_calls for s in stats),
        mean_turn_ms=statistics.fmean(latencies) * 1000 if latencies else 0.0,
        errors=sum(r.status == "error" for r in run.results),
    )


def _print(title: str, points: list[Point], *, per_turn: bool) -> None:
    print(f"\n{title}")
    header = f"{'concurrency':>11} {'intakes':>7} {'wall s':>7} {'intakes/min':>11} {'speed-up':>8} {'efficiency':>10}"
    header += f" {'ms/turn':>8} {'turns':>6} {'calls':>6} {'errors':>6}"
    if per_turn:
        header += f" {'wall ms/turn':>12}"
    print(header)
    base = points[0].per_minute
    for p in points:
        speedup = p.per_minute / base
        line = f"{p.concurrency:>11} {p.intakes:>7} {p.wall_s:>7.2f} {p.per_minute:>11.1f} {speedup:>7.2f}x"
        line += f" {speedup / (p.concurrency / points[0].concurrency) * 100:>9.0f}%"
        line += f" {p.mean_turn_ms:>8.1f} {p.turns:>6} {p.model_calls:>6} {p.errors:>6}"
        if per_turn:
            line += f" {p.wall_s / max(p.turns, 1) * 1000:>12.1f}"
        print(line)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intakes", type=int, default=32, help="intakes per measurement (default 32)")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="fixed model latency for (b) (default 100)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    args = parser.parse_args()
    suite = _suite(args.intakes)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        await _measure(replace(suite, entries=suite.entries[:2]), 1, 0.0, work / "warm-up")
        scripted = [await _measure(suite, c, 0.0, work) for c in args.levels]
        delayed = [await _measure(suite, c, args.delay_ms / 1000, work) for c in args.levels]
    _print("(a) scripted backend (orchestration cost alone)", scripted, per_turn=True)
    _print(f"(b) scripted backend + {args.delay_ms:.0f} ms per model call (a remote server)", delayed, per_turn=False)
    top = delayed[-1]
    print(
        f"\n(b) at concurrency {top.concurrency}: {top.per_minute / delayed[0].per_minute:.1f}x the intakes per minute "
        f"of concurrency {delayed[0].concurrency} (linear would be {top.concurrency / delayed[0].concurrency:.0f}x)."
    )
    print(
        "ms/turn = mean latency from an answer to the next question, as the patient waits for it; "
        "wall ms/turn = wall time / turns."
    )


if __name__ == "__main__":
    asyncio.run(main())
