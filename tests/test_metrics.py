"""Scoring intakes: fact recall, unsupported statements, flag precision and recall, red flags.

Intakes are run through the real graph (scripted backend, fact patient) on fixture scenarios; the
matcher uses the real all-MiniLM-L6-v2 weights.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.coverage import IntakeElement
from agents.sentence_embeddings import SentenceEmbedder, load_minilm
from agents.simulated_patient import HiddenFact
from agents.summary_schema import ClinicianSummary, SourceRef, Statement, UncertaintyFlag
from graphs.metrics import DEFAULT_FACT_THRESHOLD, FactMatcher, IntakeScore, score_intake
from graphs.scenario import Expectations, ExpectedFlag, Scenario, load_scenario
from graphs.scenario_run import run_scenario
from graphs.state import IntakeOutput
from tests.conftest import RECORDS, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.scripted import ScriptedChatModel

DIZZY = SCENARIOS / "agentclinic-dizzy-spells-older-woman.yaml"
GALLBLADDER = "I had my gallbladder taken out in 2015."


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return load_minilm()


@pytest.fixture(scope="module")
def matcher(embedder: SentenceEmbedder) -> FactMatcher:
    return FactMatcher(embedder)


def _tell_everything(scenario: Scenario) -> Scenario:
    """The scenario with every hidden fact tied to an element the interview asks about."""
    facts = [f if f.element else HiddenFact(text=f.text, element=IntakeElement.HISTORY) for f in scenario.facts]
    return scenario.model_copy(update={"facts": facts})


async def _run(scenario: Scenario) -> IntakeOutput:
    return await run_scenario(scenario, BundleRecordSource(RECORDS), ScriptedChatModel(scenario.model_script))


@pytest.fixture(scope="module")
def perfect() -> tuple[Scenario, IntakeOutput]:
    import asyncio

    scenario = _tell_everything(load_scenario(DIZZY))
    return scenario, asyncio.run(_run(scenario))


def _summary(*texts: str, flags: list[UncertaintyFlag] | None = None) -> ClinicianSummary:
    return ClinicianSummary(
        patient_id="p-1",
        patient_name=None,
        reason_for_visit=None,
        generated_at=datetime(2025, 1, 1, tzinfo=UTC),
        model_id="scripted",
        demo_model=False,
        stop_reason="covered",
        questions_asked=len(texts),
        history=[Statement(text=t, sources=[SourceRef(kind="patient", ref="turn-1")], origin="model") for t in texts],
        flags=flags or [],
    )


# Fact recall


def test_a_perfect_intake_recalls_every_fact(perfect: tuple[Scenario, IntakeOutput], matcher: FactMatcher) -> None:
    scenario, output = perfect
    score = score_intake(scenario, output, matcher)
    assert score.fact_recall == 1.0, score.missed_facts
    assert score.facts_found == score.facts_total == len(scenario.facts)
    assert score.missed_facts == []
    assert score.stop_reason == "covered"
    assert score.questions_asked == len(output.turns) == 13


async def test_a_fact_the_patient_never_tells_is_missed_and_named(matcher: FactMatcher) -> None:
    base = _tell_everything(load_scenario(DIZZY))
    scenario = base.model_copy(update={"facts": [*base.facts, HiddenFact(text=GALLBLADDER)]})
    score = score_intake(scenario, await _run(scenario), matcher)
    assert score.missed_facts == [GALLBLADDER]
    assert score.fact_recall == pytest.approx((len(scenario.facts) - 1) / len(scenario.facts))
    assert score.fact_recall is not None and score.fact_recall < 1.0
    missed = next(m for m in score.fact_matches if not m.found)
    assert missed.similarity is not None and missed.similarity < DEFAULT_FACT_THRESHOLD


def test_a_summary_with_one_fact_removed_misses_exactly_that_fact(
    perfect: tuple[Scenario, IntakeOutput], matcher: FactMatcher
) -> None:
    scenario, output = perfect
    assert output.summary is not None
    fact = "While it lasts it's about 5 out of 10 and I have to hold on to something."

    def without(statements: list[Statement]) -> list[Statement]:
        return [s for s in statements if "5 out of 10" not in s.text]

    summary = output.summary.model_copy(
        update={
            "hpi": [h for h in output.summary.hpi if "5 out of 10" not in h.statement.text],
            "hpi_narrative": without(output.summary.hpi_narrative),
        }
    )
    score = score_intake(scenario, output.model_copy(update={"summary": summary}), matcher)
    assert score.missed_facts == [fact]
    assert score.facts_found == score.facts_total - 1


def test_a_clinician_paraphrase_is_found_by_embedding(matcher: FactMatcher) -> None:
    [match] = matcher.match(["I feel sick after eating fatty food."], _summary("Nausea after fatty meals."))
    assert match.found and match.rule == "embedding"
    assert match.similarity is not None and match.similarity >= DEFAULT_FACT_THRESHOLD


def test_an_unrelated_statement_is_not_a_match(matcher: FactMatcher) -> None:
    [match] = matcher.match(["I get chest pain when I climb stairs."], _summary("Itchy rash on both arms."))
    assert not match.found
    assert match.similarity is not None and match.similarity < 0.4


def test_a_different_number_is_not_the_same_fact_by_either_rule(matcher: FactMatcher) -> None:
    fact = "I take 10 mg of lisinopril every morning."
    [wrong] = matcher.match([fact], _summary("Takes 20 mg of lisinopril every morning."))
    assert not wrong.found
    assert wrong.similarity is not None and wrong.similarity >= DEFAULT_FACT_THRESHOLD  # close in meaning, yet missed
    [right] = matcher.match([fact], _summary("Takes 10 mg of lisinopril every morning."))
    assert right.found and right.rule == "content_words"


def test_without_an_embedder_only_the_exact_rules_apply() -> None:
    exact = FactMatcher(None)
    summary = _summary("Nausea after fatty meals.", "It started about ten days ago, after a cold.")
    paraphrase, contained, words = exact.match(
        ["I feel sick after eating fatty food.", "after a cold", "A cold ten days ago started it."], summary
    )
    assert not paraphrase.found and paraphrase.similarity is None
    assert contained.found and contained.rule == "contained"
    assert words.found and words.rule == "content_words"  # "ten" and "10" are the same number


def test_text_the_verifier_removed_does_not_count_as_stated(matcher: FactMatcher) -> None:
    removed = Statement(
        text="Nausea after fatty meals.", sources=[SourceRef(kind="patient", ref="turn-9")], origin="model"
    )
    flag = UncertaintyFlag(kind="unsupported", severity="medium", message=f"Removed a statement: {removed.text}")
    summary = _summary("No allergies.", flags=[flag]).model_copy(update={"removed_statements": [removed]})
    [match] = matcher.match(["I feel sick after eating fatty food."], summary)
    assert not match.found


def test_a_threshold_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FactMatcher(None, threshold=1.5)


# Unsupported statements


async def test_unsupported_rate_counts_the_statements_the_verifier_removed(matcher: FactMatcher) -> None:
    scenario = load_scenario(SCENARIOS / "agentclinic-watery-diarrhea-partial-record.yaml")
    output = await _run(scenario)
    assert output.summary is not None
    score = score_intake(scenario, output, matcher)
    removed = {s.text for s in output.summary.removed_statements}
    unsupported_flags = [f for f in output.summary.flags if f.kind == "unsupported"]
    assert score.unsupported_statements == len(removed) > 0
    assert all(any(text[:100] in f.message for f in unsupported_flags) for text in removed)
    assert score.unsupported_rate == pytest.approx(score.unsupported_statements / score.statements_total)


async def test_a_summary_with_nothing_removed_has_no_unsupported_statements(matcher: FactMatcher) -> None:
    scenario = load_scenario(DIZZY)
    output = await _run(scenario)
    score = score_intake(scenario, output, matcher)
    assert score.unsupported_statements == 0 and score.unsupported_rate == 0.0
    assert output.summary is not None
    distinct = {(s.text, tuple(r.ref for r in s.sources)) for s in output.summary.statements()}
    assert score.statements_total == len(distinct)


# Flags


def _flag(kind: str, message: str, severity: str = "medium", evidence: tuple[str, ...] = ()) -> UncertaintyFlag:
    return UncertaintyFlag.model_validate(
        {
            "kind": kind,
            "severity": severity,
            "message": message,
            "evidence": [{"kind": "patient", "ref": r} for r in evidence],
        }
    )


def _score_flags(expect: Expectations, flags: list[UncertaintyFlag], matcher: FactMatcher) -> IntakeScore:
    scenario = load_scenario(DIZZY).model_copy(update={"expect": expect})
    output = IntakeOutput(patient_id="p-1", summary=_summary("No allergies.", flags=flags), stop_reason="covered")
    return score_intake(scenario, output, matcher)


def test_flags_match_one_to_one_and_forbidden_kinds_are_false_positives(matcher: FactMatcher) -> None:
    expect = Expectations(
        flags=[
            ExpectedFlag(kind="conflict", contains="headache"),
            ExpectedFlag(kind="missing", contains="allergies"),
            ExpectedFlag(kind="missing", contains="allergies"),  # wants two; only one is raised
        ],
        absent_flags=["low_confidence"],
    )
    raised = [
        _flag("conflict", "The patient's answers disagree about headache."),
        _flag("missing", "Not covered: allergies (the question limit was reached first)."),
        _flag("missing", "Not covered: medications (the question limit was reached first)."),  # not judged
        _flag("low_confidence", "The model was unsure."),  # forbidden
    ]
    score = _score_flags(expect, raised, matcher)
    assert (score.flags_expected, score.flags_matched, score.flags_raised, score.flags_total) == (3, 2, 3, 4)
    assert score.flag_recall == pytest.approx(2 / 3)
    assert score.flag_precision == pytest.approx(2 / 3)
    assert score.missed_flags == ["missing containing 'allergies'"]
    assert score.unexpected_flags == ["low_confidence: The model was unsure."]


def test_severity_and_evidence_must_agree_when_the_expectation_gives_them(matcher: FactMatcher) -> None:
    expect = Expectations(
        flags=[ExpectedFlag(kind="conflict", severity="high"), ExpectedFlag(kind="stale", evidence=["turn-3"])]
    )
    raised = [
        _flag("conflict", "Disagree about dose.", severity="medium"),
        _flag("stale", "Old labs.", evidence=("turn-2",)),
    ]
    score = _score_flags(expect, raised, matcher)
    assert score.flags_matched == 0 and score.flag_recall == 0.0
    assert score.flag_precision is None  # nothing judged: no expected flag matched, no forbidden kind raised
    fixed = [
        _flag("conflict", "Disagree about dose.", severity="high"),
        _flag("stale", "Old labs.", evidence=("turn-3", "turn-4")),
    ]
    assert _score_flags(expect, fixed, matcher).flag_recall == 1.0


def test_the_matching_is_maximal_not_greedy(matcher: FactMatcher) -> None:
    # A greedy pass would give the first (general) expectation the only flag the second one accepts.
    expect = Expectations(flags=[ExpectedFlag(kind="conflict"), ExpectedFlag(kind="conflict", contains="dose")])
    raised = [_flag("conflict", "Disagree about dose."), _flag("conflict", "Disagree about headache.")]
    assert _score_flags(expect, raised, matcher).flags_matched == 2


def test_a_red_flag_expectation_is_an_expected_flag_and_an_unwanted_red_flag_a_false_positive(
    matcher: FactMatcher,
) -> None:
    red = _flag("red_flag", "Red flag (cardiac, detected by rules).", severity="high")
    wanted = _score_flags(Expectations(red_flag=True), [red], matcher)
    assert (wanted.flags_expected, wanted.flags_matched, wanted.flag_precision) == (1, 1, 1.0)
    unwanted = _score_flags(Expectations(red_flag=False), [red], matcher)
    assert (unwanted.flags_expected, unwanted.flag_precision, unwanted.flag_recall) == (0, 0.0, None)


async def test_red_flag_detection_on_the_chest_pain_scenario(matcher: FactMatcher) -> None:
    scenario = load_scenario(SCENARIOS / "agentclinic-chest-pain-breathless-red-flag.yaml")
    score = score_intake(scenario, await _run(scenario), matcher)
    assert score.red_flag_expected and score.red_flag_raised
    assert score.stop_reason == "red_flag" and score.questions_asked == 1
    assert score.flag_precision == score.flag_recall == 1.0


def test_an_intake_without_a_summary_misses_every_fact(matcher: FactMatcher) -> None:
    scenario = load_scenario(DIZZY)
    score = score_intake(scenario, IntakeOutput(patient_id="p-1"), matcher)
    assert score.fact_recall == 0.0 and len(score.missed_facts) == len(scenario.facts)
    assert score.unsupported_rate is None and score.flags_raised == 0
    assert score.flag_recall == 0.0 and not score.red_flag_raised
