"""Sessions as LangGraph threads: create, take a turn, end or escalate, and show them.

Every change to a session happens under its lease lock (see `store`), so two tabs, two processes
or a patient and a clinician at once never interleave: the second gets a 409 and nothing is lost.
A turn runs as a task of its own, so a client that disconnects mid-stream does not cut the turn
short; the task releases the lock when the graph has checkpointed the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from agents.transcript import clean_answer
from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.patient_message import PatientMessage, StopRequest
from graphs.session import IntakeGraph, SessionView, inspect_session
from graphs.state import IntakeInput, IntakeState
from previsit.service.backend import Backend
from previsit.service.config import ServiceConfig
from previsit.service.problems import Problem
from previsit.service.schemas import (
    CreateSessionRequest,
    ImageInfo,
    Progress,
    Question,
    ReviewInfo,
    SessionListItem,
    SessionState,
    TurnView,
)
from previsit.service.store import ApiStatus, SessionData, SessionRecord
from previsit.service.tokens import issue_token
from tools.fhir.record import PatientNotFoundError, RecordError, RecordSource
from tools.imaging.records import ImageRecord
from tools.imaging.triage import ImageTriager
from tools.models.protocol import ChatModel

log = logging.getLogger("previsit.service")

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
RecordSourceFactory = Callable[[str], RecordSource]

CLINICIAN_ESCALATION_MESSAGE = (
    "Thank you. A member of your care team wants to talk with you directly, so this intake is stopping "
    "here. If you feel very unwell, call your local emergency number or go to the nearest emergency department."
)


async def _no_emit(_: str, __: dict[str, Any]) -> None:
    return None


def _config(session_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": session_id}}


class SessionLock:
    """A held lease on one session, renewed in the background until released."""

    def __init__(self, service: SessionService, session_id: str, owner: str) -> None:
        self.service = service
        self.session_id = session_id
        self.owner = owner
        self.handed_over = False
        """True once a turn task owns the lock (it releases it, not the request)."""
        self._heartbeat = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        lease = self.service.config.lock_lease_s
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(Exception):
                await self.service.store.renew(self.session_id, self.owner, lease)

    async def release(self) -> None:
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        await self.service.store.release(self.session_id, self.owner)


class SessionService:
    """The intake graph behind the API, with the service's record beside each thread."""

    def __init__(
        self,
        config: ServiceConfig,
        backend: Backend,
        model: ChatModel | None,
        record_sources: RecordSourceFactory,
        image_triager: ImageTriager | None = None,
    ) -> None:
        self.config = config
        self.image_triager = image_triager
        self.store = backend.store
        self.graph: IntakeGraph = compile_intake_graph(backend.checkpointer)
        self.model = model
        self.record_sources = record_sources
        self.instance = uuid.uuid4().hex[:12]
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- locking -------------------------------------------------------------------------------

    async def lock(self, session_id: str) -> SessionLock:
        owner = f"{self.instance}:{secrets.token_hex(4)}"
        if not await self.store.acquire(session_id, owner, self.config.lock_lease_s):
            if await self.store.get(session_id) is None:
                raise Problem(404, "No such session.")
            raise Problem(
                409,
                "This session is busy with another request (another tab or device?). Nothing was lost; "
                "try again in a moment.",
                kind="session-busy",
                headers={"Retry-After": "1"},
            )
        return SessionLock(self, session_id, owner)

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run work that must finish even if the client goes away; kept until done."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- graph ---------------------------------------------------------------------------------

    def context(self, patient_id: str, source: RecordSource | None = None) -> IntakeContext:
        return IntakeContext(
            record_source=source or self.record_sources(patient_id),
            model=self.model,
            image_triager=self.image_triager,
            **asdict(self.config.settings.tuning()),
        )

    async def advance(self, session_id: str, payload: Any, context: IntakeContext, emit: Emit = _no_emit) -> None:
        """Run the graph until it pauses for the patient or finishes, forwarding question deltas."""
        stream = self.graph.astream(
            payload, _config(session_id), context=context, stream_mode=["custom", "updates"], durability="sync"
        )
        async for mode, chunk in stream:
            if mode == "custom" and isinstance(chunk, dict) and chunk.get("event") == "question_delta":
                await emit("question_delta", {"turn": chunk.get("turn"), "text": str(chunk.get("text", ""))})

    async def inspect(self, session_id: str) -> SessionView:
        return await inspect_session(self.graph, session_id)

    # -- views ---------------------------------------------------------------------------------

    def state_of(self, view: SessionView, record: SessionRecord, *, clinician: bool) -> SessionState:
        data = record.data
        state = view.state
        status = _api_status(view, data)
        question = (
            Question(turn=view.pending.turn, text=view.pending.question, element=view.pending.element)
            if view.pending is not None and status == "awaiting_answer"
            else None
        )
        turns = list(state.turns) if state else []
        recorded = _graph_images(state) if clinician else {}
        images: dict[str, list[ImageInfo]] = {}
        for image in data.images:
            info = ImageInfo(id=image.id, filename=image.filename, turn_id=image.turn_id)
            found = recorded.get(image.stored_name)
            if found is not None:
                info.ref, info.status, info.error = found.id, found.status, found.error
                info.triage = found.triage.model_dump(mode="json") if found.triage else None
            images.setdefault(image.turn_id, []).append(info)
        coverage = state.coverage.elements if state else {}
        review = None
        if clinician:
            review = ReviewInfo(
                approved_at=data.approved_at,
                approved_by=data.approved_by,
                clinician_note=data.clinician_note,
                edits=data.edits,
                writebacks=data.writebacks,
                escalated_by_clinician=data.escalated,
            )
        return SessionState(
            session_id=view.session_id,
            status=status,
            question=question,
            progress=Progress(
                asked=len(turns) + (1 if question else 0),
                max_questions=state.max_questions if state else 0,
                covered=sum(1 for c in coverage.values() if c.status != "unanswered"),
                total=len(coverage),
            ),
            turns=[TurnView(id=t.id, question=t.question, answer=t.answer, images=images.get(t.id, [])) for t in turns],
            patient_message=state.patient_message if state else None,
            red_flag=bool(state and state.red_flags),
            approved=data.approved_at is not None,
            review=review,
        )

    async def recover(self, session_id: str) -> None:
        """Finish a step a killed process left half done (the thread is neither paused nor finished).

        Whoever reads the session first takes its lock and runs the graph on to its next pause, so a
        patient who reloads the page after a crash finds their next question. Busy: someone else is.
        """
        try:
            lock = await self.lock(session_id)
        except Problem:
            return
        try:
            view = await self.inspect(session_id)
            record = await self.store.get(session_id)
            if view.status == "in_progress" and view.state is not None and record is not None:
                await self.settle(session_id, view)
                await self.refresh(lock, record, record.data)
                log.info("session %s recovered an interrupted step", session_id)
        finally:
            await lock.release()

    async def settle(self, session_id: str, view: SessionView) -> SessionView:
        """The session once a step a killed process left half done is finished (call under its lock);
        a paused or finished session comes back as it is."""
        if view.status != "in_progress" or view.state is None:
            return view
        context = self.context(view.state.patient_id)
        await asyncio.shield(self.spawn(self.advance(session_id, None, context)))
        return await self.inspect(session_id)

    async def load(self, session_id: str) -> tuple[SessionView, SessionRecord]:
        record = await self.store.get(session_id)
        view = await self.inspect(session_id)
        if record is None or view.status == "not_found":
            raise Problem(404, "No such session.")
        return view, record

    async def refresh(self, lock: SessionLock, record: SessionRecord, data: SessionData) -> SessionState:
        """Re-read the thread, cache its status in the record, and return the patient's view of it."""
        view = await self.inspect(lock.session_id)
        record = record.model_copy(update={"data": data})
        state = self.state_of(view, record, clinician=False)
        data.status, data.asked, data.red_flag = state.status, state.progress.asked, state.red_flag
        await self.store.save(lock.session_id, lock.owner, data)
        return state

    async def list_items(self) -> list[SessionListItem]:
        return [
            SessionListItem(
                session_id=r.session_id,
                patient_id=r.patient_id,
                status=r.data.status,
                questions_asked=r.data.asked,
                red_flag=r.data.red_flag,
                updated_at=datetime.fromtimestamp(r.updated_at, UTC),
                approved=r.data.approved_at is not None,
            )
            for r in await self.store.list()
        ]

    # -- commands ------------------------------------------------------------------------------

    async def create(self, request: CreateSessionRequest) -> tuple[str, str, SessionState]:
        """A new session run to its first question; returns (id, patient token, state)."""
        patient_id = request.patient_id or (request.launch.patient if request.launch else None)
        if patient_id is None:
            raise Problem(422, "Give a patient_id (or an EHR launch context naming the patient).")
        if request.launch is not None:
            if request.patient_id and request.patient_id != request.launch.patient:
                raise Problem(422, "patient_id and the launch context name different patients.")
            base = self.config.fhir_base
            if base is not None and request.launch.iss.rstrip("/") != base.rstrip("/"):
                raise Problem(422, "The launch comes from a FHIR server this service is not configured for.")
        source = self.record_sources(patient_id)
        try:
            await source.fetch_record(patient_id)
        except PatientNotFoundError as exc:
            raise Problem(422, "No patient with that id in the record source.", kind="unknown-patient") from exc
        except RecordError:
            log.warning("record unavailable at session creation; the intake goes on and flags it")
        session_id = uuid.uuid4().hex
        nonce = secrets.token_urlsafe(12)
        owner = f"{self.instance}:{secrets.token_hex(4)}"
        data = SessionData(reason_for_visit=request.reason_for_visit, launch=request.launch)
        await self.store.create(session_id, patient_id, nonce, data, owner, self.config.lock_lease_s)
        lock = SessionLock(self, session_id, owner)
        record = await self.store.get(session_id)
        assert record is not None
        start = IntakeInput(
            patient_id=patient_id,
            reason_for_visit=request.reason_for_visit,
            max_questions=request.max_questions
            if request.max_questions is not None
            else self.config.settings.max_questions,
            model_spec=self.config.settings.model,
        )

        async def run() -> SessionState:
            try:
                await self.advance(session_id, start, self.context(patient_id, source))
                return await self.refresh(lock, record, data)
            finally:
                await lock.release()

        state: SessionState = await asyncio.shield(self.spawn(run()))
        token = issue_token(self.config.secret.get_secret_value(), session_id, nonce, self.config.token_ttl_s)
        log.info("session %s created", session_id)
        return session_id, token, state

    async def prepare_turn(
        self, lock: SessionLock, message: PatientMessage, expected_turn: int | None
    ) -> tuple[SessionRecord, Command[Any], IntakeState] | SessionState:
        """Check a turn may run (under the lock): the resume payload, or the state when it is a retry."""
        view, record = await self.load(lock.session_id)
        if view.status == "finished" or view.state is None:
            raise Problem(409, "This intake has ended; no more answers can be added.", kind="session-ended")
        if view.status == "in_progress":  # a process died mid-turn: finish that step first
            view = await self.settle(lock.session_id, view)
            if view.status == "finished" or view.state is None:
                raise Problem(409, "This intake has ended; no more answers can be added.", kind="session-ended")
        pending = view.pending
        if pending is None or view.state is None:
            raise Problem(409, "The session is not waiting for an answer.", kind="not-waiting")
        if expected_turn is not None and expected_turn != pending.turn:
            turns = view.state.turns
            if expected_turn < pending.turn and turns[expected_turn - 1].answer == clean_answer(message.text):
                return self.state_of(view, record, clinician=False)  # a retry of a recorded answer
            raise Problem(
                409,
                f"That answer is for question {expected_turn}, but the session is at question {pending.turn}.",
                kind="turn-mismatch",
            )
        return record, Command(resume=message.model_dump()), view.state

    async def run_turn(
        self, lock: SessionLock, record: SessionRecord, payload: Any, state: IntakeState, emit: Emit = _no_emit
    ) -> SessionState:
        """Resume the graph with the patient's message; always releases the lock."""
        try:
            await self.advance(lock.session_id, payload, self.context(state.patient_id), emit)
            return await self.refresh(lock, record, record.data)
        finally:
            await lock.release()

    async def stop(self, session_id: str, *, escalate: bool, by_clinician: bool) -> SessionState:
        """End the interview now (summary from what was said), or escalate it to the care team."""
        lock = await self.lock(session_id)
        try:
            view, record = await self.load(session_id)
            data = record.data
            if view.status == "finished":
                if not escalate:
                    raise Problem(409, "This intake has already ended.", kind="session-ended")
            else:
                assert view.state is not None
                context = self.context(view.state.patient_id)
                view = await self.settle(session_id, view)  # a process died mid-turn: finish that step
                if view.status != "finished":
                    request = StopRequest(
                        stop="escalated_by_clinician"
                        if escalate
                        else ("ended_by_clinician" if by_clinician else "patient_ended"),
                        patient_message=CLINICIAN_ESCALATION_MESSAGE if escalate else None,
                    )
                    # The graph's own resume path: the pending question is dropped and the router,
                    # which sees the stop request, sends the thread to summarize.
                    stop: Command[Any] = Command(resume=request.model_dump())
                    await asyncio.shield(self.spawn(self.advance(session_id, stop, context)))
                data.ended = not escalate
            data.escalated = data.escalated or escalate
            log.info(
                "session %s %s by %s",
                session_id,
                "escalated" if escalate else "ended",
                "clinician" if by_clinician else "patient",
            )
            return await self.refresh(lock, record, data)
        finally:
            await lock.release()


def _api_status(view: SessionView, data: SessionData) -> ApiStatus:
    if view.status != "finished":
        return "awaiting_answer"
    if data.escalated or (view.state is not None and view.state.stop_reason == "red_flag"):
        return "escalated"
    if data.ended:
        return "ended"
    return "finished"


def _graph_images(state: IntakeState | None) -> dict[str, ImageRecord]:
    """The intake's records of attached images, keyed by stored file name."""
    return {Path(record.path).name: record for record in (state.images if state is not None else [])}
