"""Who may call what: clinician keys (shared or named), and per-session patient tokens.

Both arrive as `Authorization: Bearer ...` (never in a URL, so never in an access log). Comparisons
are constant-time. A patient token opens only its own session, and only while its nonce is the
one the session's record holds.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from previsit.service.problems import Problem
from previsit.service.sessions import SessionService
from previsit.service.tokens import TokenError, verify_token

Role = Literal["patient", "clinician"]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="previsit"'}


@dataclass(frozen=True)
class Caller:
    role: Role
    name: str


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Problem(
            401, "Send a credential as 'Authorization: Bearer ...'.", kind="no-credential", headers=_CHALLENGE
        )
    return value.strip()


def _service(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


def _as_clinician(request: Request, credential: str) -> Caller | None:
    """The clinician this credential is: a named key's name, or the shared key's `X-Clinician-Name`."""
    config = _service(request).config
    named = config.clinician_keys.name_for(credential)
    if named is not None:
        return Caller("clinician", named)
    shared = config.clinician_key
    if shared is not None and hmac.compare_digest(
        credential.encode("utf-8"), shared.get_secret_value().encode("utf-8")
    ):
        return Caller("clinician", _clinician_name(request))
    return None


def _clinician_name(request: Request) -> str:
    name = request.headers.get("x-clinician-name", "").strip()
    return name[:100] if name.isprintable() and name else "clinician"


async def clinician(request: Request) -> Caller:
    """Dependency: a clinician key (shared or named), or 401."""
    caller = _as_clinician(request, _bearer(request))
    if caller is None:
        raise Problem(401, "The clinician credential is not valid.", kind="bad-credential", headers=_CHALLENGE)
    return caller


async def _patient_token(request: Request, session_id: str, credential: str) -> Caller:
    service = _service(request)
    try:
        claims = verify_token(service.config.secret.get_secret_value(), credential, session_id)
    except TokenError as exc:
        raise Problem(
            exc.status, str(exc), kind="bad-token", headers=_CHALLENGE if exc.status == 401 else None
        ) from exc
    record = await service.store.get(session_id)
    if record is None:
        raise Problem(404, "No such session.")
    if not hmac.compare_digest(record.token_nonce.encode("utf-8"), claims.n.encode("utf-8")):
        raise Problem(401, "This session link is no longer valid.", kind="bad-token", headers=_CHALLENGE)
    return Caller("patient", "patient")


async def patient(request: Request, session_id: str) -> Caller:
    """Dependency: this session's patient token, or 401/403."""
    return await _patient_token(request, session_id, _bearer(request))


async def patient_or_clinician(request: Request, session_id: str) -> Caller:
    """Dependency: this session's patient token or the clinician key."""
    credential = _bearer(request)
    caller = _as_clinician(request, credential)
    if caller is not None:
        return caller
    return await _patient_token(request, session_id, credential)
