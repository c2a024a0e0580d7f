"""The FHIR client against small fake servers (``httpx.MockTransport``): how it adapts to a
CapabilityStatement, and every fault a server can throw at it.

Each fault ends in a clear error or a partial record, never a hang or a crash, and a whole intake
over the faulty server still completes with a "record unavailable" or "record partial" flag.
Waits are recorded by an injected sleep, so retries cost no wall time.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents.coverage import IntakeElement
from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.state import IntakeInput, IntakeOutput
from tools.fhir.client import (
    FhirClient,
    FhirDeadlineError,
    FhirResponseError,
    FhirScopeError,
    FhirStatusError,
    FhirTransportError,
    PatientDeletedError,
    RetryPolicy,
    parse_retry_after,
)
from tools.fhir.record import PatientNotFoundError, RecordSourceError
from tools.fhir.resources import SYNTHEA_IDENTIFIER_SYSTEM
from tools.fhir.scope import PatientScope
from tools.fhir.server_source import FhirRecordSource

BASE = "http://fhir.test/r4"
PID = "p1"
Handler = Callable[[httpx.Request], httpx.Response]


def _condition(cid: str, code: str, name: str, patient: str = PID, status: Any = "active") -> dict[str, Any]:
    clinical = status if not isinstance(status, str) else {"coding": [{"code": status}]}
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": clinical,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": name}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


PATIENT = {
    "resourceType": "Patient",
    "id": PID,
    "name": [{"given": ["Ada"], "family": "Fake"}],
    "gender": "female",
    "birthDate": "1970-01-02",
    "identifier": [{"system": SYNTHEA_IDENTIFIER_SYSTEM, "value": "uuid-ada"}],
}
CONDITIONS = [_condition(f"c{i}", f"10{i}", f"Problem {i}") for i in range(7)]
ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "id": "a1",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"text": "Penicillin"},
    "patient": {"reference": f"Patient/{PID}"},
}
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"text": "Lisinopril 10 MG Oral Tablet"}}
REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "mr1",
    "status": "active",
    "intent": "order",
    "medicationReference": {"reference": "Medication/m1"},
    "subject": {"reference": f"Patient/{PID}"},
}


def capability(*, everything: bool = False, types: dict[str, list[str]] | None = None) -> dict[str, Any]:
    declared = types or {t: ["patient"] for t in ("Condition", "AllergyIntolerance", "MedicationRequest")}
    resources: list[dict[str, Any]] = [
        {
            "type": "Patient",
            "searchParam": [{"name": "identifier", "type": "token"}],
            "operation": [{"name": "everything"}] if everything else [],
        }
    ]
    for kind, params in declared.items():
        entry: dict[str, Any] = {"type": kind, "searchParam": [{"name": p, "type": "reference"} for p in params]}
        if kind == "MedicationRequest":
            entry["searchInclude"] = ["MedicationRequest:medication"]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": resources, "interaction": [{"code": "transaction"}]}],
    }


def searchset(resources: list[dict[str, Any]], *, next_url: str | None = None, total: int | None = None) -> dict:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }
    if total is not None:
        bundle["total"] = total
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def fhir(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json", **(headers or {})})


def outcome(text: str, status: int) -> httpx.Response:
    return fhir(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x", "diagnostics": text}]}, status
    )


class FakeFhir:
    """A tiny FHIR server: a patient, conditions, an allergy, a medication request. Faults are
    queued per path (`fail`) or replace a route (`routes`)."""

    def __init__(self, *, everything: bool = False, types: dict[str, list[str]] | None = None) -> None:
        self.capability = capability(everything=everything, types=types)
        self.data: dict[str, list[dict[str, Any]]] = {
            "Condition": list(CONDITIONS),
            "AllergyIntolerance": [ALLERGY],
            "MedicationRequest": [REQUEST],
        }
        self.requests: list[httpx.Request] = []
        self.queued: dict[str, list[httpx.Response]] = {}
        self.routes: dict[str, Handler] = {}
        self.page_size: int | None = None

    def fail(self, path: str, *responses: httpx.Response) -> None:
        self.queued.setdefault(path, []).extend(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/r4")
        if self.queued.get(path):
            return self.queued[path].pop(0)
        if path in self.routes:
            return self.routes[path](request)
        params = request.url.params
        if path == "/metadata":
            return fhir(self.capability)
        if path == f"/Patient/{PID}":
            return fhir(PATIENT)
        if path == "/Patient" and params.get("identifier") in (f"{SYNTHEA_IDENTIFIER_SYSTEM}|uuid-ada", "uuid-ada"):
            return fhir(searchset([PATIENT], total=1))
        if path == "/Patient":
            return fhir(searchset([], total=0))
        if path == f"/Patient/{PID}/$everything":
            return fhir(searchset([PATIENT, MEDICATION, *(r for rs in self.data.values() for r in rs)]))
        if path.startswith("/Patient/"):
            return outcome(f"Resource {path[1:]} is not known", 404)
        kind = path.strip("/")
        if kind in self.data and params.get("patient") in (PID, f"Patient/{PID}"):
            return self._page(kind, request)
        if kind in self.data and params.get("subject") == f"Patient/{PID}":
            return self._page(kind, request)
        return outcome(f"unsupported {request.method} {request.url}", 400)

    def _page(self, kind: str, request: httpx.Request) -> httpx.Response:
        items = list(self.data[kind])
        size = self.page_size or int(request.url.params.get("_count", "100"))
        offset = int(request.url.params.get("_offset", "0"))
        page = items[offset : offset + size]
        next_url = None
        if offset + size < len(items):
            next_url = str(request.url.copy_merge_params({"_offset": str(offset + size)}))
        bundle = searchset(page, next_url=next_url, total=len(items))
        if kind == "MedicationRequest" and request.url.params.get("_include"):
            bundle["entry"].append({"resource": MEDICATION, "search": {"mode": "include"}})
        return fhir(bundle)


class Sleeps:
    """An injected sleep that only records what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_source(server: Handler, sleeps: Sleeps | None = None, **kwargs: Any) -> FhirRecordSource:
    return FhirRecordSource(BASE, transport=httpx.MockTransport(server), sleep=sleeps or Sleeps(), **kwargs)


