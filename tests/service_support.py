"""Shared set-up of the service tests: an app on a real database driven through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from previsit.config import Settings
from previsit.service.app import create_app
from previsit.service.config import ServiceConfig, load_service_config
from previsit.service.sessions import SessionService
from tools.models.protocol import ChatRequest, ModelError, SchemaT, StructuredReply

MALIK = "57df2519-872e-4b5e-8743-264db11d4e5b"
KARENA = "1f99a0cb-594b-476a-b9cb-502594c1ee6b"
CLINICIAN_KEY = "clinician-test-key"
CLINICIAN = {"Authorization": f"Bearer {CLINICIAN_KEY}"}
PROBLEM = "application/problem+json"
ANSWERS = [
    "I have had bruises on my shins for two weeks, they appeared without any knock.",
    "It started gradually about two weeks ago.",
    "Mostly on both shins and a few on my forearms.",
    "They are a bit tender, maybe 2 out of 10.",
    "Nothing makes it better or worse that I know of.",
    "I take warfarin and aspirin every day.",
]


def make_config(data_dir: Path, db: str | None = None, **overrides: Any) -> ServiceConfig:
    settings = Settings(data_dir=data_dir, model="none", max_questions=overrides.pop("max_questions", 4))
    config = load_service_config(settings, db=db, environ={"PREVISIT_CLINICIAN_KEY": CLINICIAN_KEY})
    return config.model_copy(update=overrides)


class GatedModel:
    """A model that answers nothing (the graph falls back to its templates) once its gate opens.

    While the gate is shut every call waits, which holds a turn open long enough for a second
    request to meet it. That is the one thing it fakes: the timing of a slow model.
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    @property
    def model_id(self) -> str:
        return "gated (no replies)"

    @property
    def is_demo(self) -> bool:
        return False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        await self.gate.wait()
        raise ModelError("the gated test model gives no replies")


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    config: ServiceConfig

    @property
    def sessions(self) -> SessionService:
        service: SessionService = self.app.state.sessions
        return service

    async def create(self, patient_id: str = MALIK, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/api/sessions", json={"patient_id": patient_id, **body}, headers=CLINICIAN)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def answer(self, created: dict[str, Any], text: str, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/sessions/{created['session_id']}/messages",
            json={"text": text, **extra},
            headers=patient_headers(created),
        )

    async def state(self, session_id: str, headers: dict[str, str] = CLINICIAN) -> dict[str, Any]:
        response = await self.client.get(f"/api/sessions/{session_id}", headers=headers)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    async def finish(self, created: dict[str, Any]) -> dict[str, Any]:
        state = created["state"]
        for text in ANSWERS:
            if state["status"] != "awaiting_answer":
                break
            response = await self.answer(created, text, turn=state["question"]["turn"])
            assert response.status_code == 200, response.text
            state = response.json()
        assert state["status"] == "finished", state
        return state


def patient_headers(created: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {created['patient_token']}"}


@asynccontextmanager
async def running(config: ServiceConfig, **kwargs: Any) -> AsyncIterator[Api]:
    app = create_app(config, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as a real server: a 500
        async with httpx.AsyncClient(transport=transport, base_url="http://previsit.test", timeout=60) as client:
            yield Api(app, client, config)


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """Server-sent events as (event, parsed JSON data), in order."""
    events: list[tuple[str, Any]] = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events
