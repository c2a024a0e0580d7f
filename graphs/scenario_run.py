"""Running one scenario through the intake graph, in memory: what scenario tests are made of.

The scenario's simulated patient answers, the given model speaks (the scenario's recorded replies
when it is a scripted backend), and the record comes from the given source; nothing is written
to disk, so tests and evaluations can run many of these side by side.
"""

from __future__ import annotations

from dataclasses import asdict

from langgraph.checkpoint.memory import InMemorySaver

from agents.sentence_embeddings import SentenceEmbedder
from agents.simulated_patient import PatientResponder, simulated_patient
from graphs.context import IntakeContext, IntakeTuning
from graphs.intake import compile_intake_graph
from graphs.scenario import Scenario
from graphs.session import IntakeGraph
from graphs.state import IntakeInput, IntakeOutput
from tools.fhir.record import RecordSource
from tools.imaging.triage import ImageTriager
from tools.models.protocol import ChatModel


async def run_scenario(
    scenario: Scenario,
    record_source: RecordSource,
    model: ChatModel | None = None,
    *,
    patient: PatientResponder | None = None,
    image_triager: ImageTriager | None = None,
    embedder: SentenceEmbedder | None = None,
    tuning: IntakeTuning | None = None,
    graph: IntakeGraph | None = None,
) -> IntakeOutput:
    """The finished intake of `scenario` (the model persona answers when the scenario asks for one).

    `patient` replaces the scenario's own simulated patient (suites choose one per run and time it).
    `image_triager` triages the images the scenario attaches; without one they are recorded untriaged.
    `embedder` serves the embedding patient (and the model persona's fallback); a scenario that asks
    for the embedding patient without one is a ValueError. `tuning` carries the configured interview
    knobs (chart budget, staleness, model safety check); the defaults otherwise. `graph` is a
    compiled intake graph to reuse (suites compile one for all their intakes: compiling costs about
    as much as a short intake); without one, a fresh graph with an in-memory checkpointer runs it.
    """
    mode = scenario.simulated_patient
    if mode == "model" and model is None:
        mode = "facts"  # no backend to speak with: the deterministic patient answers
    if patient is None:
        diagnosis = scenario.evaluation.correct_diagnosis if scenario.evaluation else None
        patient = simulated_patient(
            scenario.brief(),
            model if mode == "model" else None,
            mode,
            embedder=embedder,
            withheld=[diagnosis] if diagnosis else [],  # checked in replies, never shown to the persona
        )
    context = IntakeContext(
        record_source=record_source,
        model=model,
        patient=patient,
        today=scenario.visit_date,
        image_triager=image_triager,
        scheduled_images=scenario.scheduled_images(),
        **asdict(tuning or IntakeTuning()),
    )
    if graph is None:
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
    return IntakeOutput.model_validate(result)
