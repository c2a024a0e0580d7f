"""Scenario tests for users: run one scenario file and fail with a review note, not a stack trace.

    from previsit.testing import assert_scenario, scenario_test

    def test_knee_pain() -> None:
        assert_scenario("tests/scenarios/knee.yaml")          # scripted replies, fixture records

    @scenario_test("tests/scenarios/knee.yaml", min_fact_recall=0.8)
    def test_knee_pain_asks_about_onset(run: ScenarioRun) -> None:
        assert any("start" in t.question for t in run.output.turns)

Any ``*.scenario.yaml`` file under the test paths is also collected as a test by the pytest plugin
(`previsit.pytest_plugin`). A failure names each unmet expectation (the missed fact, the flag
expected and the flags raised, the red flag), lists the hidden facts the summary left out, and
shows the transcript around where the missed fact was (or was not) said.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agents.transcript import Turn
from graphs.expectations import check_expectations
from graphs.metrics import FactMatcher, IntakeScore, score_intake
from graphs.scenario import Scenario, load_scenario
from graphs.scenario_run import run_scenario
from graphs.state import IntakeOutput
from graphs.suite import ChainedRecordSource
from previsit.config import Settings, build_model
from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.record import RecordSource

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and are i in is it my of on or the to was with you your me he she they".split())
FuncT = TypeVar("FuncT", bound=Callable[..., Any])


class ScenarioTestFailure(AssertionError):
    """A scenario run that fell short; the message is the whole review note."""


@dataclass
class ScenarioRun:
    """One scenario run and what was wrong with it (nothing, when `problems` is empty)."""

    scenario: Scenario
    path: Path
    output: IntakeOutput
    score: IntakeScore
    problems: list[str] = field(default_factory=list)

    def report(self) -> str:
        """The failure message: unmet expectations, missed facts, the transcript around them."""
        lines = [f"scenario {self.scenario.id} ({self.path}) failed:"]
        lines += [f"  - {p}" for p in self.problems]
        score = self.score
        if score.missed_facts:
            recall = f"{score.fact_recall:.0%}" if score.fact_recall is not None else "n/a"
            lines.append(
                f"hidden facts the summary leaves out (fact recall {recall}, {score.facts_found}/{score.facts_total}):"
            )
            for fact in score.missed_facts:
                turn = _turn_saying(self.output.turns, fact)
                where = f"said at {turn.id}" if turn else "never said: no question reached it"
                lines.append(f"  - {fact!r} ({where})")
        lines.append("transcript excerpt:")
        lines += _excerpt(self.output.turns, self._focus())
        return "\n".join(lines)

    def _focus(self) -> list[str]:
        wanted = [t for t in self.scenario.expect.summary_contains if t.lower() in " ".join(self.problems).lower()]
        return wanted + self.score.missed_facts


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def _turn_saying(turns: list[Turn], text: str) -> Turn | None:
    """The turn whose answer says `text` (contained, or most of its words), if any."""
    wanted = _words(text)
    best: tuple[float, Turn] | None = None
    for turn in turns:
        if text.lower() in turn.answer.lower():
            return turn
        overlap = len(wanted & _words(turn.answer)) / len(wanted) if wanted else 0.0
        if overlap >= 0.6 and (best is None or overlap > best[0]):
            best = (overlap, turn)
    return best[1] if best else None


def _excerpt(turns: list[Turn], focus: list[str], around: int = 1) -> list[str]:
    """The turns around where each focus text was said; the last turns when none was."""
    indexes: set[int] = set()
    for text in focus:
        turn = _turn_saying(turns, text)
        if turn is not None:
            at = turns.index(turn)
            indexes |= set(range(max(0, at - around), min(len(turns), at + around + 1)))
    if not indexes:
        indexes = set(range(max(0, len(turns) - 4), len(turns)))
    lines: list[str] = []
    previous = None
    for index in sorted(indexes):
        if previous is not None and index != previous + 1:
            lines.append("  ...")
        turn = turns[index]
        lines.append(f"  [{turn.id}] Q: {turn.question}")
        lines.append(f"  [{turn.id}] A: {turn.answer[:240]}")
        previous = index
    return lines or ["  (no questions were asked)"]


def default_records(path: Path) -> RecordSource:
    """Bundles in a ``fhir/`` folder next to the scenario file first, then the configured records."""
    settings = Settings.from_env()
    base = BundleRecordSource(settings.records_dir)
    local = path.parent / "fhir"
    return ChainedRecordSource([BundleRecordSource(local), base]) if local.is_dir() else base


async def check_scenario(
    path: str | Path,
    *,
    model: str = "scripted",
    records: RecordSource | None = None,
    matcher: FactMatcher | None = None,
    min_fact_recall: float | None = None,
) -> ScenarioRun:
    """Run the scenario at `path` and collect every way it falls short (does not raise for them)."""
    file = Path(path)
    scenario = load_scenario(file)
    chat_model = build_model(model, Settings.from_env(), script=scenario.model_script)
    output = await run_scenario(scenario, records or default_records(file), chat_model)
    score = await asyncio.to_thread(score_intake, scenario, output, matcher or FactMatcher(None))
    problems: list[str] = []
    if output.summary is None:
        problems.append("the intake produced no summary")
    else:
        found = check_expectations(scenario.expect, output.summary, output.turns, bool(output.red_flags))
        problems += [p for p in found if not p.startswith("transcript (last turns)")]
    if min_fact_recall is not None and (score.fact_recall or 0.0) < min_fact_recall:
        recall = score.fact_recall or 0.0
        problems.append(f"fact recall {recall:.0%} is below the required {min_fact_recall:.0%}")
    return ScenarioRun(scenario=scenario, path=file, output=output, score=score, problems=problems)


def assert_scenario(
    path: str | Path,
    *,
    model: str = "scripted",
    records: RecordSource | None = None,
    matcher: FactMatcher | None = None,
    min_fact_recall: float | None = None,
) -> ScenarioRun:
    """Run the scenario and raise `ScenarioTestFailure` with a readable note when it falls short.

    Call it from a synchronous test; from an async test use ``await check_scenario(...)``.
    """
    run = asyncio.run(
        check_scenario(path, model=model, records=records, matcher=matcher, min_fact_recall=min_fact_recall)
    )
    if run.problems:
        raise ScenarioTestFailure(run.report())
    return run


def scenario_test(path: str | Path, **options: Any) -> Callable[[FuncT], FuncT]:
    """Decorate a test: the scenario runs (and must pass) first; a test taking one argument gets the run."""

    def decorate(test: FuncT) -> FuncT:
        takes_run = bool(inspect.signature(test).parameters)

        def wrapper() -> Any:
            run = assert_scenario(path, **options)
            return test(run) if takes_run else test()

        # Not functools.wraps: pytest would follow __wrapped__ and ask for a `run` fixture.
        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(wrapper, name, getattr(test, name))
        return wrapper  # type: ignore[return-value]

    return decorate