async def test_without_everything_it_runs_scoped_searches_for_each_declared_type() -> None:
    server = FakeFhir()
    record = await make_source(server).fetch_record(PID)
    assert {c.code for c in record.active_conditions} == {f"10{i}" for i in range(7)}
    assert [a.substance for a in record.allergies] == ["Penicillin"]
    assert [m.name for m in record.medications] == ["Lisinopril 10 MG Oral Tablet"], "_include resolved the reference"
    searched = {r.url.path.removeprefix("/r4/"): r for r in server.requests if "patient" in r.url.params}
    assert set(searched) == {"Condition", "AllergyIntolerance", "MedicationRequest"}, "undeclared types are skipped"
    for request in searched.values():
        assert request.url.params["patient"] == PID
        assert request.headers["Prefer"] == "handling=strict"
        assert request.url.params["_count"] == "200"
    assert searched["MedicationRequest"].url.params["_include"] == "MedicationRequest:medication"
    assert "_include" not in searched["Condition"].url.params


async def test_with_everything_declared_it_reads_the_record_in_one_operation() -> None:
    server = FakeFhir(everything=True)
    source = make_source(server)
    record = await source.fetch_record(PID)
    assert len(record.conditions) == 7 and record.medications[0].name.startswith("Lisinopril")
    paths = [r.url.path for r in server.requests]
    assert paths == ["/r4/metadata", f"/r4/Patient/{PID}", f"/r4/Patient/{PID}/$everything"]
    assert source.last_fetch.strategy == "everything"


async def test_a_type_searchable_only_by_subject_is_scoped_by_subject() -> None:
    server = FakeFhir(types={"Condition": ["subject"]})
    record = await make_source(server).fetch_record(PID)
    assert len(record.conditions) == 7
    (search,) = [r for r in server.requests if r.url.path.endswith("/Condition")]
    assert search.url.params["subject"] == f"Patient/{PID}" and "patient" not in search.url.params


