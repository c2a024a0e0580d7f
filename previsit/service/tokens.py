"""Per-session patient tokens: HMAC-SHA256 over (session id, expiry, nonce), checked in constant time.

A token opens exactly one session until it expires. The nonce is also kept in the session's
metadata, so issuing a new link (or ending the session's access) revokes the old one.
Format: ``v1.<base64url payload JSON>.<base64url signature>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from pydantic import BaseModel, ValidationError

_VERSION = "v1"


class TokenError(Exception):
    """A token that is malformed, forged or expired (status 401) or for another session (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class TokenClaims(BaseModel):
    sid: str
    exp: int
    n: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, message: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), message.encode("ascii"), hashlib.sha256).digest()


def issue_token(secret: str, session_id: str, nonce: str, ttl_s: int, now: float | None = None) -> str:
    claims = TokenClaims(sid=session_id, exp=int((now or time.time()) + ttl_s), n=nonce)
    body = f"{_VERSION}.{_b64(claims.model_dump_json().encode('utf-8'))}"
    return f"{body}.{_b64(_sign(secret, body))}"


def verify_token(secret: str, token: str, session_id: str, now: float | None = None) -> TokenClaims:
    """The claims of a valid token for `session_id`; raises `TokenError` otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise TokenError("The session token is not valid.")
    body = f"{parts[0]}.{parts[1]}"
    try:
        signature = _unb64(parts[2])
        claims = TokenClaims.model_validate(json.loads(_unb64(parts[1])))
    except (ValueError, ValidationError) as exc:
        raise TokenError("The session token is not valid.") from exc
    if not hmac.compare_digest(signature, _sign(secret, body)):
        raise TokenError("The session token is not valid.")
    if claims.exp < (now or time.time()):
        raise TokenError("The session link has expired; ask the clinic for a new one.")
    if not hmac.compare_digest(claims.sid.encode("utf-8"), session_id.encode("utf-8")):
        raise TokenError("This token belongs to another session.", status=403)
    return claims
