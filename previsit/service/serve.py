"""`previsit serve`: run the HTTP service with uvicorn.

uvicorn's own access log is off (it prints query strings); the app logs method, path, status and
time instead. Secrets are never printed: when the clinician key was generated, the log names the
file that holds it.
"""

from __future__ import annotations

import logging
import os

import uvicorn

from previsit.config import Settings
from previsit.service.app import create_app
from previsit.service.config import CLINICIAN_KEY_FILE, load_service_config

log = logging.getLogger("previsit.service")

DEFAULT_PORT = 8765


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
    if "PREVISIT_CLINICIAN_KEY" not in os.environ:
        log.info("clinician key: in %s (or set PREVISIT_CLINICIAN_KEY)", settings.data_dir / CLINICIAN_KEY_FILE)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: put TLS in front of it; patient tokens are bearer credentials", host)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=25,
    )
    return 0
