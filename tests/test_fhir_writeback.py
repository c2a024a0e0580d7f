"""Write-back modes against fake servers: conditional create where declared and honoured, the
fallback when a server refuses it, and detection of a server that ignores ``ifNoneExist``.

`tests/test_fhir_server.py` writes real intakes to SEKMET (which needs the fallback for Composition
and QuestionnaireResponse, and honours conditional create for Flag).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.test_fhir_client import BASE, capability, fhir, outcome
from tools.fhir.client import FhirClient
from tools.fhir.writeback import write_bundle

FLAG_URN = f"urn:uuid:{uuid.UUID(int=1)}"
COMPOSITION_URN = f"urn:uuid:{uuid.UUID(int=2)}"


def _bundle() -> dict[str, Any]:
    def entry(full_url: str, resource: dict[str, Any], name: str) -> dict[str, Any]:
        ident = f"urn:previsit:session|s1/{name}"
        return {
            "fullUrl": full_url,
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": f"identifier={ident}"},
        }

    flag = {
        "resourceType": "Flag",
        "identifier": [{"system": "urn:previsit:session", "value": "s1/flag-1"}],
        "status": "active",
        "code": {"text": "stale value"},
        "subject": {"reference": "Patient/p1"},
    }
    composition = {
        "resourceType": "Composition",
        "identifier": {"system": "urn:previsit:session", "value": "s1/composition"},
        "status": "preliminary",
        "type": {"text": "Pre-visit summary"},
        "subject": {"reference": "Patient/p1"},
        "date": "2025-01-01T00:00:00Z",
        "author": [{"display": "previsit"}],
        "title": "Pre-visit summary",
        "section": [{"title": "Uncertainties", "entry": [{"reference": FLAG_URN}]}],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry(FLAG_URN, flag, "flag-1"), entry(COMPOSITION_URN, composition, "composition")],
    }


class WriteServer:
    """Stores what it is sent; `conditional` says how it treats ifNoneExist: 'honour', 'refuse', 'ignore'."""

    def __init__(self, conditional: str, *, declare: bool = True) -> None:
        self.conditional = conditional
        types = {"Flag": ["identifier", "patient"], "Composition": ["identifier", "patient"]}
        self.capability = capability(types=types)
        for res in self.capability["rest"][0]["resource"]:
            res["conditionalCreate"] = declare
        self.store: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()
        self.posts = 0

    def _matching(self, kind: str, token: str) -> list[dict[str, Any]]:
        system, _, value = token.partition("|")
        found = []
        for ref, resource in self.store.items():
            if not ref.startswith(f"{kind}/"):
                continue
            ids = resource.get("identifier")
            ids = ids if isinstance(ids, list) else [ids]
            if any(i and i.get("system") == system and i.get("value") == value for i in ids):
                found.append(resource)
        return found

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/r4")
        if path == "/metadata":
            return fhir(self.capability)
        if request.method == "GET" and path.count("/") == 2:
            ref = path.strip("/")
            if ref in self.gone:
                return outcome("deleted", 410)
            return fhir(self.store[ref]) if ref in self.store else outcome("not found", 404)
        if request.method == "GET":
            kind = path.strip("/")
            matches = self._matching(kind, request.url.params["identifier"])
            return fhir({"resourceType": "Bundle", "type": "searchset", "total": len(matches)})
        if request.method == "POST" and path in ("", "/"):
            self.posts += 1
            return self._transaction(json.loads(request.content))
        return outcome("unsupported", 400)

    def _transaction(self, bundle: dict[str, Any]) -> httpx.Response:
        entries = bundle["entry"]
        if self.conditional == "refuse" and any("ifNoneExist" in e["request"] for e in entries):
            return outcome("conditional create is not supported here", 400)
        answers = []
        mapping: dict[str, str] = {}
        for e in entries:
            kind = e["resource"]["resourceType"]
            if e["request"]["method"] == "PUT":
                ref = e["request"]["url"]
                status = "200 OK" if ref in self.store else "201 Created"
            else:
                existing = []
                if self.conditional == "honour" and "ifNoneExist" in e["request"]:
                    existing = self._matching(kind, e["request"]["ifNoneExist"].removeprefix("identifier="))
                ref = f"{kind}/{existing[0]['id']}" if existing else f"{kind}/{uuid.uuid4()}"
                status = "200 OK" if existing else "201 Created"
            mapping[e["fullUrl"]] = ref
            answers.append((ref, status, e))
        out = []
        for ref, status, e in answers:
            if status.startswith("201"):
                body = json.loads(json.dumps(e["resource"]).replace(FLAG_URN, mapping.get(FLAG_URN, FLAG_URN)))
                self.store[ref] = {**body, "id": ref.split("/")[1]}
            out.append({"response": {"status": status, "location": f"{BASE}/{ref}/_history/1"}})
        return fhir({"resourceType": "Bundle", "type": "transaction-response", "entry": out})


async def _write_twice(server: WriteServer) -> tuple[Any, Any]:
    async with FhirClient(BASE, transport=httpx.MockTransport(server)) as client:
        return await write_bundle(client, _bundle()), await write_bundle(client, _bundle())


async def test_conditional_create_where_declared_and_honoured() -> None:
    server = WriteServer("honour")
    first, second = await _write_twice(server)
    assert first.mode == "conditional-create" and len(first.created) == 2 and not first.notes
    assert not second.created and sorted(second.existing) == sorted(first.created) and not second.notes
    assert len(server.store) == 2


async def test_a_server_that_refuses_conditional_create_gets_deterministic_ids() -> None:
    server = WriteServer("refuse")
    first, second = await _write_twice(server)
    assert first.mode == second.mode == "read-then-put"
    assert "refused the conditional-create transaction" in first.notes[0]
    assert sorted(first.created) == [f"Composition/{uuid.UUID(int=2)}", f"Flag/{uuid.UUID(int=1)}"]
    assert not second.created and len(server.store) == 2
    composition = server.store[f"Composition/{uuid.UUID(int=2)}"]
    assert composition["section"][0]["entry"] == [{"reference": f"Flag/{uuid.UUID(int=1)}"}]


async def test_a_server_that_declares_nothing_gets_deterministic_ids_and_nothing_is_resent() -> None:
    server = WriteServer("ignore", declare=False)
    first, second = await _write_twice(server)
    assert first.mode == "read-then-put" and "declares no conditional create" in first.notes[0]
    assert server.posts == 1, "the second run found everything and sent nothing"
    assert not second.created


async def test_a_server_that_ignores_if_none_exist_is_caught() -> None:
    server = WriteServer("ignore")
    first, second = await _write_twice(server)
    assert not first.notes
    assert len(second.created) == 2, "the server created duplicates"
    assert any("ignored ifNoneExist: 2 Flag resources" in n for n in second.notes)


async def test_a_resource_deleted_on_the_server_is_not_written_again() -> None:
    server = WriteServer("ignore", declare=False)
    async with FhirClient(BASE, transport=httpx.MockTransport(server)) as client:
        await write_bundle(client, _bundle())
        flag = f"Flag/{uuid.UUID(int=1)}"
        del server.store[flag]
        server.gone.add(flag)
        again = await write_bundle(client, _bundle())
    assert not again.created and flag in again.existing
    assert any("was deleted on the server" in n for n in again.notes)
