"""The red-flag rules against the labelled message set in fixtures/red_flags/messages.yaml.

The bar is zero misses: every expected-positive message must be flagged. False alarms are allowed
but must be declared in the set (`known_false_alarm: true`, with a note saying why they were
accepted), and a declared false alarm must still fire, so the list stays honest both ways.

`test_confusion_table` prints TP/FN/FP/TN, per-category recall and the false alarms; see it with
`pytest tests/test_red_flags.py -rA` (or `-s`), or run `python scripts/bench_red_flags.py`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import safety
from agents.safety import (
    ESCALATION_MESSAGE,
    RED_FLAG_CATEGORIES,
    RedFlagCase,
    evaluate,
    load_red_flag_cases,
    screen_rules,
)
from tests.conftest import FIXTURES

MESSAGES = FIXTURES / "red_flags" / "messages.yaml"
CASES = load_red_flag_cases(MESSAGES)
POSITIVE_KINDS = {"positive", "typo", "caregiver"}
NEGATIVE_KINDS = {"negated", "historical", "third_person", "benign", "ambiguous_benign"}


def _case_id(index: int, case: RedFlagCase) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", case.text.lower()).strip("-")[:48]
    label = case.category if case.expected else "neg"
    return f"{index:04d}-{label}-{case.kind}-{slug}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(i, c) for i, c in enumerate(CASES)])
def test_message(case: RedFlagCase) -> None:
    flagged = [flag.category for flag in screen_rules(case.text, "t")]
    if case.expected:
        assert flagged, f"MISSED red flag ({case.category}): {case.text!r}"
    elif case.known_false_alarm:
        assert flagged, f"Declared false alarm no longer fires; drop known_false_alarm: {case.text!r}"
    else:
        assert not flagged, f"Undeclared false alarm {flagged}: {case.text!r} (fix, or declare it with a note)"


def test_confusion_table() -> None:
    table = evaluate(CASES)
    print()
    print(table.render())
    assert table.fn == 0, "missed: " + "; ".join(r.case.text for r in table.misses)
    declared = {c.text for c in CASES if c.known_false_alarm}
    assert {r.case.text for r in table.false_alarms} == declared


def test_the_set_is_large_labelled_and_covers_every_category_and_kind() -> None:
    assert len(CASES) >= 120
    texts = [c.text for c in CASES]
    assert len(texts) == len(set(texts)), "duplicate messages"
    for case in CASES:
        if case.expected:
            assert case.kind in POSITIVE_KINDS and case.category in RED_FLAG_CATEGORIES, case.text
            assert not case.known_false_alarm, case.text
        else:
            assert case.kind in NEGATIVE_KINDS and case.category is None, case.text
        if case.known_false_alarm:
            assert case.note, f"a declared false alarm needs a note saying why it is accepted: {case.text!r}"
    positives = Counter(c.category for c in CASES if c.expected)
    assert all(positives[category] >= 4 for category in RED_FLAG_CATEGORIES), positives
    assert set(Counter(c.kind for c in CASES)) == POSITIVE_KINDS | NEGATIVE_KINDS


def test_the_evidence_is_the_patients_own_sentence() -> None:
    [flag] = screen_rules("Some tiredness. Since an hour ago I have CRUSHING chest pain and I'm sweating.", "turn-2")
    assert flag.category == "cardiac"
    assert flag.turn_id == "turn-2"
    assert flag.detected_by == "rules"
    assert flag.evidence == "Since an hour ago I have CRUSHING chest pain and I'm sweating."


def test_each_category_is_flagged_once_per_answer() -> None:
    flags = screen_rules("I can't breathe. I really can't breathe. My lips are blue.", "t")
    assert [f.category for f in flags] == ["breathing"]


# Conditions: naming one would be a diagnosis. Flag descriptions may name what the patient reports
# (a seizure, suicidal thoughts), never a condition.
CONDITIONS = (
    "stroke", "heart attack", "myocardial", "infarct", "angina", "anaphyla", "sepsis", "septic", "meningitis",
    "epilep", "torsion", "ectopic", "miscarriage", "eclampsia", "asthma", "embolism", "haemorrhage", "hemorrhage",
    "cancer", "diagnos",
)  # fmt: skip
# The patient is told what to do, never what they might have, not even what the screen reacted to.
NAMED_IN_ESCALATION = (*CONDITIONS, "allergic", "seizure", "overdose", "suicid", "you have a", "you are having")


def test_the_escalation_message_names_no_diagnosis() -> None:
    message = ESCALATION_MESSAGE.lower()
    assert not [word for word in NAMED_IN_ESCALATION if word in message]
    assert "emergency" in message and "988" in message


def test_flag_descriptions_name_no_condition() -> None:
    text = " ".join(c.text for c in CASES if c.expected)
    descriptions = {flag.description.lower() for flag in screen_rules(text, "t")}
    assert len(descriptions) == len(RED_FLAG_CATEGORIES)
    assert not [(d, w) for d in descriptions for w in CONDITIONS if w in d]


# ---------------------------------------------------------------------------------- performance

FIFTY_KB = 50_000
LARGE_ANSWERS = {
    "prose": "I have had a mild cough for a week and some tiredness, nothing else really. ",
    "negated mentions": "No chest pain, no shortness of breath. My father had a stroke years ago. ",
    "no punctuation": "no chest pain no shortness of breath my father had a stroke and ",
    "temperatures": "38.5 ",
    "one word": "a",
    "trigger words": "bleeding pregnant fever weeks old chest pain sweating ",
}


@pytest.mark.parametrize("name", LARGE_ANSWERS)
def test_a_50kb_answer_screens_quickly(name: str) -> None:
    """A guard against super-linear blow-up, not a benchmark (scripts/bench_red_flags.py is)."""
    answer = (LARGE_ANSWERS[name] * (FIFTY_KB // len(LARGE_ANSWERS[name]) + 1))[:FIFTY_KB]
    started = time.perf_counter()
    screen_rules(answer, "t")
    assert time.perf_counter() - started < 0.5


def test_an_emergency_at_the_end_of_a_50kb_answer_is_still_found() -> None:
    filler = "No chest pain, no shortness of breath. My father had a stroke years ago. " * 700
    started = time.perf_counter()
    flags = screen_rules(filler[:FIFTY_KB] + "\nI can't breathe and my lips are going blue.", "t")
    assert time.perf_counter() - started < 0.5
    assert [f.category for f in flags] == ["breathing"]


# ---------------------------------------------------------------------------------- properties

POSITIVES = [c.text for c in CASES if c.expected and not re.match(r"(?i)\W*(he|she|they|his|her)\b", c.text)]
FILLERS = [c.text for c in CASES if not c.expected and not c.known_false_alarm]
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    positive=st.sampled_from(POSITIVES),
    before=st.lists(st.sampled_from(FILLERS), max_size=3),
    after=st.lists(st.sampled_from(FILLERS), max_size=3),
)
def test_scope_stays_inside_the_sentence(positive: str, before: list[str], after: list[str]) -> None:
    """Negated, historical or third-person sentences around an emergency never hide it."""
    answer = "\n".join([*before, positive, *after])
    assert screen_rules(answer, "t"), answer


@SETTINGS
@given(st.text(max_size=400))
def test_any_text_screens_without_error(text: str) -> None:
    flags = screen_rules(text, "t")
    categories = [f.category for f in flags]
    assert len(categories) == len(set(categories))
    assert set(categories) <= set(RED_FLAG_CATEGORIES)
    assert all(f.evidence in text for f in flags)


def test_a_bare_no_answers_the_question_before_it() -> None:
    assert not screen_rules("Chest pain?\nNo.\nShortness of breath?\nNo.", "t")
    [flag] = screen_rules("Chest pain?\nYes, and I'm sweating.", "t")
    assert (flag.category, flag.evidence) == ("cardiac", "Chest pain?")
    [flag] = screen_rules("Any bleeding?\nNo.\nI cant breathe", "t")
    assert (flag.category, flag.evidence) == ("breathing", "I cant breathe")


def _every_alternative(pattern: safety._Pattern, has: Callable[[str], bool]) -> tuple[int, ...]:
    return tuple(range(len(pattern.alternatives)))


def _screen_without_anchors(text: str) -> list[tuple[str, str]]:
    with (
        mock.patch.object(safety._Pattern, "active", _every_alternative),
        mock.patch.object(safety._Pattern, "could_match", lambda self, has: True),
    ):
        return [(f.category, f.evidence) for f in screen_rules(text, "t")]


@SETTINGS
@given(st.lists(st.sampled_from([c.text for c in CASES]), min_size=1, max_size=4))
def test_anchors_only_skip_work_never_change_a_verdict(messages: list[str]) -> None:
    """Anchor filtering is an optimisation: with every alternative run, the flags are the same."""
    answer = " ".join(messages)
    assert [(f.category, f.evidence) for f in screen_rules(answer, "t")] == _screen_without_anchors(answer)


def test_every_pattern_alternative_has_anchors() -> None:
    """An alternative without anchors would run on every answer: a slow pattern to look at."""
    patterns = [sign.trigger for rule in safety._RULES for sign in rule.signs]
    patterns += [need.pattern for rule in safety._RULES for sign in rule.signs for need in sign.needs]
    assert all(anchors for pattern in patterns for anchors in pattern.anchors)
