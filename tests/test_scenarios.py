"""Every fixture scenario, run through the real intake graph with the scripted backend.

The simulated patient answers from the scenario's hidden facts; the scripted backend replays the
scenario's recorded model replies; the summary must meet the scenario's expectations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graphs.expectations import check_expectations
from graphs.scenario import load_scenario
from graphs.scenario_run import run_scenario
from tests.conftest import RECORDS, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.scripted import ScriptedChatModel

SCENARIO_FILES = sorted(SCENARIOS.glob("*.yaml"))


def test_there_are_at_least_six_scenarios_from_both_sources() -> None:
    scenarios = [load_scenario(p) for p in SCENARIO_FILES]
    assert len(scenarios) >= 6
    assert any("synthea" in s.source.lower() for s in scenarios)
    assert any("agentclinic" in s.source.lower() for s in scenarios)
    assert any(s.expect.red_flag for s in scenarios)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
async def test_scenario_meets_its_expectations(path: Path) -> None:
    scenario = load_scenario(path)
    output = await run_scenario(scenario, BundleRecordSource(RECORDS), ScriptedChatModel(scenario.model_script))
    assert output.summary is not None
    problems = check_expectations(scenario.expect, output.summary, output.turns, bool(output.red_flags))
    assert not problems, "\n".join(problems)
    assert len(output.turns) <= scenario.max_questions