async def test_searches_run_concurrently_unless_told_otherwise() -> None:
    in_flight = {"now": 0, "most": 0}
    fake = FakeFhir()

    async def slow(request: httpx.Request) -> httpx.Response:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.02)
        in_flight["now"] -= 1
        return fake(request)

    await FhirRecordSource(BASE, transport=httpx.MockTransport(slow)).fetch_record(PID)
    assert in_flight["most"] == 3
    in_flight["most"] = 0
    await FhirRecordSource(BASE, transport=httpx.MockTransport(slow), concurrency=1).fetch_record(PID)
    assert in_flight["most"] == 1


async def test_a_patient_is_found_by_identifier_when_the_id_is_not_the_servers() -> None:
    server = FakeFhir()
    record = await make_source(server).fetch_record("uuid-ada")
    assert record.patient_id == PID and record.demographics.name == "Ada Fake"
    assert any(r.url.params.get("identifier") == f"{SYNTHEA_IDENTIFIER_SYSTEM}|uuid-ada" for r in server.requests)


async def test_unknown_and_deleted_patients() -> None:
    server = FakeFhir()
    with pytest.raises(PatientNotFoundError, match="nobody"):
        await make_source(server).fetch_record("nobody")
    server.routes["/Patient/gone"] = lambda _: outcome("Patient/gone was deleted", 410)
    with pytest.raises(PatientDeletedError, match="was deleted"):
        await make_source(server).fetch_record("gone")


async def test_two_patients_with_the_same_identifier_are_an_error_not_a_guess() -> None:
    server = FakeFhir()
    server.routes["/Patient"] = lambda _: fhir(searchset([PATIENT, {**PATIENT, "id": "p2"}], total=2))
    with pytest.raises(RecordSourceError, match="2 patients"):
        await make_source(server).fetch_record("uuid-twin")


async def test_429_with_retry_after_seconds_then_success() -> None:
    server, sleeps = FakeFhir(), Sleeps()
    server.fail("/Condition", fhir({"resourceType": "OperationOutcome"}, 429, {"Retry-After": "3"}))
    record = await make_source(server, sleeps).fetch_record(PID)
    assert len(record.conditions) == 7
    assert sleeps.waits == [3.0]


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:07 GMT", now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("soon") is None


async def test_429_with_an_http_date_is_waited_for() -> None:
    server, sleeps = FakeFhir(), Sleeps()
    when = datetime.now(UTC).timestamp() + 5
    server.fail("/metadata", httpx.Response(429, headers={"Retry-After": email.utils.formatdate(when, usegmt=True)}))
    await make_source(server, sleeps).fetch_record(PID)
    assert len(sleeps.waits) == 1 and 3.0 <= sleeps.waits[0] <= 5.0


async def test_503_every_time_gives_up_with_backoff_and_a_clear_error() -> None:
    server, sleeps = FakeFhir(), Sleeps()
    server.fail("/Condition", *[outcome("maintenance", 503) for _ in range(10)])
    with pytest.raises(FhirStatusError) as failed:
        await make_source(server, sleeps).fetch_record(PID)
    message = str(failed.value)
    assert "GET http://fhir.test/r4/Condition?" in message
    assert "failed after 4 attempts: HTTP 503 (error: maintenance)" in message
    assert failed.value.status == 503
    assert len(sleeps.waits) == 3
    for wait, expected in zip(sleeps.waits, (0.5, 1.0, 2.0), strict=True):
        assert expected <= wait <= expected * 1.1


async def test_a_retry_after_longer_than_previsit_waits_fails_at_once() -> None:
    server, sleeps = FakeFhir(), Sleeps()
    server.fail("/metadata", httpx.Response(503, headers={"Retry-After": "3600"}))
    with pytest.raises(FhirStatusError, match="retry after 3600 s, longer than the 30 s"):
        await make_source(server, sleeps).fetch_record(PID)
    assert sleeps.waits == []


