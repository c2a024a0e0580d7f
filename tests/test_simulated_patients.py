"""Simulated patients: the embedding patient (real all-MiniLM-L6-v2) and the model persona (scripted replies)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agents.coverage import IntakeElement
from agents.sentence_embeddings import SentenceEmbedder, load_minilm
from agents.simulated_patient import (
    EmbeddingPatient,
    FactPatient,
    HiddenFact,
    ModelPatient,
    PatientBrief,
    child_reference,
    is_yes_no_question,
    nothing_to_say,
    simulated_patient,
)
from graphs.metrics import FactMatcher, score_intake
from graphs.scenario import Evaluation, load_scenario
from graphs.scenario_run import run_scenario
from tests.conftest import RECORDS, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.scripted import ScriptedChatModel

COUGH = PatientBrief(
    id="cough-adult",
    persona="A 52-year-old office worker.",
    facts=[
        HiddenFact(text="I've been coughing up yellow phlegm for about a week."),
        HiddenFact(text="It started after a cold I caught from my grandson."),
        HiddenFact(text="I'm allergic to penicillin, it gives me hives."),
        HiddenFact(text="I take metformin twice a day for my sugar."),
        HiddenFact(text="My father had a heart attack when he was 55."),
        HiddenFact(text="The cough is worse at night and keeps me awake."),
    ],
)
NO_REPLIES = {"No, I haven't had that.", "No, nothing like that.", "No, not that I've noticed."}
UNSURE_REPLIES = {"I'm not sure.", "I don't really know, sorry.", "I'm not sure, I haven't thought about that."}


class CountingEmbedder:
    """The real encoder, counting the texts it is asked to embed."""

    def __init__(self, inner: SentenceEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += texts
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return load_minilm()


# The embedding patient


@pytest.mark.parametrize(
    ("question", "element", "told"),
    [
        ("What brings you in today?", IntakeElement.CHIEF_COMPLAINT, "yellow phlegm"),
        ("When did it start?", IntakeElement.ONSET, "after a cold"),
        ("What medicines do you take?", IntakeElement.MEDICATIONS, "metformin"),
        ("Do you have any allergies to medicines?", IntakeElement.ALLERGIES, "penicillin"),
        ("Is it worse at any time of day?", IntakeElement.TIMING, "worse at night"),
        ("Has anyone in your family had heart problems?", IntakeElement.HISTORY, "heart attack"),
    ],
)
async def test_untagged_facts_are_retrieved_by_meaning(
    embedder: SentenceEmbedder, question: str, element: IntakeElement, told: str
) -> None:
    answer = await EmbeddingPatient(COUGH, embedder).answer(question, element, 1)
    assert told in answer
    assert len([f for f in COUGH.facts if f.text in answer]) <= 3


async def test_nothing_matching_gets_no_to_a_yes_no_question_and_not_sure_to_an_open_one(
    embedder: SentenceEmbedder,
) -> None:
    patient = EmbeddingPatient(COUGH, embedder)
    assert await patient.answer("Have you noticed any blood in your urine?", IntakeElement.HISTORY, 4) in NO_REPLIES
    assert await patient.answer("Where exactly do you feel it?", IntakeElement.LOCATION, 5) in UNSURE_REPLIES
    assert await patient.answer("On a scale of 0 to 10 how bad is it?", IntakeElement.SEVERITY, 6) in UNSURE_REPLIES


async def test_answers_are_deterministic_and_fact_vectors_are_computed_once(embedder: SentenceEmbedder) -> None:
    questions = [
        ("What brings you in today?", IntakeElement.CHIEF_COMPLAINT),
        ("Where exactly do you feel it?", IntakeElement.LOCATION),
        ("Do you have any allergies to medicines?", IntakeElement.ALLERGIES),
        ("Does the pain spread anywhere?", IntakeElement.RADIATION),
    ]
    counting = CountingEmbedder(embedder)
    first = EmbeddingPatient(COUGH, counting)
    answers = [await first.answer(q, e, i) for i, (q, e) in enumerate(questions, 1)]
    again = [await first.answer(q, e, i) for i, (q, e) in enumerate(questions, 1)]
    resumed = [await EmbeddingPatient(COUGH, embedder).answer(q, e, i) for i, (q, e) in enumerate(questions, 1)]
    assert answers == again == resumed
    assert sum(t == COUGH.facts[0].text for t in counting.texts) == 1  # facts embedded once per patient


async def test_scripted_answers_win(embedder: SentenceEmbedder) -> None:
    brief = COUGH.model_copy(update={"scripted_answers": {IntakeElement.ALLERGIES: "Only plasters."}})
    assert (
        await EmbeddingPatient(brief, embedder).answer("Any allergies?", IntakeElement.ALLERGIES, 3) == "Only plasters."
    )


async def test_a_scenario_runs_with_the_embedding_patient_and_recalls_its_facts(embedder: SentenceEmbedder) -> None:
    scenario = load_scenario(SCENARIOS / "agentclinic-dizzy-spells-older-woman.yaml")
    scenario = scenario.model_copy(update={"simulated_patient": "embedding", "model_script": {}})
    runs = [await run_scenario(scenario, BundleRecordSource(RECORDS), embedder=embedder) for _ in range(2)]
    assert [t.answer for t in runs[0].turns] == [t.answer for t in runs[1].turns]  # a rerun answers the same
    told = " ".join(t.answer for t in runs[0].turns)
    assert "room seems to spin" in told and "less than a minute" in told and "not allergic" in told
    score = score_intake(scenario, runs[0], FactMatcher(embedder))
    assert score.fact_recall is not None and score.fact_recall >= 0.8, score.missed_facts


async def test_the_embedding_patient_without_an_encoder_is_a_clear_error() -> None:
    scenario = load_scenario(SCENARIOS / "agentclinic-dizzy-spells-older-woman.yaml")
    with pytest.raises(ValueError, match="sentence encoder"):
        await run_scenario(scenario.model_copy(update={"simulated_patient": "embedding"}), BundleRecordSource(RECORDS))


def test_question_shapes() -> None:
    assert is_yes_no_question("Do you have any allergies?")
    assert is_yes_no_question("You mentioned a cough. Have you had a fever?")
    assert not is_yes_no_question("When did it start?")
    assert not is_yes_no_question("You're coming in about dizziness; can you tell me what has been happening?")


def test_the_caregiver_is_recognised_from_the_persona() -> None:
    assert child_reference("Jorge's mother, answering for her teenage son.") == "my son"
    assert child_reference("A 4-year-old girl; her father answers.") == "my daughter"
    assert child_reference("An 8-month-old infant brought in by a carer.") == "my child"
    assert child_reference("A 70-year-old retired teacher who lives with her son.") is None
    assert child_reference("") is None


def test_a_caregiver_says_no_for_the_child() -> None:
    brief = PatientBrief(id="kid", persona="Mother of a 6-year-old boy.", facts=[HiddenFact(text="He has a rash.")])
    replies = {nothing_to_say(brief, "Has he had a fever?", turn) for turn in range(12)}
    assert "No, my son hasn't had that." in replies
    assert not any("I haven't" in r for r in replies)


# The model persona (scripted backend: recorded replies)


def _persona(replies: list[str | dict[str, str]], brief: PatientBrief = COUGH, **kwargs: object) -> ModelPatient:
    return ModelPatient(brief, ScriptedChatModel({"patient.answer": replies}), **kwargs)  # type: ignore[arg-type]


async def test_a_reply_is_cut_to_three_sentences() -> None:
    patient = _persona([{"answer": "It started a week ago. After a cold. It got worse. Then better. Now bad again."}])
    assert await patient.answer("When did it start?", IntakeElement.ONSET, 1) == (
        "It started a week ago. After a cold. It got worse."
    )
    assert patient.overruled == []


async def test_a_garbled_reply_falls_back_to_the_fact_answer() -> None:
    patient = _persona(["{answer: It started after a cold", "still not json"])
    answer = await patient.answer("What medicines do you take?", IntakeElement.MEDICATIONS, 2)
    assert answer == await FactPatient(COUGH).answer("What medicines do you take?", IntakeElement.MEDICATIONS, 2)
    assert patient.overruled and "model failed" in patient.overruled[0]


async def test_a_reply_naming_a_diagnosis_falls_back(embedder: SentenceEmbedder) -> None:
    patient = _persona([{"answer": "I think it's pneumonia, honestly."}], fallback=EmbeddingPatient(COUGH, embedder))
    answer = await patient.answer("What do you think is going on?", IntakeElement.PATIENT_CONCERNS, 3)
    assert "pneumonia" not in answer
    assert "named a diagnosis ('pneumonia')" in patient.overruled[0]


async def test_a_withheld_diagnosis_is_refused_but_conditions_in_the_facts_are_not() -> None:
    withheld = _persona([{"answer": "The doctor said it might be Bordetella."}], withheld=["bordetella"])
    assert "Bordetella" not in await withheld.answer("Anything else?", IntakeElement.HISTORY, 4)
    diabetic = PatientBrief(id="d", facts=[HiddenFact(text="I have type 2 diabetes.")])
    told = _persona([{"answer": "I have type 2 diabetes."}], brief=diabetic)
    assert await told.answer("Any conditions?", IntakeElement.HISTORY, 5) == "I have type 2 diabetes."
    assert told.overruled == []


async def test_the_persona_never_sees_the_correct_diagnosis_and_a_child_is_spoken_for() -> None:
    scenario = load_scenario(SCENARIOS / "synthea-jorge-brekke-child-question-cap.yaml")
    scenario = scenario.model_copy(
        update={"simulated_patient": "model", "evaluation": Evaluation(correct_diagnosis="Acute bacterial sinusitis")}
    )
    script = {**scenario.model_script, "patient.answer": [{"answer": "It's acute bacterial sinusitis, I'm sure."}]}
    model = ScriptedChatModel(script)
    output = await run_scenario(scenario, BundleRecordSource(RECORDS), model)
    prompts = [m.content for r in model.requests if r.task == "patient.answer" for m in r.messages]
    assert prompts and not any("bacterial sinusitis" in p.lower() for p in prompts)
    assert any("my son" in p for p in prompts)
    assert "sinusitis" not in output.turns[0].answer.lower()  # the diagnosis-naming reply was replaced


def test_the_factory_builds_each_mode(embedder: SentenceEmbedder) -> None:
    model = ScriptedChatModel({})
    assert isinstance(simulated_patient(COUGH, None), FactPatient)
    assert isinstance(simulated_patient(COUGH, model), ModelPatient)
    assert isinstance(simulated_patient(COUGH, None, "embedding", embedder=embedder), EmbeddingPatient)
    with pytest.raises(ValueError, match="model backend"):
        simulated_patient(COUGH, None, "model")
