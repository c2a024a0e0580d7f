"""A `RecordSource` over any FHIR R4 server: the record of one patient, read through a bound scope.

`FhirRecordSource.fetch_record(key)`:

1. reads the CapabilityStatement (``/metadata``, once per source) and adapts to it;
2. finds the patient: ``GET Patient/{key}``, else ``Patient?identifier=<Synthea system>|{key}``, else
   ``Patient?identifier={key}`` (a server that loaded a bundle assigns its own ids; the Synthea
   identifier, or the ``urn:previsit:source-id`` identifier the sandbox loader adds, finds it again);
   404 is `PatientNotFoundError`, 410 `PatientDeletedError`, two matches a `RecordSourceError`;
3. binds a `PatientScope` to the server's id: from here every request is built by the scope and
   checked by its guard;
4. reads the record: ``Patient/{id}/$everything`` when the server declares it (strategy ``auto``),
   else one search per record type (``patient=`` with ``_count``, and ``_include`` of Medication
   where declared), run concurrently; paging follows ``next`` links with a loop guard;
5. parses with fhir.resources (R4B reads R4 JSON) in a worker thread, leaving out and counting
   (``PatientRecord.skipped_resources``) every resource that fails validation, belongs to another
   patient, or that paging could not reach; then `build_patient_record`.

Every request is limited to `timeout_s`, the whole record to `record_deadline_s`
(`FhirDeadlineError`). Retries, auth and paging are `FhirClient`'s.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from fhir.resources.R4B import get_fhir_model_class

from tools.fhir.auth import FhirAuth, NoAuth
from tools.fhir.bundle_source import _salvage_patient
from tools.fhir.client import (
    FhirClient,
    FhirDeadlineError,
    FhirError,
    Paged,
    PatientDeletedError,
    RetryPolicy,
    ServerCapabilities,
    Sleep,
    check_base_url,
)
from tools.fhir.record import PatientNotFoundError, PatientRecord, RecordSourceError
from tools.fhir.resources import RECORD_RESOURCE_TYPES, SYNTHEA_IDENTIFIER_SYSTEM, build_patient_record
from tools.fhir.scope import RECORD_SEARCH_TYPES, PatientScope

log = logging.getLogger("previsit.fhir")

SOURCE_ID_SYSTEM = "urn:previsit:source-id"
"""Identifier the sandbox loader gives each Patient: the id it had in its bundle file."""
IDENTIFIER_SYSTEMS: tuple[str, ...] = (SYNTHEA_IDENTIFIER_SYSTEM, SOURCE_ID_SYSTEM)
STRICT = {"Prefer": "handling=strict"}
"""Sent with scoped searches: a server must refuse, not silently drop, a parameter it does not know
(a dropped ``patient=`` would widen the search to every patient)."""
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

Strategy = Literal["auto", "everything", "search"]


@dataclass
class FetchStats:
    """How the last record was read (for the benchmark and for tests)."""

    strategy: str = ""
    requests: int = 0
    pages: int = 0
    resources: int = 0
    left_out: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class FhirRecordSource:
    """Records from a FHIR R4 server (``--fhir-base`` / ``PREVISIT_FHIR_BASE``)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: FhirAuth | None = None,
        bound_patient: str | None = None,
        strategy: Strategy = "auto",
        page_size: int = 200,
        max_pages: int = 100,
        concurrency: int = 8,
        timeout_s: float = 10.0,
        record_deadline_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        cache_s: float = 0.0,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.auth: FhirAuth = auth or NoAuth()
        self.bound_patient = bound_patient
        self.strategy: Strategy = strategy
        self.page_size = page_size
        self.max_pages = max_pages
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.record_deadline_s = record_deadline_s
        self.retry = retry or RetryPolicy()
        self.cache_s = cache_s
        self._transport = transport
        self._sleep = sleep
        self._capabilities: ServerCapabilities | None = None
        self._cache: dict[str, tuple[float, PatientRecord]] = {}
        self.last_fetch = FetchStats()

    def __repr__(self) -> str:
        return f"FhirRecordSource({self.base_url!r}, auth={self.auth!r}, strategy={self.strategy!r})"

    def client(self) -> FhirClient:
        """A client for this server with this source's auth, limits and transport (use with ``async with``)."""
        return FhirClient(
            self.base_url,
            auth=self.auth,
            timeout_s=self.timeout_s,
            retry=self.retry,
            transport=self._transport,
            sleep=self._sleep,
            max_pages=self.max_pages,
        )

    async def capabilities(self, client: FhirClient) -> ServerCapabilities:
        if self._capabilities is None:
            self._capabilities = await client.capabilities()
        return self._capabilities

    async def fetch_record(self, patient_id: str) -> PatientRecord:
        """The record of one patient; `PatientNotFoundError`, or a `RecordSourceError` naming what failed."""
        key = patient_id.strip()
        if self.bound_patient is not None and key != self.bound_patient:
            raise PatientNotFoundError(key, known=[f"{self.bound_patient} (the only patient this session may read)"])
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < self.cache_s:
            return cached[1].model_copy(deep=True)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.record_deadline_s), self.client() as client:
                record = await self._fetch(client, key)
        except TimeoutError:
            raise FhirDeadlineError(
                f"reading the record of {key!r} from {self.base_url} took longer than {self.record_deadline_s:g} s"
            ) from None
        self.last_fetch.seconds = time.perf_counter() - started
        if self.cache_s > 0:
            self._cache[key] = (time.monotonic(), record.model_copy(deep=True))
        return record

    async def _fetch(self, client: FhirClient, key: str) -> PatientRecord:
        stats = FetchStats()
        self.last_fetch = stats
        caps = await self.capabilities(client)
        patient = await self.resolve_patient(client, key)
        scope = PatientScope(str(patient["id"]), self.base_url, bound_key=key)
        client.request_guard = scope.check_request
        use_everything = self.strategy == "everything" or (self.strategy == "auto" and caps.supports_everything())
        if use_everything:
            stats.strategy = "everything"
            paged = [await client.pages(scope.everything(), [("_count", str(self.page_size))])]
        else:
            stats.strategy = "search" if self.concurrency > 1 else "search (sequential)"
            paged = await self._search_all(client, scope, caps, stats)
        stats.requests = client.requests_sent
        stats.pages = sum(p.pages for p in paged)
        record = await asyncio.to_thread(self._build, patient, paged, scope, stats)
        return record

    async def _search_all(
        self, client: FhirClient, scope: PatientScope, caps: ServerCapabilities, stats: FetchStats
    ) -> list[Paged]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(resource_type: str) -> Paged:
            planned = scope.search(resource_type, caps, self.page_size)
            if planned is None:
                stats.notes.append(f"{resource_type}: the server offers no patient search; not read")
                return Paged()
            path, params = planned
            async with limit:
                return await client.pages(path, params, headers=STRICT)

        return list(await asyncio.gather(*(one(t) for t in RECORD_SEARCH_TYPES)))

    async def resolve_patient(self, client: FhirClient, key: str) -> dict[str, Any]:
        """The Patient resource a session key names: by server id, else by identifier."""
        if not key:
            raise PatientNotFoundError(key)
        if _FHIR_ID.match(key):
            response = await client.request("GET", f"Patient/{key}", passthrough=frozenset({404, 410}))
            if response.status_code == 410:
                raise PatientDeletedError(key, self.base_url)
            if response.status_code == 200:
                return client.parse(response, expect="Patient")
        for system in (*IDENTIFIER_SYSTEMS, None):
            token = f"{system}|{key}" if system else key
            paged = await client.pages("Patient", [("identifier", token)], max_pages=2)
            found = {str(e.resource.get("id")): e.resource for e in paged.entries if not e.included}
            found = {pid: r for pid, r in found.items() if r.get("resourceType") == "Patient"}
            if len(found) > 1:
                raise RecordSourceError(
                    f"{len(found)} patients on {self.base_url} have the identifier {token!r} "
                    f"({', '.join(sorted(found)[:5])}); bind the session to one of their ids"
                )
            if found:
                return next(iter(found.values()))
        raise PatientNotFoundError(key, known=[f"none with that id or identifier on {self.base_url}"])

    def _build(
        self, patient: dict[str, Any], paged: Sequence[Paged], scope: PatientScope, stats: FetchStats
    ) -> PatientRecord:
        left_out = 0
        models: list[Any] = []
        full_urls: dict[str, Any] = {}
        seen: set[tuple[str, str]] = set()
        for page_set in paged:
            if page_set.stopped:
                stats.notes.append(page_set.stopped)
                left_out += page_set.left_out
            for entry in page_set.entries:
                raw = entry.resource
                kind = str(raw.get("resourceType"))
                if kind not in RECORD_RESOURCE_TYPES or kind == "Patient":
                    continue
                identity = (kind, str(raw.get("id")))
                if identity in seen:
                    continue
                seen.add(identity)
                stats.resources += 1
                if not scope.owns(raw):
                    log.warning("left out %s/%s: it does not belong to %s", *identity, scope.reference)
                    left_out += 1
                    continue
                try:
                    model = get_fhir_model_class(kind).model_validate(raw)
                except (ValueError, TypeError) as exc:
                    log.info("left out %s/%s: it fails validation (%s)", *identity, str(exc).splitlines()[0])
                    left_out += 1
                    continue
                models.append(model)
                if entry.full_url:
                    full_urls[entry.full_url] = model
        try:
            patient_model = get_fhir_model_class("Patient").model_validate(patient)
        except (ValueError, TypeError):
            patient_model = _salvage_patient(patient)
            left_out += 1
        stats.left_out = left_out
        return build_patient_record(
            [patient_model, *models],
            patient_id=scope.patient_id,
            full_urls=full_urls,
            skipped=left_out,
            source=self.base_url,
        )

    async def list_patients(self) -> list[tuple[str, str]]:
        """(server id, name) of the patients on the server (at most `max_pages` pages), by name."""
        if self.bound_patient is not None:
            record = await self.fetch_record(self.bound_patient)
            return [(record.patient_id, record.demographics.name)]
        async with asyncio.timeout(self.record_deadline_s), self.client() as client:
            paged = await client.pages(
                "Patient", [("_count", str(self.page_size)), ("_elements", "id,name,identifier")]
            )
        patients: dict[str, str] = {}
        for entry in paged.entries:
            raw = entry.resource
            if raw.get("resourceType") != "Patient" or not raw.get("id"):
                continue
            patients[str(raw["id"])] = _name_of(raw)
        return sorted(patients.items(), key=lambda p: (p[1], p[0]))


def _name_of(raw: dict[str, Any]) -> str:
    for name in raw.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(str(p) for p in parts if p).strip()
        if text:
            return text
    return "Unknown"


__all__ = ["FetchStats", "FhirError", "FhirRecordSource", "Strategy"]