async def test_a_500_is_retried_and_a_400_is_not() -> None:
    server, sleeps = FakeFhir(), Sleeps()
    server.fail("/Condition", outcome("boom", 500))
    assert len((await make_source(server, sleeps).fetch_record(PID)).conditions) == 7
    assert len(sleeps.waits) == 1
    server.fail("/Condition", outcome("bad parameter", 400))
    with pytest.raises(FhirStatusError, match="HTTP 400: error: bad parameter"):
        await make_source(server, sleeps).fetch_record(PID)
    assert len(sleeps.waits) == 1


async def test_a_response_slower_than_the_limit_times_out_and_is_retried() -> None:
    fake, sleeps = FakeFhir(), Sleeps()
    slow_once = {"left": 1}

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Condition") and slow_once["left"]:
            slow_once["left"] -= 1
            await asyncio.sleep(5)
        return fake(request)

    source = FhirRecordSource(BASE, transport=httpx.MockTransport(handler), sleep=sleeps, timeout_s=0.1)
    assert len((await source.fetch_record(PID)).conditions) == 7
    assert len(sleeps.waits) == 1

    async def always_slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return fake(request)

    never = FhirRecordSource(BASE, transport=httpx.MockTransport(always_slow), sleep=Sleeps(), timeout_s=0.05)
    with pytest.raises(FhirTransportError, match=r"metadata failed after 4 attempts: no answer within 0.05 s"):
        await never.fetch_record(PID)


