"""The FastAPI application factory: everything a process needs lives on `app.state`, nothing global.

`create_app(config)` opens the session database (SQLite or Postgres) and loads the model in the
app's lifespan, so one process can host several apps (tests do) and a restarted process picks up
every session from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from previsit.config import build_image_triager, build_model, build_record_source
from previsit.service.backend import open_backend
from previsit.service.config import ServiceConfig
from previsit.service.middleware import AccessLogMiddleware, BodyLimitMiddleware
from previsit.service.problems import install_problem_handlers
from previsit.service.routes import router
from previsit.service.sessions import RecordSourceFactory, SessionService
from tools.fhir.record import RecordSource
from tools.imaging.triage import ImageTriager
from tools.models.protocol import ChatModel

log = logging.getLogger("previsit.service")

_UNSET = object()
SHUTDOWN_GRACE_S = 20.0


def _default_record_sources(config: ServiceConfig) -> RecordSourceFactory:
    def make(patient_id: str) -> RecordSource:
        return build_record_source(config.settings, bound_patient=patient_id, fhir_base=config.fhir_base)

    return make


def _install_docs(app: FastAPI) -> None:
    """Swagger UI served from the `swagger-ui-bundle` wheel: no CDN, nothing fetched at run time."""
    app.mount("/docs/assets", StaticFiles(directory=Path(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="previsit API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def _triage_unavailable(message: str) -> None:
    log.warning("image triage model unavailable; uploads are kept untriaged and flagged: %s", message)


def _install_pages(app: FastAPI) -> None:
    """The patient and clinician pages (previsit.service.pages), when that module is present."""
    if importlib.util.find_spec("previsit.service.pages") is None:
        return
    from previsit.service import pages

    make_router = getattr(pages, "pages_router", None)
    if callable(make_router):
        app.include_router(make_router())


def create_app(
    config: ServiceConfig,
    *,
    model: ChatModel | object | None = _UNSET,
    record_sources: RecordSourceFactory | None = None,
    image_triager: ImageTriager | object | None = _UNSET,
) -> FastAPI:
    """The previsit HTTP service. `model`/`record_sources`/`image_triager` replace what the config names (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if model is _UNSET:
            chat_model = await asyncio.to_thread(build_model, config.settings.model, config.settings)
        else:
            chat_model = cast("ChatModel | None", model)
        triager = (
            build_image_triager(config.settings, on_unavailable=_triage_unavailable)
            if image_triager is _UNSET
            else cast("ImageTriager | None", image_triager)
        )
        async with open_backend(config.db, lock_timeout_s=config.settings.lock_timeout_s) as backend:
            service = SessionService(
                config,
                backend,
                chat_model,
                record_sources or _default_record_sources(config),
                triager,
            )
            app.state.sessions = service
            log.info("previsit service ready (%s, model %s)", backend.description, config.settings.model)
            try:
                yield
            finally:
                if service.tasks:  # let turns in flight reach their checkpoint
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.gather(*service.tasks, return_exceptions=True), SHUTDOWN_GRACE_S)

    app = FastAPI(
        title="previsit",
        summary="Pre-visit intake as a service: patients answer, clinicians review what goes back to the EHR.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    install_problem_handlers(app)
    app.include_router(router)
    _install_docs(app)
    _install_pages(app)
    app.add_middleware(BodyLimitMiddleware, json_limit=config.json_limit_bytes, upload_limit=config.upload_limit_bytes)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Clinician-Name"],
        )
    app.add_middleware(AccessLogMiddleware)
    return app
