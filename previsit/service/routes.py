"""The HTTP API: sessions, turns (plain JSON or server-sent events), review and write-back."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from langgraph.types import Command

from graphs.patient_message import ImageAttachment, PatientMessage
from graphs.state import IntakeState
from previsit.config import build_fhir_auth
from previsit.service import review
from previsit.service.auth import Caller, clinician, patient, patient_or_clinician
from previsit.service.problems import Problem, problem_body
from previsit.service.schemas import (
    Approval,
    CreatedSession,
    CreateSessionRequest,
    MessageRequest,
    SessionList,
    SessionState,
    SummaryPatch,
    WriteBackResponse,
)
from previsit.service.sessions import SessionLock, SessionService
from previsit.service.store import ImageRecord, SessionRecord, WriteBackRecord
from previsit.service.uploads import render_png, store_image
from tools.fhir.auth import AuthConfigError
from tools.fhir.record import RecordError
from tools.fhir.server_source import FhirRecordSource
from tools.fhir.writeback import write_back_summary
from tools.imaging.errors import ImageInputError

log = logging.getLogger("previsit.service")
router = APIRouter()

PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"description": "Problem details (RFC 9457)", "content": {"application/problem+json": {}}}
    for code in (401, 403, 404, 409, 413, 422)
}
SummaryFormat = Literal["json", "markdown", "fhir"]


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


def _wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(
    queue: asyncio.Queue[tuple[str, Any] | None], task: asyncio.Task[SessionState]
) -> AsyncIterator[bytes]:
    while (item := await queue.get()) is not None:
        yield _sse(*item)
    try:
        state = task.result()
    except Problem as exc:
        yield _sse("error", exc.body())
    except Exception as exc:
        log.error("turn failed: %s", type(exc).__name__)
        yield _sse("error", problem_body(500, "The turn could not be completed; answers already saved are kept."))
    else:
        yield _sse("state", state.model_dump(mode="json"))


async def _run_turn(
    request: Request, lock: SessionLock, record: SessionRecord, state: IntakeState, message: PatientMessage
) -> Response | SessionState:
    """Run a prepared turn: streamed as SSE when asked for, else the new state."""
    service = _service(request)
    payload: Command[Any] = Command(resume=message.model_dump())
    if _wants_sse(request):
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

        async def emit(event: str, data: dict[str, Any]) -> None:
            await queue.put((event, data))

        lock.handed_over = True
        task = service.spawn(service.run_turn(lock, record, payload, state, emit))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        return StreamingResponse(
            _stream(queue, task),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    lock.handed_over = True
    task = service.spawn(service.run_turn(lock, record, payload, state))
    result: SessionState = await asyncio.shield(task)
    return result


def _state_response(request: Request, state: SessionState) -> Response | SessionState:
    if _wants_sse(request):
        return Response(_sse("state", state.model_dump(mode="json")), media_type="text/event-stream")
    return state


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.post("/api/sessions", status_code=201, response_model=CreatedSession, responses=PROBLEMS)
async def create_session(
    body: CreateSessionRequest, request: Request, _: Annotated[Caller, Depends(clinician)]
) -> CreatedSession:
    """Start an intake (optionally from an EHR launch) and run it to its first question."""
    session_id, token, state = await _service(request).create(body)
    return CreatedSession(
        session_id=session_id,
        patient_token=token,
        patient_url=f"/patient/{session_id}#token={token}",
        state=state,
    )


@router.get("/api/sessions", response_model=SessionList, responses=PROBLEMS)
async def list_sessions(request: Request, _: Annotated[Caller, Depends(clinician)]) -> SessionList:
    return SessionList(sessions=await _service(request).list_items())


@router.get("/api/sessions/{session_id}", response_model=SessionState, responses=PROBLEMS)
async def get_session(
    session_id: str, request: Request, caller: Annotated[Caller, Depends(patient_or_clinician)]
) -> SessionState:
    service = _service(request)
    view, record = await service.load(session_id)
    if view.status == "in_progress":
        await service.recover(session_id)
        view, record = await service.load(session_id)
    return service.state_of(view, record, clinician=caller.role == "clinician")


@router.post(
    "/api/sessions/{session_id}/messages",
    response_model=SessionState,
    responses={**PROBLEMS, 200: {"content": {"application/json": {}, "text/event-stream": {}}}},
)
async def post_message(
    session_id: str, body: MessageRequest, request: Request, _: Annotated[Caller, Depends(patient)]
) -> Response | SessionState:
    """Answer the open question. `Accept: text/event-stream` streams `question_delta` events, then `state`."""
    service = _service(request)
    message = PatientMessage(text=body.text)
    lock = await service.lock(session_id)
    try:
        prepared = await service.prepare_turn(lock, message, body.turn)
        if isinstance(prepared, SessionState):
            await lock.release()
            return _state_response(request, prepared)
        record, _payload, state = prepared
        return await _run_turn(request, lock, record, state, message)
    except BaseException:
        if not lock.handed_over:
            await lock.release()
        raise


@router.post(
    "/api/sessions/{session_id}/images",
    response_model=SessionState,
    responses={**PROBLEMS, 200: {"content": {"application/json": {}, "text/event-stream": {}}}},
)
async def post_image(
    session_id: str,
    request: Request,
    _: Annotated[Caller, Depends(patient)],
    file: Annotated[UploadFile, File(description="The image (PNG, JPEG, GIF, WebP or DICOM).")],
    text: Annotated[str, Form(max_length=20_000)] = "",
    modality: Annotated[str | None, Form(max_length=40)] = None,
) -> Response | SessionState:
    """Answer the open question with an image (and optional text)."""
    service = _service(request)
    config = service.config
    lock = await service.lock(session_id)
    stored = None
    try:
        prepared = await service.prepare_turn(lock, PatientMessage(text=text), None)
        assert not isinstance(prepared, SessionState)
        record, _payload, state = prepared
        directory = config.uploads_dir / session_id
        stored = await store_image(file, directory, config.upload_limit_bytes)
        filename = (file.filename or "image")[:200]
        attachment = ImageAttachment(
            path=str(stored.path), filename=filename, modality=modality, content_type=stored.media_type
        )
        record.data.images.append(
            ImageRecord(
                id=secrets.token_hex(8),
                filename=filename,
                stored_name=stored.path.name,
                turn_id=f"turn-{len(state.turns) + 1}",
                content_type=stored.media_type,
                modality=modality,
                size=stored.size,
                uploaded_at=datetime.now(UTC),
            )
        )
        return await _run_turn(request, lock, record, state, PatientMessage(text=text, images=[attachment]))
    except BaseException:
        if not lock.handed_over:
            await lock.release()
        raise


@router.get(
    "/api/sessions/{session_id}/images/{image_id}",
    responses={**PROBLEMS, 200: {"content": {"image/png": {}, "image/jpeg": {}, "application/dicom": {}}}},
)
async def get_image(
    session_id: str, image_id: str, request: Request, _: Annotated[Caller, Depends(clinician)]
) -> Response:
    service = _service(request)
    record = await service.store.get(session_id)
    image = next((i for i in record.data.images if i.id == image_id), None) if record else None
    if image is None:
        raise Problem(404, "No such image.")
    path = service.config.uploads_dir / session_id / image.stored_name
    if not path.is_file():
        raise Problem(404, "The image file is no longer stored.")
    headers = {"Cache-Control": "private, no-store"}
    if image.content_type == "application/dicom":  # browsers cannot show DICOM: send the windowed render
        try:
            png = await asyncio.to_thread(render_png, path)
        except ImageInputError as exc:
            raise Problem(422, "The stored DICOM file cannot be rendered.", kind="bad-image") from exc
        return Response(png, media_type="image/png", headers=headers)
    return FileResponse(path, media_type=image.content_type, headers=headers)


@router.get(
    "/api/sessions/{session_id}/summary",
    responses={**PROBLEMS, 200: {"content": {"application/json": {}, "text/markdown": {}}}},
)
async def get_summary(
    session_id: str,
    request: Request,
    _: Annotated[Caller, Depends(clinician)],
    format: Annotated[SummaryFormat, Query(description="json, markdown or fhir (transaction Bundle)")] = "json",
    version: Annotated[Literal["edited", "original"], Query()] = "edited",
) -> Response:
    """The clinician summary, with the clinician's edits applied unless `version=original`."""
    view, record = await _service(request).load(session_id)
    state = view.state
    summary = review.finished_summary(state)
    assert state is not None
    if version == "edited":
        summary = review.edited_summary(state, record.data)
    if format == "markdown":
        text = review.markdown_with_review(summary, state, record.data)
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
    if format == "fhir":
        return JSONResponse(review.fhir_bundle(summary, state, session_id), media_type="application/fhir+json")
    return JSONResponse(summary.model_dump(mode="json"))


