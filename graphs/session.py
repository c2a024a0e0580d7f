"""Driving one intake session through the graph: start, answer interrupts, resume after a crash.

The same driver serves a simulation (the context carries a simulated patient, so the graph never
pauses), a live terminal chat (each interrupt is answered by the person at the keyboard) and a
resume (whatever the session was doing, it continues from its last checkpoint).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot
from pydantic import BaseModel

from agents.transcript import Turn
from graphs.context import IntakeContext
from graphs.state import IntakeInput, IntakeOutput, IntakeState


class PendingQuestion(BaseModel):
    """What a paused session is waiting for."""

    turn: int
    question: str
    element: str


AskPatient = Callable[[PendingQuestion], Awaitable[str | dict[str, Any] | None]]
"""The answer as text, or a `PatientMessage` dumped to a dict (text plus attached images); None pauses."""
"""Asks a live patient; returns None when the patient leaves (end of input), which pauses the session."""


class SessionObserver:
    """Hooks for showing a session as it happens; the default shows nothing."""

    def question(self, turn: int, text: str) -> None:
        """A question is about to be put to the patient."""

    def answer(self, turn: Turn) -> None:
        """An answer was recorded (and checkpointed)."""


SessionStatus = Literal["finished", "waiting_for_patient", "in_progress", "not_found"]


@dataclass(frozen=True)
class SessionView:
    """A session as stored: its status, its state and what it waits for."""

    session_id: str
    status: SessionStatus
    state: IntakeState | None
    pending: PendingQuestion | None


IntakeGraph = CompiledStateGraph[IntakeState, IntakeContext, IntakeInput, IntakeOutput]


def _config(session_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": session_id}}


def _pending_from(snapshot: StateSnapshot) -> PendingQuestion | None:
    for task in snapshot.tasks:
        for item in task.interrupts:
            return PendingQuestion.model_validate(item.value)
    return None


async def inspect_session(graph: IntakeGraph, session_id: str) -> SessionView:
    """What a stored session is doing now."""
    snapshot = await graph.aget_state(_config(session_id))
    if not snapshot.values:
        return SessionView(session_id, "not_found", None, None)
    state = IntakeState.model_validate(snapshot.values)
    pending = _pending_from(snapshot)
    if not snapshot.next:
        return SessionView(session_id, "finished", state, None)
    if pending is not None:
        return SessionView(session_id, "waiting_for_patient", state, pending)
    return SessionView(session_id, "in_progress", state, None)


async def drive_session(
    graph: IntakeGraph,
    session_id: str,
    context: IntakeContext,
    *,
    start: IntakeInput | None = None,
    ask_patient: AskPatient | None = None,
    observer: SessionObserver | None = None,
) -> SessionView:
    """Run a session until it finishes or waits for a patient who has gone.

    With `start`, a new session begins; without it, a stored session continues from its last
    checkpoint (answering a pending question first, if it is waiting for one).
    """
    watch = observer or SessionObserver()
    config = _config(session_id)
    payload: IntakeInput | Command[Any] | None
    answered = 0  # answers recorded so far, to number the next question without reading the checkpoint
    if start is not None:
        payload = start
    else:
        view = await inspect_session(graph, session_id)
        if view.status in ("finished", "not_found"):
            return view
        payload = None
        answered = len(view.state.turns) if view.state else 0
        if view.pending is not None:
            watch.question(view.pending.turn, view.pending.question)
            if ask_patient is None:
                return view
            reply = await ask_patient(view.pending)
            if reply is None:
                return view
            payload = Command(resume=reply)
    while True:
        interrupted: PendingQuestion | None = None
        async for chunk in graph.astream(payload, config, context=context, stream_mode="updates", durability="sync"):
            for node, update in chunk.items():
                if node == "__interrupt__":
                    interrupted = PendingQuestion.model_validate(update[0].value)
                elif node == "interviewer_turn" and update and update.get("pending"):
                    watch.question(answered + 1, update["pending"].text)
                elif node == "patient_turn" and update:
                    for turn in update.get("turns", []):
                        answered += 1
                        watch.answer(turn)
        if interrupted is None or ask_patient is None:
            return await inspect_session(graph, session_id)
        reply = await ask_patient(interrupted)
        if reply is None:
            return await inspect_session(graph, session_id)
        payload = Command(resume=reply)
