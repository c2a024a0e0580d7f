"""The intake graph: load the record, interview one question at a time, summarize, verify, deliver.

```
load_record -> interviewer_turn -> patient_turn -> safety_screen -+-> interviewer_turn (more to ask)
                                                                   +-> summarize -> verify -> deliver
```
Code routes, models speak: which element to ask about, when to stop and whether to escalate are
decided here from structured state; the model only phrases questions and the HPI narrative. A
live patient turn pauses with `interrupt()`; a simulation gives the same graph a simulated patient
in its context. Model failures never stop an intake: they fall back to code and are recorded, and
the summary flags them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, interrupt

from agents.coverage import stop_reason, update_coverage, wants_to_end
from agents.events import ModelEvent
from agents.interviewer import ProposedQuestion, propose_question, template_question
from agents.reconciliation import reconcile_with_model
from agents.safety import ESCALATION_MESSAGE, screen_model, screen_rules
from agents.summarizer import build_summary, low_confidence_flags, write_narrative
from agents.summary_schema import Statement, StopReason
from agents.transcript import MAX_ANSWER_CHARS, Turn, clean_answer, excerpt
from agents.verifier import model_check, verify_summary
from graphs.context import IntakeContext
from graphs.images import record_attachments, scheduled_for
from graphs.patient_message import as_patient_message, as_stop_request
from graphs.render import render_markdown
from graphs.state import IntakeInput, IntakeOutput, IntakeState
from tools.fhir.chart_context import build_chart_context
from tools.fhir.record import RecordError
from tools.models.protocol import ModelError

CLOSING_MESSAGE = (
    "Thank you, that's everything for now. Your answers have been shared with your care team, "
    "who will go through them with you at your appointment."
)


def _count_words(text: str) -> int:
    return len(text.split())


def _current_stop(state: IntakeState, context: IntakeContext) -> StopReason | None:
    if state.red_flags:
        return "red_flag"
    if state.stop_requested is not None:
        return state.stop_requested
    return stop_reason(
        state.coverage,
        questions_asked=len(state.turns),
        max_questions=state.max_questions,
        max_attempts=context.max_attempts_per_element,
        ended_by_patient=state.ended_by_patient,
    )


async def load_record(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Fetch the chart for the bound patient and cut it to a cited, budgeted context."""
    try:
        record = await context.record_source.fetch_record(state.patient_id)
    except RecordError as exc:
        return {"record": None, "record_error": str(exc), "chart_context": ""}
    count = context.model.count_tokens if context.model else _count_words
    chart = build_chart_context(record, context.chart_token_budget, count)
    return {"record": record, "record_error": None, "chart_context": chart.render()}


def _question_stream(turn: int) -> Callable[[str], None] | None:
    """Forward the question's text as the model writes it: custom stream events (stream_mode="custom")
    ``{"event": "question_delta", "turn": n, "text": delta}``. Provisional: the pending question in
    state (checked, perhaps the template) is the one asked. None outside a graph run."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return None

    def emit(text: str) -> None:
        writer({"event": "question_delta", "turn": turn, "text": text})

    return emit


def _images_by_turn(state: IntakeState) -> dict[int, list[str]]:
    """Readable attached images per transcript index, for a multimodal interviewer (never their triage)."""
    index_of = {turn.id: i for i, turn in enumerate(state.turns)}
    shown: dict[int, list[str]] = {}
    for image in state.images:
        if image.status != "unreadable" and image.turn_id in index_of:
            shown.setdefault(index_of[image.turn_id], []).append(image.path)
    return shown


async def interviewer_turn(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Pick the next open element (code) and have the model phrase one question about it."""
    element = state.coverage.open_elements(context.max_attempts_per_element)[0]
    conversation = [(t.question, excerpt(t.answer, 600)) for t in state.turns]
    turn_id = f"turn-{len(state.turns) + 1}"
    events: list[ModelEvent] = []
    try:
        proposed = await propose_question(
            context.model,
            element,
            state.record,
            state.chart_context,
            conversation,
            state.reason_for_visit,
            on_question_delta=_question_stream(len(state.turns) + 1),
            turn_images=_images_by_turn(state),
        )
    except ModelError as exc:
        proposed = ProposedQuestion(
            element=element,
            text=template_question(element, state.record, state.reason_for_visit),
            source="template",
        )
        events.append(
            ModelEvent(task=f"interviewer.ask:{element.value}", outcome="failed", detail=str(exc), turn_id=turn_id)
        )
    if proposed.rejected_reason:
        events.append(
            ModelEvent(
                task=f"interviewer.ask:{element.value}",
                outcome="rejected",
                detail=f"phrasing discarded: {proposed.rejected_reason}",
                turn_id=turn_id,
            )
        )
    return {"pending": proposed, "model_events": events}