@router.patch("/api/sessions/{session_id}/summary", responses=PROBLEMS)
async def patch_summary(
    session_id: str, body: SummaryPatch, request: Request, caller: Annotated[Caller, Depends(clinician)]
) -> JSONResponse:
    """Edit statements (text null removes one) and/or set the clinician note; withdraws an approval."""
    service = _service(request)
    lock = await service.lock(session_id)
    try:
        view, record = await service.load(session_id)
        state = view.state
        review.finished_summary(state)
        assert state is not None
        summary = review.record_edits(state, record.data, body.edits, caller.name)
        if body.clinician_note is not None:
            record.data.clinician_note = body.clinician_note or None
        await service.refresh(lock, record, record.data)
        log.info("session %s summary edited (%d edits)", session_id, len(body.edits))
        return JSONResponse(summary.model_dump(mode="json"))
    finally:
        await lock.release()


@router.post("/api/sessions/{session_id}/approve", response_model=Approval, responses=PROBLEMS)
async def approve(session_id: str, request: Request, caller: Annotated[Caller, Depends(clinician)]) -> Approval:
    service = _service(request)
    lock = await service.lock(session_id)
    try:
        view, record = await service.load(session_id)
        review.finished_summary(view.state)
        record.data.approved_at = datetime.now(UTC)
        record.data.approved_by = caller.name
        await service.refresh(lock, record, record.data)
        log.info("session %s approved", session_id)
        return Approval(approved_at=record.data.approved_at, approved_by=caller.name)
    finally:
        await lock.release()


