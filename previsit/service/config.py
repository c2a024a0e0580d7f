"""What a service process needs to know, gathered once at start-up and kept on `app.state`.

Secrets come from the environment when set; otherwise they are generated once and kept in the data
directory (mode 0600), so a restart keeps every patient link and the clinician key working.
Named clinician keys (`previsit clinician-key NAME`) live in their own file; once there are any,
the shared key is off unless `PREVISIT_CLINICIAN_KEY` sets one explicitly.
Several processes sharing one Postgres database must share the same secret: set
`PREVISIT_SERVICE_SECRET` for all of them (or point them at the same data directory).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from graphs.checkpoint import DB_FILENAME
from previsit.config import Settings
from previsit.service.clinician_keys import ClinicianKeys, load_clinician_keys

SECRET_FILE = "service_secret"
CLINICIAN_KEY_FILE = "clinician_key"
NAMED_CLINICIAN_KEYS_FILE = "named_clinician_keys"
MB = 1024 * 1024


class ServiceConfig(BaseModel):
    """Everything the HTTP service is configured with."""

    settings: Settings = Field(default_factory=Settings)
    db: str = Field(description="SQLite file path, or a postgresql:// URL for the LangGraph Postgres checkpointer.")
    secret: SecretStr = Field(description="Signs patient tokens (HMAC-SHA256).")
    clinician_key: SecretStr | None = Field(
        description="The shared bearer credential of the clinician endpoints; None when only named keys work."
    )
    clinician_keys: ClinicianKeys = Field(
        default_factory=ClinicianKeys, description="Named clinician keys; their name is recorded on approvals."
    )
    fhir_base: str | None = Field(default=None, description="Resolved FHIR base URL (records and write-back).")
    token_ttl_s: int = Field(default=72 * 3600, gt=0, description="How long a patient link stays valid.")
    json_limit_bytes: int = Field(default=256 * 1024, gt=0, description="Largest JSON request body.")
    upload_limit_bytes: int = Field(default=20 * MB, gt=0, description="Largest image upload (whole request).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty = closed.")
    lock_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A turn's lock on its session expires this long after the last heartbeat "
        "(so a killed process frees its sessions).",
    )

    @property
    def is_postgres(self) -> bool:
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"


def named_keys_file(data_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where named clinician keys are kept: `PREVISIT_CLINICIAN_KEYS_FILE`, else in the data directory."""
    env = os.environ if environ is None else environ
    given = env.get("PREVISIT_CLINICIAN_KEYS_FILE")
    return Path(given) if given else data_dir / NAMED_CLINICIAN_KEYS_FILE


def _secret_from_file(path: Path, nbytes: int = 32) -> str:
    """Read a secret kept in the data directory, creating it (0600) on first use."""
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def load_service_config(
    settings: Settings,
    *,
    db: str | None = None,
    fhir_base: str | None = None,
    cors_origins: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceConfig:
    """A `ServiceConfig` from settings, the environment and the data directory's stored secrets."""
    env = os.environ if environ is None else environ
    data_dir = settings.data_dir
    secret = env.get("PREVISIT_SERVICE_SECRET") or _secret_from_file(data_dir / SECRET_FILE)
    keys_file = named_keys_file(data_dir, env)
    named_on_purpose = bool(env.get("PREVISIT_CLINICIAN_KEYS_FILE"))  # then a missing file is an error
    named = load_clinician_keys(keys_file) if named_on_purpose or keys_file.exists() else ClinicianKeys()
    clinician = env.get("PREVISIT_CLINICIAN_KEY") or (
        None if named.digests else _secret_from_file(data_dir / CLINICIAN_KEY_FILE)
    )
    values: dict[str, object] = {
        "settings": settings,
        "db": db or env.get("PREVISIT_DB") or str(data_dir / DB_FILENAME),
        "secret": secret,
        "clinician_key": clinician,
        "clinician_keys": named,
        "fhir_base": fhir_base,
        "cors_origins": cors_origins or [],
    }
    for field, key in (
        ("token_ttl_s", "PREVISIT_SERVICE_TOKEN_TTL_S"),
        ("json_limit_bytes", "PREVISIT_SERVICE_JSON_LIMIT"),
        ("upload_limit_bytes", "PREVISIT_SERVICE_UPLOAD_LIMIT"),
        ("lock_lease_s", "PREVISIT_SERVICE_LOCK_LEASE_S"),
    ):
        if key in env:
            values[field] = env[key]
    return ServiceConfig.model_validate(values)
