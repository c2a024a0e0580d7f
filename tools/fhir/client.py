"""An async FHIR R4 client over httpx: auth, retries with backoff, time limits, paging with a loop guard.

`FhirClient` is one connection pool to one base URL. It knows nothing about patients: the
patient-scoped reads are in `tools.fhir.server_source` (through `tools.fhir.scope`), the write-back
is in `tools.fhir.writeback`. It is an async context manager; open one per unit of work (a record
fetch, a write-back), so that it never outlives the event loop it was opened in.

- **Retries.** 429, 500, 502, 503, 504, timeouts and connection failures are tried again, up to
  `RetryPolicy.attempts` in all, waiting ``backoff_s * 2**n`` (capped, with a little jitter) or what
  the server's ``Retry-After`` says (seconds or an HTTP date). A ``Retry-After`` longer than
  `RetryPolicy.max_retry_after_s` is not waited for: the request fails at once with a clear error.
- **Time limits.** Every request (all of it, not only each read) is limited to `timeout_s`; the
  caller puts a deadline around a whole unit of work (see `FhirRecordSource`).
- **Paging.** `FhirClient.pages` follows ``Bundle.link[relation=next]``, refusing a link seen before
  (a loop), a link outside the base URL (credentials are never sent to another server) and more
  than `max_pages` pages; whichever stops it is reported in `Paged.stopped`, never a hang.
- **Secrets.** Errors carry the method, the URL and the server's own diagnostics, passed through the
  auth scheme's `redact`; never a header.

Exception hierarchy::

    RecordError                       (tools.fhir.record) the record could not be had
    ├── PatientNotFoundError          no patient with that id or identifier on the server
    │   └── PatientDeletedError       the server says the patient was deleted (410 Gone)
    └── RecordSourceError             the source itself failed
        └── FhirError                 anything that went wrong talking to a FHIR server
            ├── FhirTransportError    no usable answer: refused connection, DNS, timeout (after retries)
            ├── FhirStatusError       an error status (after retries), with the OperationOutcome's text
            │   └── FhirAuthError     401/403, or the SMART token endpoint refused the client
            ├── FhirResponseError     an answer that is not the FHIR expected: invalid or truncated JSON,
            │                         not FHIR at all, an OperationOutcome in place of a Bundle
            ├── FhirDeadlineError     the time limit of a whole unit of work (a record) passed
            └── FhirScopeError        a request would have left the bound patient's scope (never sent)
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from tools.fhir.auth import FhirAuth, NoAuth, SmartAuthError
from tools.fhir.record import PatientNotFoundError, RecordSourceError

log = logging.getLogger("previsit.fhir")

FHIR_JSON = "application/fhir+json"
USER_AGENT = "previsit-fhir-client/0.1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_NOT_RETRIED = " (not retried: the server may have processed it)"

Sleep = Callable[[float], Awaitable[None]]


class FhirError(RecordSourceError):
    """Anything that went wrong talking to a FHIR server."""


class FhirTransportError(FhirError):
    """No usable answer: the connection failed or timed out (after retries)."""


class FhirStatusError(FhirError):
    """The server answered with an error status (after retries)."""

    def __init__(self, message: str, status: int, diagnostics: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.diagnostics = diagnostics


class FhirAuthError(FhirStatusError):
    """401/403 from the server, or the SMART token endpoint refused the client."""


class FhirResponseError(FhirError):
    """An answer that is not the FHIR that was expected."""


class FhirDeadlineError(FhirError):
    """The time limit of a whole unit of work passed."""


class FhirScopeError(FhirError):
    """A request would have left the bound patient's scope; it was not sent."""