async def patient_turn(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Get the patient's answer: from a simulated patient, or by pausing for a live one."""
    pending = state.pending
    if pending is None:  # pragma: no cover - the graph always sets it before this node
        raise RuntimeError("patient_turn reached without a pending question")
    index = len(state.turns) + 1
    if context.patient is not None:
        raw: Any = await context.patient.answer(pending.text, pending.element, index)
    else:
        raw = interrupt({"turn": index, "question": pending.text, "element": pending.element.value})
    request = as_stop_request(raw)
    if request is not None:  # the question goes unanswered; no turn is recorded
        stopped: dict[str, Any] = {"pending": None, "stop_requested": request.stop}
        if request.patient_message:
            stopped["patient_message"] = request.patient_message
        return stopped
    message = as_patient_message(raw)
    attachments = list(message.images)
    if context.patient is not None:
        attachments += scheduled_for(context.scheduled_images, index, pending.element, state.turns)
    images = await record_attachments(attachments, f"turn-{index}", len(state.images), context.image_triager)
    received = message.text
    answer = clean_answer(received)
    turn = Turn(
        id=f"turn-{index}",
        index=index,
        element=pending.element,
        question=pending.text,
        question_source=pending.source,
        answer=answer,
        answer_chars=len(received),
        long_answer=len(answer) > MAX_ANSWER_CHARS // 10,
    )
    return {
        "turns": [turn],
        "images": images,
        "pending": None,
        "coverage": update_coverage(state.coverage, pending.element, turn.id, answer),
        "ended_by_patient": state.ended_by_patient or wants_to_end(answer),
    }


async def safety_screen(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Rules on every answer, then (if enabled) the model; a red flag escalates and stops the intake."""
    if state.stop_requested is not None:  # stopped from outside: no new answer to screen
        return {}
    turn = state.turns[-1]
    flags = screen_rules(turn.answer, turn.id)
    events: list[ModelEvent] = []
    if context.safety_model_check and context.model is not None and not flags:
        try:
            flags = await screen_model(context.model, turn.question, turn.answer, turn.id)
        except ModelError as exc:
            events.append(ModelEvent(task="safety.check", outcome="failed", detail=str(exc), turn_id=turn.id))
    update: dict[str, Any] = {"red_flags": flags, "model_events": events}
    if flags:
        update["patient_message"] = ESCALATION_MESSAGE
    return update


def route_next(state: IntakeState, context: IntakeContext) -> Literal["interviewer_turn", "summarize"]:
    """Ask another question, or stop: red flag, everything covered, patient ended, or the cap."""
    return "summarize" if _current_stop(state, context) else "interviewer_turn"


async def summarize(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Build the cited draft summary; the model writes only the HPI narrative."""
    reason = _current_stop(state, context) or "covered"
    narrative: list[Statement] = []
    events: list[ModelEvent] = []
    if context.model is not None and state.turns:
        try:
            narrative = await write_narrative(context.model, state.turns, state.reason_for_visit)
        except ModelError as exc:
            events.append(ModelEvent(task="summarizer.hpi", outcome="failed", detail=str(exc)))
    reconciliation, claims_error = await reconcile_with_model(context.model, state.record, state.turns)
    if claims_error is not None:
        events.append(ModelEvent(task="reconcile.claims", outcome="failed", detail=str(claims_error)))
    summary = build_summary(
        patient_id=state.patient_id,
        reason=state.reason_for_visit,
        record=state.record,
        record_error=state.record_error,
        turns=state.turns,
        coverage=state.coverage,
        red_flags=state.red_flags,
        model_events=[*state.model_events, *events],
        stop_reason=reason,
        narrative=narrative,
        model_id=context.model.model_id if context.model else "none (deterministic interview)",
        demo_model=bool(context.model and context.model.is_demo),
        today=context.today or datetime.now(UTC).date(),
        stale_after_days=context.stale_after_days,
        reconciliation=reconciliation,
        images=state.images,
    )
    return {"summary": summary, "stop_reason": reason, "model_events": events}


async def verify(state: IntakeState, context: IntakeContext) -> dict[str, Any]:
    """Ground every statement in its cited sources (code, then the model); unsupported ones leave, flagged."""
    if state.summary is None:  # pragma: no cover - summarize always sets it
        raise RuntimeError("verify reached without a summary")
    summary = verify_summary(state.summary, state.turns, state.record, state.images)
    events: list[ModelEvent] = []
    if context.model is not None and summary.hpi_narrative:
        summary, events = await model_check(context.model, summary, state.turns)
        if events:
            summary = summary.model_copy(update={"flags": [*summary.flags, *low_confidence_flags(events)]})
    return {"summary": summary, "model_events": events}


async def deliver(state: IntakeState) -> dict[str, Any]:
    """Render the verified summary and the patient's closing words."""
    if state.summary is None:  # pragma: no cover - summarize always sets it
        raise RuntimeError("deliver reached without a summary")
    return {
        "markdown": render_markdown(state.summary, state.turns, state.images),
        "patient_message": state.patient_message or CLOSING_MESSAGE,
    }


ContextNode = Callable[[IntakeState, IntakeContext], Awaitable[dict[str, Any]]]


def _with_context(node: ContextNode, bound: IntakeContext | None) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Adapt a node of (state, context) to LangGraph's runtime injection."""

    async def run(state: IntakeState, runtime: Runtime[IntakeContext]) -> dict[str, Any]:
        return await node(state, _resolve(runtime, bound))

    run.__name__ = node.__name__
    run.__doc__ = node.__doc__
    return run


def _resolve(runtime: Runtime[IntakeContext], bound: IntakeContext | None) -> IntakeContext:
    context = runtime.context if runtime.context is not None else bound
    if context is None:
        raise ValueError("the intake graph needs an IntakeContext: pass context=IntakeContext(...) when invoking it")
    return context


def build_intake_graph(
    bound_context: IntakeContext | None = None,
) -> StateGraph[IntakeState, IntakeContext, IntakeInput, IntakeOutput]:
    """The uncompiled graph. `bound_context` serves runs that bring none (LangGraph Studio)."""
    graph = StateGraph(
        IntakeState,
        context_schema=None if bound_context else IntakeContext,
        input_schema=IntakeInput,
        output_schema=IntakeOutput,
    )

    def route(state: IntakeState, runtime: Runtime[IntakeContext]) -> Literal["interviewer_turn", "summarize"]:
        return route_next(state, _resolve(runtime, bound_context))

    graph.add_node("load_record", _with_context(load_record, bound_context))
    graph.add_node("interviewer_turn", _with_context(interviewer_turn, bound_context))
    graph.add_node("patient_turn", _with_context(patient_turn, bound_context))
    graph.add_node("safety_screen", _with_context(safety_screen, bound_context))
    graph.add_node("summarize", _with_context(summarize, bound_context))
    graph.add_node("verify", _with_context(verify, bound_context))
    graph.add_node("deliver", deliver)
    graph.add_edge(START, "load_record")
    graph.add_conditional_edges("load_record", route)
    graph.add_edge("interviewer_turn", "patient_turn")
    graph.add_edge("patient_turn", "safety_screen")
    graph.add_conditional_edges("safety_screen", route)
    graph.add_edge("summarize", "verify")
    graph.add_edge("verify", "deliver")
    graph.add_edge("deliver", END)
    return graph


def compile_intake_graph(
    checkpointer: Checkpointer = None,
    bound_context: IntakeContext | None = None,
) -> CompiledStateGraph[IntakeState, IntakeContext, IntakeInput, IntakeOutput]:
    """The intake graph, compiled; pass a checkpointer for persistence and interrupts."""
    return build_intake_graph(bound_context).compile(checkpointer=checkpointer, name="previsit-intake")
