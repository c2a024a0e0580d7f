"""`previsit serve`: run the HTTP service with uvicorn.

uvicorn's own access log is off (it prints query strings); the app logs method, path, status and
time instead. Secrets are never printed: when the clinician key was generated, the log names the
file that holds it.
"""

from __future__ import annotations

import logging
import os

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from previsit.config import Settings
from previsit.service.app import create_app
from previsit.service.config import CLINICIAN_KEY_FILE, load_service_config

log = logging.getLogger("previsit.service")

DEFAULT_PORT = 8765


class QuietErrors:
    """Outermost wrapper: an error the app already answered with a 500 is logged by type only.

    uvicorn would otherwise print the traceback, whose exception messages may quote patient input.
    Start-up (lifespan) errors still propagate, so a server that cannot open its database stops.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            log.error("request failed: %s on %s %s", type(exc).__name__, scope["method"], scope["path"])


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    db: str | None = None,
    fhir_base: str | None = None,
    cors_origins: list[str] | None = None,
    log_level: str = "info",
) -> int:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_service_config(settings, db=db, fhir_base=fhir_base, cors_origins=cors_origins)
    named = len(config.clinician_keys.digests)
    if named:
        log.info("clinician keys: %d named (their names are recorded on edits and approvals)", named)
    if config.clinician_key is None:
        log.info("shared clinician key: off (named keys only; set PREVISIT_CLINICIAN_KEY to turn it on)")
    elif "PREVISIT_CLINICIAN_KEY" not in os.environ:
        log.info("clinician key: in %s (or set PREVISIT_CLINICIAN_KEY)", settings.data_dir / CLINICIAN_KEY_FILE)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: put TLS in front of it; patient tokens are bearer credentials", host)
    uvicorn.run(
        QuietErrors(create_app(config)),
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=25,
    )
    return 0
