"""How previsit authenticates to a FHIR server: no auth, a static bearer token, or SMART on FHIR
backend services (OAuth2 ``client_credentials`` with a signed JWT client assertion).

Each scheme is an `FhirAuth`: the client asks it for the ``Authorization`` header of every request
and tells it when the server answered 401 (a cached token is then dropped and fetched again once).

Secrets (a static token, a private key, an access token, a client assertion) are never part of a
``repr``, a ``str``, a log line or an error message: they are kept in `pydantic.SecretStr` or in
private attributes, and `FhirAuth.redact` removes them from any text the server sends back before
that text goes into an error.

SMART backend services, as `SmartBackendAuth` does it:

1. The token endpoint comes from the configuration, else from ``{base}/.well-known/smart-configuration``,
   else from the CapabilityStatement's ``oauth-uris`` extension.
2. A client assertion is signed with the client's private key (RS384 for an RSA key, ES384 for an
   EC key; `alg` overrides): ``iss = sub = client_id``, ``aud = token endpoint``, ``exp`` at most
   five minutes ahead, a fresh ``jti``; ``kid`` in the header when configured.
3. ``POST`` the form ``grant_type=client_credentials``, ``scope``, ``client_assertion_type``,
   ``client_assertion``; the access token is cached until ``expires_in`` (less a margin) and reused.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

log = logging.getLogger("previsit.fhir.auth")

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OAUTH_URIS_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
DEFAULT_SMART_SCOPE = "system/*.read system/*.write"
REDACTED = "***"

SmartAlgorithm = Literal["RS384", "ES384"]


class AuthConfigError(ValueError):
    """The auth settings are unusable (unreadable key, unsupported key type). Names no secret."""


@runtime_checkable
class FhirAuth(Protocol):
    """An authentication scheme for FHIR requests."""

    def describe(self) -> str:
        """What this scheme is, for messages; never a secret."""
        ...

    async def authorization(self, http: httpx.AsyncClient, base_url: str) -> str | None:
        """The ``Authorization`` header value for the next request, or None for no header."""
        ...

    def invalidate(self) -> bool:
        """The server refused the credentials: drop what is cached. True when a fresh attempt may help."""
        ...

    def redact(self, text: str) -> str:
        """`text` with every secret this scheme knows replaced by ``***``."""
        ...


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


class NoAuth:
    """No ``Authorization`` header (an open sandbox)."""

    def describe(self) -> str:
        return "no authentication"

    async def authorization(self, http: httpx.AsyncClient, base_url: str) -> str | None:
        return None

    def invalidate(self) -> bool:
        return False

    def redact(self, text: str) -> str:
        return text

    def __repr__(self) -> str:
        return "NoAuth()"


class BearerTokenAuth:
    """A static bearer token (from ``PREVISIT_FHIR_TOKEN`` or configuration)."""

    def __init__(self, token: str | SecretStr) -> None:
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        if not self._token.get_secret_value().strip():
            raise AuthConfigError("the FHIR bearer token is empty")

    def describe(self) -> str:
        return "a static bearer token"

    async def authorization(self, http: httpx.AsyncClient, base_url: str) -> str | None:
        return f"Bearer {self._token.get_secret_value()}"

    def invalidate(self) -> bool:
        return False  # a static token does not get better by asking again

    def redact(self, text: str) -> str:
        return _redact(text, [self._token.get_secret_value()])

    def __repr__(self) -> str:
        return f"BearerTokenAuth(token={REDACTED})"


def load_private_key(pem_or_path: str | bytes | SecretStr | Path) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """An RSA or EC private key from PEM text or a PEM file path. Errors never quote the key."""
    if isinstance(pem_or_path, SecretStr):
        pem_or_path = pem_or_path.get_secret_value()
    data: bytes
    if isinstance(pem_or_path, Path) or (isinstance(pem_or_path, str) and "-----BEGIN" not in pem_or_path):
        path = Path(pem_or_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuthConfigError(f"cannot read the SMART private key file {path}: {exc.strerror or exc}") from None
    else:
        data = pem_or_path.encode() if isinstance(pem_or_path, str) else pem_or_path
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuthConfigError("the SMART private key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise AuthConfigError(f"SMART backend services needs an RSA or EC key, not {type(key).__name__}")
    return key


class SmartBackendAuth:
    """SMART on FHIR backend services: a signed JWT assertion buys an access token, cached until it expires."""

    def __init__(
        self,
        client_id: str,
        private_key: str | bytes | SecretStr | Path,
        *,
        token_url: str | None = None,
        scope: str = DEFAULT_SMART_SCOPE,
        alg: SmartAlgorithm | None = None,
        kid: str | None = None,
        assertion_lifetime_s: int = 240,
        expiry_margin_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id.strip():
            raise AuthConfigError("SMART backend services needs a client id")
        self.client_id = client_id
        self._key = load_private_key(private_key)
        self.alg: SmartAlgorithm = alg or ("ES384" if isinstance(self._key, ec.EllipticCurvePrivateKey) else "RS384")
        if self.alg == "ES384" and not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise AuthConfigError("ES384 needs an EC private key")
        if self.alg == "RS384" and not isinstance(self._key, rsa.RSAPrivateKey):
            raise AuthConfigError("RS384 needs an RSA private key")
        self.token_url = token_url
        self.scope = scope
        self.kid = kid
        self.assertion_lifetime_s = min(assertion_lifetime_s, 300)
        self.expiry_margin_s = expiry_margin_s
        self._clock = clock
        self._access_token: SecretStr | None = None
        self._expires_at = 0.0
        self._last_assertion: str | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.tokens_fetched = 0
        """How many access tokens were bought (tests check the cache with it)."""

    def describe(self) -> str:
        return f"SMART backend services (client {self.client_id!r}, {self.alg})"

    def __repr__(self) -> str:
        return (
            f"SmartBackendAuth(client_id={self.client_id!r}, alg={self.alg!r}, token_url={self.token_url!r}, "
            f"scope={self.scope!r}, private_key={REDACTED})"
        )

    def redact(self, text: str) -> str:
        token = self._access_token.get_secret_value() if self._access_token else None
        return _redact(text, [token, self._last_assertion])

    def invalidate(self) -> bool:
        had = self._access_token is not None
        self._access_token = None
        self._expires_at = 0.0
        return had

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def authorization(self, http: httpx.AsyncClient, base_url: str) -> str | None:
        async with self._loop_lock():
            if self._access_token is None or self._clock() >= self._expires_at:
                await self._fetch_token(http, base_url)
            assert self._access_token is not None
            return f"Bearer {self._access_token.get_secret_value()}"

    def client_assertion(self, token_url: str) -> str:
        """A freshly signed client assertion for `token_url`."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + self.assertion_lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid
        assertion = jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)
        self._last_assertion = assertion
        return assertion

    async def discover_token_url(self, http: httpx.AsyncClient, base_url: str) -> str:
        """The token endpoint: configured, else SMART discovery, else the CapabilityStatement."""
        if self.token_url:
            return self.token_url
        base = base_url.rstrip("/")
        for url, pick in (
            (f"{base}/.well-known/smart-configuration", _token_from_smart_configuration),
            (f"{base}/metadata", _token_from_capability),
        ):
            try:
                response = await http.get(url, headers={"Accept": "application/json, application/fhir+json"})
                found = pick(response.json()) if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                found = None
            if found:
                self.token_url = found
                return found
        raise SmartAuthError(
            f"no SMART token endpoint found for {base}: set PREVISIT_FHIR_TOKEN_URL, or serve "
            f"{base}/.well-known/smart-configuration"
        )

    async def _fetch_token(self, http: httpx.AsyncClient, base_url: str) -> None:
        token_url = await self.discover_token_url(http, base_url)
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(token_url),
        }
        try:
            response = await http.post(token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise SmartAuthError(f"the SMART token endpoint {token_url} did not answer: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error", "") if isinstance(body, dict) else ""
            detail = body.get("error_description", "") if isinstance(body, dict) else ""
            message = self.redact(f"{error}: {detail}".strip(": ")[:300]) or "no access token in the answer"
            raise SmartAuthError(
                f"the SMART token endpoint {token_url} refused client {self.client_id!r} "
                f"(HTTP {response.status_code}): {message}"
            )
        try:
            lifetime = float(body.get("expires_in", 300))
        except (TypeError, ValueError):
            lifetime = 300.0
        self._access_token = SecretStr(str(body["access_token"]))
        self._expires_at = self._clock() + max(lifetime - self.expiry_margin_s, 0.0)
        self.tokens_fetched += 1
        log.info("SMART access token obtained for client %s, valid %.0f s", self.client_id, lifetime)


class SmartAuthError(Exception):
    """The SMART token endpoint could not be found or refused the client (no secret in the message).

    `tools.fhir.client` turns it into a `FhirAuthError` (a `RecordSourceError`)."""


def _token_from_smart_configuration(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("token_endpoint"), str):
        return str(body["token_endpoint"])
    return None


def _token_from_capability(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for rest in body.get("rest") or []:
        for extension in (rest.get("security") or {}).get("extension") or []:
            if extension.get("url") != OAUTH_URIS_EXTENSION:
                continue
            for inner in extension.get("extension") or []:
                if inner.get("url") == "token" and isinstance(inner.get("valueUri"), str):
                    return str(inner["valueUri"])
    return None
