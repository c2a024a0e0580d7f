"""FHIR auth: a static bearer token, SMART backend services (signed JWT assertion, cached token),
and secrets that never show up in a repr, a str, a log line or an error message.

The token endpoint here is a fake (``httpx.MockTransport``) that checks the assertion with the
client's public key like a real one; `tests/test_fhir_server.py` runs the same flow against SEKMET's
real token endpoint.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from previsit.config import Settings, build_fhir_auth, build_record_source
from tests.test_fhir_client import BASE, PID, FakeFhir, outcome
from tools.fhir.auth import (
    CLIENT_ASSERTION_TYPE,
    AuthConfigError,
    BearerTokenAuth,
    NoAuth,
    SmartBackendAuth,
)
from tools.fhir.client import FhirAuthError
from tools.fhir.server_source import FhirRecordSource

TOKEN_URL = "http://fhir.test/auth/token"
CLIENT = "previsit-backend"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class SmartServer:
    """A FHIR server behind a SMART token endpoint that verifies assertions with the client's public key."""

    def __init__(self, public_key: Any, alg: str = "RS384", *, discovery: bool = True, lifetime: int = 300) -> None:
        self.fhir = FakeFhir()
        self.public_key = public_key
        self.alg = alg
        self.discovery = discovery
        self.lifetime = lifetime
        self.token_requests: list[dict[str, str]] = []
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.valid: set[str] = set()
        self.fhir_requests: list[httpx.Request] = []

    def revoke_all(self) -> None:
        self.valid.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/r4/.well-known/smart-configuration":
            if not self.discovery:
                return httpx.Response(404)
            return httpx.Response(
                200, json={"token_endpoint": TOKEN_URL, "grant_types_supported": ["client_credentials"]}
            )
        if path == "/auth/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            self.token_requests.append(form)
            try:
                claims = jwt.decode(  # leeway: tests move the client's clock ahead
                    form["client_assertion"], self.public_key, algorithms=[self.alg], audience=TOKEN_URL, leeway=600
                )
            except jwt.PyJWTError as exc:
                return httpx.Response(401, json={"error": "invalid_client", "error_description": str(exc)})
            self.assertions.append((jwt.get_unverified_header(form["client_assertion"]), claims))
            token = f"access-{secrets.token_hex(8)}"
            self.valid.add(token)
            return httpx.Response(
                200, json={"access_token": token, "token_type": "bearer", "expires_in": self.lifetime}
            )
        if path == "/r4/metadata" and not self.discovery:
            statement = dict(self.fhir.capability)
            statement["rest"] = [
                {
                    **statement["rest"][0],
                    "security": {
                        "extension": [
                            {
                                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                "extension": [{"url": "token", "valueUri": TOKEN_URL}],
                            }
                        ]
                    },
                }
            ]
            return httpx.Response(200, json=statement)
        self.fhir_requests.append(request)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.valid:
            return outcome("invalid or expired access token", 401)
        return self.fhir(request)


def _smart_source(server: SmartServer, auth: SmartBackendAuth) -> FhirRecordSource:
    return FhirRecordSource(BASE, auth=auth, transport=httpx.MockTransport(server))


async def test_a_bearer_token_goes_with_every_request() -> None:
    fake = FakeFhir()
    token = "static-" + secrets.token_hex(12)
    source = FhirRecordSource(BASE, auth=BearerTokenAuth(token), transport=httpx.MockTransport(fake))
    await source.fetch_record(PID)
    assert len(fake.requests) >= 4
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in fake.requests)


async def test_no_auth_sends_no_header() -> None:
    fake = FakeFhir()
    await FhirRecordSource(BASE, transport=httpx.MockTransport(fake)).fetch_record(PID)
    assert not any("Authorization" in r.headers for r in fake.requests)


async def test_smart_token_request_and_assertion(rsa_key: rsa.RSAPrivateKey) -> None:
    server = SmartServer(rsa_key.public_key())
    clock = Clock()
    auth = SmartBackendAuth(CLIENT, _pem(rsa_key), kid="key-1", scope="system/*.read", clock=clock)
    record = await _smart_source(server, auth).fetch_record(PID)
    assert record.demographics.name == "Ada Fake"
    (form,) = server.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.read"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    ((header, claims),) = server.assertions
    assert header == {"alg": "RS384", "kid": "key-1", "typ": "JWT"}
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == int(clock.now) and 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 16
    assert all(r.headers["Authorization"].startswith("Bearer access-") for r in server.fhir_requests)


async def test_es384_with_an_ec_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    server = SmartServer(key.public_key(), alg="ES384")
    auth = SmartBackendAuth(CLIENT, _pem(key))
    assert auth.alg == "ES384"
    await _smart_source(server, auth).fetch_record(PID)
    assert server.assertions[0][0]["alg"] == "ES384"


async def test_the_access_token_is_reused_until_it_expires(rsa_key: rsa.RSAPrivateKey) -> None:
    server = SmartServer(rsa_key.public_key(), lifetime=300)
    clock = Clock()
    auth = SmartBackendAuth(CLIENT, _pem(rsa_key), clock=clock, expiry_margin_s=30)
    source = _smart_source(server, auth)
    await source.fetch_record(PID)
    clock.now += 200
    await source.fetch_record(PID)
    assert auth.tokens_fetched == 1 and len(server.token_requests) == 1
    clock.now += 80  # 280 s after it was issued: inside the 30 s margin before expiry
    await source.fetch_record(PID)
    assert auth.tokens_fetched == 2
    jtis = [claims["jti"] for _, claims in server.assertions]
    assert len(set(jtis)) == 2, "every assertion has a fresh jti"