class PatientDeletedError(PatientNotFoundError):
    """The server says the patient was deleted (410 Gone)."""

    def __init__(self, patient_id: str, base_url: str) -> None:
        super().__init__(patient_id)
        self.args = (f"Patient {patient_id!r} was deleted on {base_url} (410 Gone).",)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again."""

    attempts: int = 4
    """Tries in all, the first included."""
    backoff_s: float = 0.5
    """First wait; doubled on each further try."""
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0
    """A Retry-After longer than this is not waited for: the request fails at once."""
    jitter: float = 0.1
    """Up to this fraction is added to each computed backoff (not to a server's Retry-After)."""

    def backoff(self, retry: int) -> float:
        delay = min(self.backoff_s * (2**retry), self.max_backoff_s)
        return float(delay * (1 + random.uniform(0, self.jitter)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def outcome_text(body: Any, limit: int = 300) -> str:
    """The diagnostics of an OperationOutcome (or ''), shortened."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if text:
            parts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(parts)[:limit]


@dataclass(frozen=True)
class TypeCapabilities:
    """What a server declares for one resource type."""

    search_params: frozenset[str] = frozenset()
    includes: frozenset[str] = frozenset()
    revincludes: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    interactions: frozenset[str] = frozenset()
    conditional_create: bool = False
    update_create: bool = False


@dataclass(frozen=True)
class ServerCapabilities:
    """The parts of a CapabilityStatement previsit adapts to."""

    fhir_version: str = ""
    software: str = ""
    types: Mapping[str, TypeCapabilities] = field(default_factory=dict)
    system_operations: frozenset[str] = frozenset()
    system_interactions: frozenset[str] = frozenset()

    @classmethod
    def from_statement(cls, body: Mapping[str, Any]) -> ServerCapabilities:
        types: dict[str, TypeCapabilities] = {}
        system_ops: set[str] = set()
        system_interactions: set[str] = set()
        for rest in body.get("rest") or []:
            if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
                continue
            system_ops |= {_op_name(o) for o in rest.get("operation") or [] if isinstance(o, dict)}
            system_interactions |= {str(i.get("code")) for i in rest.get("interaction") or [] if isinstance(i, dict)}
            for res in rest.get("resource") or []:
                if not isinstance(res, dict) or not isinstance(res.get("type"), str):
                    continue
                types[res["type"]] = TypeCapabilities(
                    search_params=frozenset(
                        str(p.get("name")) for p in res.get("searchParam") or [] if isinstance(p, dict)
                    ),
                    includes=frozenset(str(i) for i in res.get("searchInclude") or []),
                    revincludes=frozenset(str(i) for i in res.get("searchRevInclude") or []),
                    operations=frozenset(_op_name(o) for o in res.get("operation") or [] if isinstance(o, dict)),
                    interactions=frozenset(
                        str(i.get("code")) for i in res.get("interaction") or [] if isinstance(i, dict)
                    ),
                    conditional_create=bool(res.get("conditionalCreate")),
                    update_create=bool(res.get("updateCreate")),
                )
        software = body.get("software") or {}
        return cls(
            fhir_version=str(body.get("fhirVersion") or ""),
            software=str(software.get("name") or "") if isinstance(software, dict) else "",
            types=types,
            system_operations=frozenset(system_ops),
            system_interactions=frozenset(system_interactions),
        )

    def declares(self, resource_type: str) -> bool:
        return resource_type in self.types

    def supports_everything(self) -> bool:
        """Patient/$everything is declared (on Patient, or as a system-level operation)."""
        patient = self.types.get("Patient")
        return bool(patient and "everything" in patient.operations) or "everything" in self.system_operations

    def supports_search_param(self, resource_type: str, name: str) -> bool:
        declared = self.types.get(resource_type)
        return bool(declared and name in declared.search_params)

    def supports_include(self, resource_type: str, spec: str) -> bool:
        declared = self.types.get(resource_type)
        return bool(declared and (spec in declared.includes or "*" in declared.includes))

    def can_conditional_create(self, resource_type: str) -> bool:
        """Conditional create on ``identifier`` is declared for the type."""
        declared = self.types.get(resource_type)
        return bool(declared and declared.conditional_create and "identifier" in declared.search_params)

    def supports_transactions(self) -> bool:
        return "transaction" in self.system_interactions


def _op_name(operation: Mapping[str, Any]) -> str:
    return str(operation.get("name") or "").lstrip("$")


@dataclass(frozen=True)
class PagedEntry:
    """One entry of a search result."""

    full_url: str | None
    resource: dict[str, Any]
    included: bool = False
    """Brought in by _include/_revinclude rather than matched."""


@dataclass
class Paged:
    """Resources gathered over the pages of a search, and why paging stopped early, if it did."""

    entries: list[PagedEntry] = field(default_factory=list)
    """In server order."""
    pages: int = 0
    total: int | None = None
    stopped: str | None = None
    """Why paging stopped before the last page (a loop, the page cap, a link off the server)."""

    @property
    def left_out(self) -> int:
        """Resources the server reported but paging did not reach (at least 1 when it stopped early)."""
        if self.stopped is None:
            return 0
        matched = sum(1 for e in self.entries if not e.included)
        return max(1, (self.total or 0) - matched)


def check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; `FhirError` when it is not an http(s) URL."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in parts.netloc:
        raise FhirError(f"not an http(s) FHIR base URL: {base_url!r}")
    return base_url.strip().rstrip("/")


class FhirClient:
    """One base URL, one connection pool, an auth scheme; use it as ``async with FhirClient(...) as c``."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: FhirAuth | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        max_pages: int = 100,
        request_guard: Callable[[httpx.URL, bool], None] | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.auth: FhirAuth = auth or NoAuth()
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.max_pages = max_pages
        self.request_guard = request_guard
        self._transport = transport
        self._sleep: Sleep = sleep or asyncio.sleep
        self._http: httpx.AsyncClient | None = None
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    async def __aenter__(self) -> FhirClient:
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.timeout_s),
            headers={"Accept": FHIR_JSON, "User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("FhirClient is used outside 'async with'")
        return self._http

    def url(self, path: str) -> str:
        """An absolute URL for a path relative to the base (an absolute URL is returned as is)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def on_base(self, url: str | httpx.URL) -> bool:
        """Is `url` on this server, under its base path?"""
        target, base = httpx.URL(str(url)), httpx.URL(self.base_url + "/")
        return (
            target.scheme == base.scheme
            and target.host == base.host
            and target.port == base.port
            and (target.path + "/").startswith(base.path)
        )

    def _error_text(self, text: str) -> str:
        return self.auth.redact(text)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: frozenset[int] = frozenset({200, 201}),
        passthrough: frozenset[int] = frozenset(),
        next_link: bool = False,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one request with auth, retries and the per-request time limit.

        Returns the response when its status is in `ok` or `passthrough` (the caller deals with the
        latter, e.g. 404 or 410); raises a `FhirError` otherwise. `next_link` marks a server's paging
        link, for the request guard. A request that is not `idempotent` is tried again only when it
        surely was not processed (connection refused, 429, 503), never after a timeout.
        """
        url = self.url(path)
        request = self.http.build_request(
            method,
            url,
            params=list(params) if params else None,
            content=json.dumps(json_body).encode() if json_body is not None else None,
            headers={**({"Content-Type": FHIR_JSON} if json_body is not None else {}), **(headers or {})},
        )
        if not self.on_base(request.url):
            raise FhirScopeError(f"refused to send a request off the FHIR server {self.base_url}: {request.url}")
        if self.request_guard is not None:
            self.request_guard(request.url, next_link)
        shown = f"{method} {request.url}"
        reauthorized = False
        attempt = 0
        while True:
            attempt += 1
            try:
                authorization = await self.auth.authorization(self.http, self.base_url)
            except SmartAuthError as exc:
                raise FhirAuthError(self._error_text(str(exc)), 401) from None
            if authorization:
                request.headers["Authorization"] = authorization
            failure: str
            wait: float | None = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    self.requests_sent += 1
                    response = await self.http.send(request)
                    await response.aread()
            except (TimeoutError, httpx.TimeoutException):
                failure = f"no answer within {self.timeout_s:g} s"
                if not idempotent:
                    raise FhirTransportError(f"{shown} failed: {failure}{_NOT_RETRIED}") from None
            except httpx.RequestError as exc:
                connect = isinstance(exc, httpx.ConnectError)
                failure = (
                    f"{'cannot connect' if connect else 'transport error'} "
                    f"({type(exc).__name__}: {self._error_text(str(exc))[:200]})"
                )
                if not (idempotent or connect):
                    raise FhirTransportError(f"{shown} failed: {failure}{_NOT_RETRIED}") from None
            else:
                status = response.status_code
                log.debug("%s -> %s", shown, status)
                if status in ok or status in passthrough:
                    return response
                diagnostics = self._error_text(outcome_text(_json_or_none(response)))
                if status == 401 and not reauthorized and self.auth.invalidate():
                    reauthorized = True
                    attempt -= 1
                    continue
                if status in (401, 403):
                    raise FhirAuthError(
                        f"{shown} was refused (HTTP {status}) with {self.auth.describe()}"
                        + (f": {diagnostics}" if diagnostics else ""),
                        status,
                        diagnostics,
                    )
                if status not in RETRY_STATUSES or not (idempotent or status in (429, 503)):
                    raise FhirStatusError(
                        f"{shown} failed: HTTP {status}" + (f": {diagnostics}" if diagnostics else ""),
                        status,
                        diagnostics,
                    )
                failure = f"HTTP {status}" + (f" ({diagnostics})" if diagnostics else "")
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is not None and wait > self.retry.max_retry_after_s:
                    raise FhirStatusError(
                        f"{shown} failed: {failure}; the server asks to retry after {wait:.0f} s, longer "
                        f"than the {self.retry.max_retry_after_s:g} s previsit waits",
                        status,
                        diagnostics,
                    )
                if attempt >= self.retry.attempts:
                    raise FhirStatusError(f"{shown} failed after {attempt} attempts: {failure}", status, diagnostics)
            if attempt >= self.retry.attempts:
                raise FhirTransportError(f"{shown} failed after {attempt} attempts: {failure}")
            delay = wait if wait is not None else self.retry.backoff(attempt - 1)
            log.info(
                "%s: %s; retrying in %.2f s (attempt %d of %d)", shown, failure, delay, attempt + 1, self.retry.attempts
            )
            await self._sleep(delay)

    async def get_json(
        self,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: str | None = None,
        next_link: bool = False,
    ) -> dict[str, Any]:
        """GET a FHIR JSON resource; with `expect`, it must be of that resourceType."""
        response = await self.request("GET", path, params=params, headers=headers, next_link=next_link)
        return self.parse(response, expect=expect)

    def parse(self, response: httpx.Response, *, expect: str | None = None) -> dict[str, Any]:
        """The JSON body of a FHIR answer, checked to be a resource (of type `expect`)."""
        shown = f"{response.request.method} {response.request.url}"
        try:
            body = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "no content type")
            raise FhirResponseError(
                f"{shown}: the answer is not valid JSON ({kind}, {len(response.content)} bytes: {exc.msg} "
                f"at {exc.pos}); is {self.base_url} a FHIR server?"
                if isinstance(exc, json.JSONDecodeError)
                else f"{shown}: the answer is not UTF-8 JSON"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FhirResponseError(f"{shown}: the answer is JSON but not a FHIR resource (no resourceType)")
        if expect and body["resourceType"] != expect:
            detail = outcome_text(body)
            raise FhirResponseError(
                f"{shown}: expected a {expect}, got a {body['resourceType']}"
                + (f": {self._error_text(detail)}" if detail else "")
            )
        return body

    async def capabilities(self) -> ServerCapabilities:
        """The server's CapabilityStatement, read from ``/metadata``."""
        try:
            body = await self.get_json("metadata", expect="CapabilityStatement")
        except FhirAuthError:
            raise
        except FhirStatusError as exc:
            if exc.status >= 500:
                raise
            raise FhirStatusError(
                f"{self.base_url} does not answer as a FHIR server: {exc}", exc.status, exc.diagnostics
            ) from None
        version = str(body.get("fhirVersion") or "")
        if version and not version.startswith("4.0"):
            log.warning("%s declares FHIR %s; previsit reads R4 (4.0.x)", self.base_url, version)
        return ServerCapabilities.from_statement(body)

    async def pages(
        self,
        path: str,
        params: Sequence[tuple[str, str]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        max_pages: int | None = None,
    ) -> Paged:
        """Every entry of a searchset (or $everything) Bundle, following ``next`` links with a loop guard."""
        cap = max_pages or self.max_pages
        paged = Paged()
        seen: set[str] = set()
        url: str | None = self.url(path)
        query: Sequence[tuple[str, str]] | None = params
        while url is not None:
            bundle = await self.get_json(url, params=query, headers=headers, expect="Bundle", next_link=paged.pages > 0)
            paged.pages += 1
            seen.add(_normal(httpx.URL(url, params=list(query) if query else None)))
            if paged.total is None and isinstance(bundle.get("total"), int):
                paged.total = int(bundle["total"])
            for entry in bundle.get("entry") or []:
                if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                    continue
                resource = entry["resource"]
                mode = (entry.get("search") or {}).get("mode")
                if mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
                    text = outcome_text(resource)
                    if text:
                        log.warning("%s: the server notes: %s", path, self._error_text(text))
                    continue
                full_url = entry.get("fullUrl")
                paged.entries.append(
                    PagedEntry(full_url if isinstance(full_url, str) else None, resource, included=mode == "include")
                )
            next_url = next(
                (
                    str(link.get("url"))
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next" and link.get("url")
                ),
                None,
            )
            query = None
            if next_url is None:
                break
            next_url = self.url(next_url)
            if _normal(httpx.URL(next_url)) in seen:
                paged.stopped = f"the server's next link repeats a page already read ({next_url})"
            elif not self.on_base(next_url):
                paged.stopped = f"the server's next link leaves {self.base_url} ({next_url}); not followed"
            elif paged.pages >= cap:
                paged.stopped = f"stopped after {cap} pages"
            if paged.stopped:
                log.warning("%s: %s", path, paged.stopped)
                break
            url = next_url
        return paged

    async def transaction(
        self, bundle: Mapping[str, Any], *, prefer: str | None = None, idempotent: bool = True
    ) -> dict[str, Any]:
        """POST a transaction Bundle; the transaction-response Bundle. Say `idempotent=False` unless
        sending it twice is harmless (conditional creates, PUTs)."""
        headers = {"Prefer": prefer} if prefer else None
        response = await self.request("POST", self.base_url, json_body=bundle, headers=headers, idempotent=idempotent)
        return self.parse(response, expect="Bundle")


def _normal(url: httpx.URL) -> str:
    """A URL with its query parameters sorted, so the same page is recognised however it is spelled."""
    return str(url.copy_with(query=None)) + "?" + "&".join(sorted(f"{k}={v}" for k, v in url.params.multi_items()))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