@router.post("/api/sessions/{session_id}/writeback", response_model=WriteBackResponse, responses=PROBLEMS)
async def writeback(session_id: str, request: Request, _: Annotated[Caller, Depends(clinician)]) -> WriteBackResponse:
    """Send the approved (edited) summary to the FHIR server; sending it again creates nothing new."""
    service = _service(request)
    config = service.config
    lock = await service.lock(session_id)
    try:
        view, record = await service.load(session_id)
        state = view.state
        summary = review.finished_summary(state)
        assert state is not None
        if record.data.approved_at is None:
            raise Problem(409, "Approve the summary before writing it back.", kind="not-approved")
        if config.fhir_base is None:
            raise Problem(409, "No FHIR server is configured (start the service with --fhir-base).", kind="no-fhir")
        summary = review.edited_summary(state, record.data)
        try:
            source = FhirRecordSource(
                config.fhir_base, auth=build_fhir_auth(config.settings), timeout_s=config.settings.fhir_timeout_s
            )
            async with source.client() as client:
                found = await source.resolve_patient(client, state.patient_id)
                result = await write_back_summary(
                    client,
                    summary,
                    state.turns,
                    session_id,
                    f"Patient/{found['id']}",
                    await source.capabilities(client),
                )
        except (AuthConfigError, RecordError) as exc:
            log.warning("write-back of session %s failed: %s", session_id, type(exc).__name__)
            raise Problem(502, f"The FHIR server did not take the summary: {exc}", kind="writeback-failed") from exc
        record.data.writebacks.append(
            WriteBackRecord(at=datetime.now(UTC), written=result.created, already_present=result.existing)
        )
        await service.refresh(lock, record, record.data)
        return WriteBackResponse(
            written=result.created, already_present=result.existing, mode=result.mode, notes=result.notes
        )
    finally:
        await lock.release()


@router.post("/api/sessions/{session_id}/end", response_model=SessionState, responses=PROBLEMS)
async def end_session(
    session_id: str, request: Request, caller: Annotated[Caller, Depends(patient_or_clinician)]
) -> SessionState:
    """Stop the interview now; the summary is built from what was said."""
    return await _service(request).stop(session_id, escalate=False, by_clinician=caller.role == "clinician")


@router.post("/api/sessions/{session_id}/escalate", response_model=SessionState, responses=PROBLEMS)
async def escalate_session(session_id: str, request: Request, _: Annotated[Caller, Depends(clinician)]) -> SessionState:
    """Stop the interview and tell the patient their care team will contact them directly."""
    return await _service(request).stop(session_id, escalate=True, by_clinician=True)