async def test_a_revoked_token_is_replaced_once(rsa_key: rsa.RSAPrivateKey) -> None:
    server = SmartServer(rsa_key.public_key())
    auth = SmartBackendAuth(CLIENT, _pem(rsa_key))
    source = _smart_source(server, auth)
    await source.fetch_record(PID)
    server.revoke_all()
    await source.fetch_record(PID)
    assert auth.tokens_fetched == 2


async def test_the_token_endpoint_is_found_in_the_capability_statement(rsa_key: rsa.RSAPrivateKey) -> None:
    server = SmartServer(rsa_key.public_key(), discovery=False)
    auth = SmartBackendAuth(CLIENT, _pem(rsa_key))
    await _smart_source(server, auth).fetch_record(PID)
    assert auth.token_url == TOKEN_URL


async def test_a_refused_client_is_a_clear_error_without_secrets(
    rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = SmartServer(other.public_key())
    caplog.set_level(logging.DEBUG)
    auth = SmartBackendAuth(CLIENT, _pem(rsa_key))
    with pytest.raises(FhirAuthError) as refused:
        await _smart_source(server, auth).fetch_record(PID)
    message = str(refused.value)
    assert f"refused client {CLIENT!r} (HTTP 401): invalid_client: Signature verification failed" in message
    assertion = server.token_requests[0]["client_assertion"]
    for text in (message, caplog.text, repr(auth)):
        assert assertion not in text and "PRIVATE KEY" not in text


async def test_text_a_server_echoes_back_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    token = "static-" + secrets.token_hex(12)
    fake = FakeFhir()
    fake.fail("/metadata", outcome(f"token {token} is not valid for this tenant", 403))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FhirAuthError) as refused:
        await FhirRecordSource(BASE, auth=BearerTokenAuth(token), transport=httpx.MockTransport(fake)).fetch_record(PID)
    assert "token *** is not valid" in str(refused.value)
    assert token not in str(refused.value) and token not in caplog.text


async def test_secrets_never_appear_in_reprs_settings_or_logs(
    rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = "static-" + secrets.token_hex(12)
    pem = _pem(rsa_key)
    settings = Settings.from_env(
        {
            "PREVISIT_FHIR_BASE": BASE,
            "PREVISIT_FHIR_TOKEN": token,
            "PREVISIT_FHIR_CLIENT_ID": CLIENT,
            "PREVISIT_FHIR_PRIVATE_KEY": pem,
        }
    )
    key_body = pem.splitlines()[1]
    for text in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert token not in text and key_body not in text
    smart = build_fhir_auth(settings)
    assert isinstance(smart, SmartBackendAuth)
    bearer = BearerTokenAuth(token)
    source = build_record_source(settings)
    for text in (repr(smart), str(smart), repr(bearer), str(bearer), repr(source)):
        assert token not in text and key_body not in text

    caplog.set_level(logging.DEBUG)
    server = SmartServer(rsa_key.public_key())
    await _smart_source(server, smart).fetch_record(PID)  # type: ignore[arg-type]
    fake = FakeFhir()
    await FhirRecordSource(BASE, auth=bearer, transport=httpx.MockTransport(fake)).fetch_record(PID)
    access_tokens = {r.headers["Authorization"].removeprefix("Bearer ") for r in server.fhir_requests}
    assert caplog.text, "the fetches did log"
    for secret in (token, key_body, *access_tokens, *(f["client_assertion"] for f in server.token_requests)):
        assert secret not in caplog.text


def test_auth_is_chosen_from_the_settings(rsa_key: rsa.RSAPrivateKey, tmp_path: Any) -> None:
    assert isinstance(build_fhir_auth(Settings.from_env({})), NoAuth)
    assert isinstance(build_fhir_auth(Settings.from_env({"PREVISIT_FHIR_TOKEN": "abcd1234"})), BearerTokenAuth)
    key_file = tmp_path / "client.pem"
    key_file.write_text(_pem(rsa_key))
    smart = build_fhir_auth(
        Settings.from_env(
            {
                "PREVISIT_FHIR_CLIENT_ID": CLIENT,
                "PREVISIT_FHIR_PRIVATE_KEY": str(key_file),
                "PREVISIT_FHIR_TOKEN_URL": TOKEN_URL,
                "PREVISIT_FHIR_SCOPE": "system/Patient.read",
                "PREVISIT_FHIR_KID": "k9",
            }
        )
    )
    assert isinstance(smart, SmartBackendAuth)
    assert (smart.token_url, smart.scope, smart.kid, smart.alg) == (TOKEN_URL, "system/Patient.read", "k9", "RS384")


def test_unusable_keys_are_named_without_their_content(tmp_path: Any) -> None:
    with pytest.raises(AuthConfigError, match="cannot read the SMART private key file"):
        SmartBackendAuth(CLIENT, tmp_path / "missing.pem")
    garbage = "-----BEGIN PRIVATE KEY-----\nnot-a-key-at-all\n-----END PRIVATE KEY-----\n"
    with pytest.raises(AuthConfigError) as bad:
        SmartBackendAuth(CLIENT, garbage)
    assert "not-a-key-at-all" not in str(bad.value)
    with pytest.raises(AuthConfigError, match="empty"):
        BearerTokenAuth("  ")
