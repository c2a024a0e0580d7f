"""Every fixture scenario, run through the real intake graph with the scripted backend.

The simulated patient answers from the scenario's hidden facts; the scripted backend replays the
scenario's recorded model replies; the summary must meet the scenario's expectations.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents.simulated_patient import simulated_patient
from graphs.context import IntakeContext
from graphs.expectations import check_expectations
from graphs.intake import compile_intake_graph
from graphs.scenario import load_scenario
from graphs.state import IntakeInput, IntakeOutput
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
    model = ScriptedChatModel(scenario.model_script)
    context = IntakeContext(
        record_source=BundleRecordSource(RECORDS),
        model=model,
        patient=simulated_patient(scenario.brief(), None),
        today=scenario.visit_date,
    )
    graph = compile_intake_graph(InMemorySaver())
    result = await graph.ainvoke(
        IntakeInput(
            patient_id=scenario.patient_id,
            reason_for_visit=scenario.reason_for_visit,
            max_questions=scenario.max_questions,
        ),
        {"configurable": {"thread_id": scenario.id}},
        context=context,
    )
    output = IntakeOutput.model_validate(result)
    assert output.summary is not None
    problems = check_expectations(scenario.expect, output.summary, output.turns, bool(output.red_flags))
    assert not problems, "\n".join(problems)
    assert len(output.turns) <= scenario.max_questions