async def test_the_whole_record_has_a_deadline() -> None:
    fake = FakeFhir()

    async def sluggish(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return fake(request)

    source = FhirRecordSource(BASE, transport=httpx.MockTransport(sluggish), record_deadline_s=0.12, timeout_s=1)
    with pytest.raises(FhirDeadlineError, match=r"longer than 0\.12 s"):
        await source.fetch_record(PID)


async def test_a_server_that_is_down() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    sleeps = Sleeps()
    source = FhirRecordSource(f"http://127.0.0.1:{port}/fhir", sleep=sleeps, retry=RetryPolicy(attempts=2))
    with pytest.raises(FhirTransportError, match=r"failed after 2 attempts: cannot connect \(ConnectError"):
        await source.fetch_record(PID)
    assert len(sleeps.waits) == 1


async def test_truncated_json_is_a_clear_error() -> None:
    server = FakeFhir()
    whole = json.dumps(searchset(CONDITIONS)).encode()
    server.fail("/Condition", httpx.Response(200, content=whole[: len(whole) // 2]))
    with pytest.raises(FhirResponseError, match="the answer is not valid JSON"):
        await make_source(server).fetch_record(PID)


async def test_a_base_url_that_is_not_fhir() -> None:
    html = FakeFhir()
    html.fail("/metadata", httpx.Response(200, text="<html>Welcome</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(FhirResponseError, match=r"not valid JSON \(text/html.*is http://fhir.test/r4 a FHIR server"):
        await make_source(html).fetch_record(PID)
    missing = FakeFhir()
    missing.fail("/metadata", httpx.Response(404, text="Not Found"))
    with pytest.raises(FhirStatusError, match="does not answer as a FHIR server"):
        await make_source(missing).fetch_record(PID)
    with pytest.raises(RecordSourceError, match="not an http"):
        FhirRecordSource("ftp://example.org/fhir")


async def test_an_operation_outcome_in_place_of_a_bundle() -> None:
    server = FakeFhir()
    server.fail("/Condition", outcome("search is disabled today", 200))
    with pytest.raises(FhirResponseError, match="expected a Bundle, got a OperationOutcome: error: search is disabled"):
        await make_source(server).fetch_record(PID)


async def test_an_invalid_resource_is_left_out_and_counted() -> None:
    server = FakeFhir()
    server.data["Condition"].append(_condition("bad", "999", "Broken", status=42))
    record = await make_source(server).fetch_record(PID)
    assert len(record.conditions) == 7 and record.find("Condition/bad") is None
    assert record.skipped_resources == 1


async def test_a_resource_of_another_patient_is_left_out_and_counted() -> None:
    server = FakeFhir(everything=True)
    server.data["Condition"].append(_condition("theirs", "555", "Someone else's problem", patient="p2"))
    record = await make_source(server).fetch_record(PID)
    assert record.find("Condition/theirs") is None
    assert record.skipped_resources == 1


async def test_a_next_link_that_loops_stops_with_a_partial_record() -> None:
    server = FakeFhir()
    server.page_size = 3
    server.routes["/Condition"] = lambda request: fhir(
        searchset(CONDITIONS[:3], next_url=str(request.url), total=len(CONDITIONS))
    )
    source = make_source(server)
    record = await source.fetch_record(PID)
    assert len(record.conditions) == 3
    assert record.skipped_resources == 4, "what the server reported but paging could not reach"
    assert any("repeats a page" in n for n in source.last_fetch.notes)
    assert sum(1 for r in server.requests if r.url.path.endswith("/Condition")) == 1


async def test_endless_distinct_next_links_stop_at_the_page_cap() -> None:
    server = FakeFhir()
    counter = {"n": 0}

    def endless(request: httpx.Request) -> httpx.Response:
        counter["n"] += 1
        return fhir(searchset([CONDITIONS[0]], next_url=f"{BASE}/Condition?patient={PID}&page={counter['n']}"))

    server.routes["/Condition"] = endless
    source = make_source(server, max_pages=5)
    record = await source.fetch_record(PID)
    assert counter["n"] == 5 and len(record.conditions) == 1
    assert record.skipped_resources >= 1
    assert any("after 5 pages" in n for n in source.last_fetch.notes)


async def test_a_next_link_to_another_server_is_not_followed() -> None:
    server = FakeFhir()
    server.routes["/Condition"] = lambda _: fhir(
        searchset(CONDITIONS[:2], next_url=f"http://elsewhere.test/fhir/Condition?patient={PID}&page=2", total=7)
    )
    source = make_source(server)
    record = await source.fetch_record(PID)
    assert len(record.conditions) == 2 and record.skipped_resources == 5
    assert all(r.url.host == "fhir.test" for r in server.requests)


async def test_paging_follows_next_links_to_the_end() -> None:
    server = FakeFhir()
    source = make_source(server, page_size=2)
    record = await source.fetch_record(PID)
    assert len(record.conditions) == 7 and record.skipped_resources == 0
    offsets = [r.url.params.get("_offset", "0") for r in server.requests if r.url.path.endswith("/Condition")]
    assert offsets == ["0", "2", "4", "6"]


def test_the_scope_guard_refuses_every_other_patient() -> None:
    scope = PatientScope(PID, BASE)
    for allowed in (
        f"{BASE}/metadata",
        f"{BASE}/Patient/{PID}",
        f"{BASE}/Patient/{PID}/$everything?_count=200",
        f"{BASE}/Condition?patient={PID}&_count=10",
        f"{BASE}/Observation?subject=Patient/{PID}",
    ):
        scope.check_request(httpx.URL(allowed))
    scope.check_request(httpx.URL(f"{BASE}?_getpages=abc&_getpagesoffset=20"), next_link=True)
    for refused in (
        f"{BASE}/Patient/p2",
        f"{BASE}/Patient/p2/$everything",
        f"{BASE}/Patient?name=Kermit",
        f"{BASE}/Condition?patient=p2",
        f"{BASE}/Condition?patient={PID},p2",
        f"{BASE}/Condition?patient={PID}&patient=p2",
        f"{BASE}/AllergyIntolerance?subject=Patient/p2",
        f"{BASE}/Condition",
        f"{BASE}/Condition?code=123",
        f"{BASE}/Claim?patient={PID}",
        f"{BASE}?_getpages=abc",
        "http://fhir.test/other/Patient/p1",
    ):
        with pytest.raises(FhirScopeError):
            scope.check_request(httpx.URL(refused))
    with pytest.raises(FhirScopeError):
        scope.check_request(httpx.URL(f"{BASE}/Condition?patient=p2&_offset=10"), next_link=True)


async def test_a_next_link_naming_another_patient_is_refused_before_it_is_sent() -> None:
    server = FakeFhir()
    server.routes["/Condition"] = lambda request: (
        fhir(searchset(CONDITIONS[:2], next_url=f"{BASE}/Condition?patient=p2&_offset=2"))
        if request.url.params.get("patient") == PID
        else pytest.fail("a request for another patient reached the server")
    )
    with pytest.raises(FhirScopeError, match="other than the bound Patient/p1"):
        await make_source(server).fetch_record(PID)


async def test_the_client_never_sends_a_request_off_its_server() -> None:
    async with FhirClient(BASE, transport=httpx.MockTransport(FakeFhir())) as client:
        with pytest.raises(FhirScopeError, match="off the FHIR server"):
            await client.get_json("http://elsewhere.test/r4/metadata")


class QuickPatient:
    """Ends the interview at once (the record load is what these tests are about)."""

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        return "A rash on my arm. That's all, I need to go."


def _slow(fake: FakeFhir) -> Callable[[httpx.Request], Any]:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Condition"):
            await asyncio.sleep(5)
        return fake(request)

    return handler


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _fault(name: str) -> tuple[Any, str]:
    fake = FakeFhir()
    if name == "down":
        return _refused, "unavailable"
    if name == "500":
        fake.fail("/Condition", *[outcome("boom", 500)] * 10)
    elif name == "429":
        fake.fail("/metadata", *[httpx.Response(429, headers={"Retry-After": "1"})] * 10)
    elif name == "slow":
        return _slow(fake), "unavailable"
    elif name == "truncated":
        fake.fail(f"/Patient/{PID}", httpx.Response(200, content=b'{"resourceType": "Pat'))
    elif name == "outcome":
        fake.fail("/Condition", outcome("no", 200))
    elif name == "invalid resource":
        fake.data["Condition"].append(_condition("bad", "999", "Broken", status=42))
        return fake, "partial"
    elif name == "loop":
        fake.routes["/Condition"] = lambda request: fhir(searchset(CONDITIONS[:3], next_url=str(request.url), total=7))
        return fake, "partial"
    return fake, "unavailable"


@pytest.mark.parametrize("fault", ["down", "500", "429", "slow", "truncated", "outcome", "invalid resource", "loop"])
async def test_the_intake_completes_over_a_faulty_server_and_flags_the_record(fault: str) -> None:
    handler, expected = _fault(fault)
    source = FhirRecordSource(BASE, transport=httpx.MockTransport(handler), sleep=Sleeps(), timeout_s=0.05)
    graph = compile_intake_graph(InMemorySaver())
    result = await graph.ainvoke(
        IntakeInput(patient_id=PID, reason_for_visit="rash", max_questions=3),
        {"configurable": {"thread_id": fault}},
        context=IntakeContext(record_source=source, patient=QuickPatient()),
    )
    output = IntakeOutput.model_validate(result)
    assert output.summary is not None and output.turns
    flags = [f for f in output.summary.flags if f.kind == "record_unavailable"]
    assert flags, [f.message for f in output.summary.flags]
    if expected == "partial":
        assert re.search("record is partial", flags[0].message)
    else:
        assert "could not be loaded" in flags[0].message


async def test_a_transaction_that_may_have_been_processed_is_not_sent_twice() -> None:
    """A timed-out load could have been applied: retrying it could duplicate a whole record."""
    calls = {"n": 0}

    async def slow_post(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        await asyncio.sleep(5)
        return fhir({"resourceType": "Bundle", "type": "transaction-response"})

    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    async with FhirClient(BASE, transport=httpx.MockTransport(slow_post), timeout_s=0.05, sleep=Sleeps()) as client:
        with pytest.raises(FhirTransportError, match="not retried: the server may have processed it"):
            await client.transaction(bundle, idempotent=False)
    assert calls["n"] == 1

    answers = [outcome("busy", 503), outcome("boom", 500)]
    async with FhirClient(BASE, transport=httpx.MockTransport(lambda _: answers.pop(0)), sleep=Sleeps()) as client:
        with pytest.raises(FhirStatusError, match="HTTP 500"):
            await client.transaction(bundle, idempotent=False)  # 503 is retried (not processed); 500 is not
    assert not answers
