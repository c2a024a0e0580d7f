"""The scenario-test plugin as a user meets it: YAML files and a decorator in a fresh pytest project.

Each test writes a small project with pytester and runs pytest on it; the plugin is found through
its installed ``pytest11`` entry point, as in any user's environment.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.test_suite import KNEE_PATIENT, KNEE_SCRIPT

pytest_plugins = ["pytester"]

WARFARIN = "I take warfarin every day."


def _scenario(scenario_id: str, expect: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "id": scenario_id,
            "title": "Knee pain",
            "source": "written for tests/test_scenario_plugin.py",
            "patient_id": KNEE_PATIENT,
            "reason_for_visit": "knee pain",
            "max_questions": 4,
            "facts": [
                {"element": "chief_complaint", "text": "My left knee hurts."},
                {"element": "onset", "text": "It started two weeks ago after a long hike."},
                {"element": "location", "text": "It is on the inside of the knee."},
                {"element": "duration", "text": "It has been there the whole time."},
                {"element": "medications", "text": WARFARIN},
            ],
            "model_script": KNEE_SCRIPT,
            "expect": expect,
        },
        sort_keys=False,
    )


def test_a_passing_scenario_file_is_collected_and_passes(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.yaml", knee=_scenario("knee", {"summary_contains": ["two weeks ago"]}))

    result = pytester.runpytest("-v")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*knee.scenario.yaml::knee PASSED*"])


def test_a_failing_scenario_names_the_missed_fact_the_wrong_flag_and_shows_the_transcript(
    pytester: pytest.Pytester,
) -> None:
    expect = {
        "summary_contains": ["two weeks ago", "warfarin"],
        "flags": [{"kind": "conflict", "contains": "warfarin"}],
        "red_flag": True,
    }
    pytester.makefile(".scenario.yaml", knee_warfarin=_scenario("knee-warfarin", expect))

    result = pytester.runpytest()

    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "scenario knee-warfarin" in output
    assert "fact missing from the summary: 'warfarin'" in output
    assert "expected flag conflict containing 'warfarin'; raised: missing: Not covered: character" in output
    assert "red flag expected: True, raised: False" in output
    assert f"'{WARFARIN}' (never said: no question reached it)" in output
    assert "transcript excerpt:" in output
    assert "[turn-4] Q: Has it been there all the time?" in output
    assert "Traceback" not in output and "def runtest" not in output


def test_a_broken_scenario_file_fails_with_its_file_and_field(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scenario.yaml", broken="id: broken\ntitle: no facts\nsource: x\npatient_id: p\n")

    result = pytester.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*broken.scenario.yaml: invalid scenario: field 'facts': Field required*"])


def test_the_decorator_and_the_helper_run_a_scenario_in_a_few_lines(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", knee=_scenario("knee", {"summary_contains": ["inside of the knee"]}))
    pytester.makefile(".yaml", knee_red=_scenario("knee-red", {"red_flag": True}))
    pytester.makepyfile(
        """
        from previsit.testing import ScenarioRun, assert_scenario, scenario_test

        @scenario_test("knee.yaml")
        def test_onset_is_asked(run: ScenarioRun) -> None:
            assert any("start" in turn.question for turn in run.output.turns)

        def test_red_flag_expected() -> None:
            assert_scenario("knee_red.yaml")
        """
    )

    result = pytester.runpytest()

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ScenarioTestFailure: scenario knee-red (knee_red.yaml) failed:*"])
    result.stdout.fnmatch_lines(["*red flag expected: True, raised: False*"])
