"""Write-back: a finished intake's transaction Bundle (`graphs.render_fhir.render_fhir_bundle`) sent to
the EHR so that sending it again creates nothing new.

Every resource in the bundle carries an identifier derived from the session
(``urn:previsit:session|<session>/<name>``) and a deterministic ``urn:uuid`` fullUrl. Two ways to
write it, chosen from the server's CapabilityStatement:

- ``conditional-create``: when the server declares conditional create and an ``identifier`` search
  for every type in the bundle, the bundle goes as rendered: each entry a ``POST`` with
  ``ifNoneExist: identifier=...``. Afterwards each identifier is searched (``_summary=count``); more
  than one match means the server ignored ``ifNoneExist``, and the result says so.
- ``read-then-put``: otherwise (or when the server rejects the conditional transaction), each
  resource gets the id of its fullUrl's UUID; those that the server already has (``GET`` answers
  200, or 410 because someone deleted it on purpose) are left alone, and the rest go in one
  transaction of ``PUT Type/id`` (update-as-create), with the bundle's ``urn:uuid`` references
  rewritten to ``Type/id``. A second run finds everything and sends nothing. Nothing that is
  already on the server is ever overwritten (a clinician may have amended it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.summary_schema import ClinicianSummary
from agents.transcript import Turn
from graphs.render_fhir import IDENTIFIER_SYSTEM, render_fhir_bundle
from tools.fhir.client import FhirClient, FhirError, FhirResponseError, FhirStatusError, ServerCapabilities

log = logging.getLogger("previsit.fhir.writeback")

WriteMode = Literal["conditional-create", "read-then-put"]


class WriteBackError(FhirError):
    """The write-back could not be done (the summary stays on disk; it can be sent again)."""


@dataclass
class WriteBackResult:
    """What a write-back did."""

    mode: WriteMode
    created: list[str] = field(default_factory=list)
    """``Type/id`` of resources this run created."""
    existing: list[str] = field(default_factory=list)
    """``Type/id`` of resources already on the server (left as they were)."""
    notes: list[str] = field(default_factory=list)
    """How the mode was chosen, and anything the server did wrong (duplicates)."""

    def describe(self) -> str:
        parts = [f"{len(self.created)} created", f"{len(self.existing)} already there"]
        return f"write-back ({self.mode}): {', '.join(parts)}"


def _entry_types(bundle: Mapping[str, Any]) -> list[str]:
    return sorted({str(e["resource"]["resourceType"]) for e in bundle.get("entry") or []})


def _identifier_query(entry: Mapping[str, Any]) -> str:
    return str(entry["request"].get("ifNoneExist") or "")


def _location(response_entry: Mapping[str, Any]) -> str | None:
    location = (response_entry.get("response") or {}).get("location")
    if isinstance(location, str) and location:
        parts = [p for p in location.split("/_history")[0].split("/") if p]
        if len(parts) >= 2:
            return f"{parts[-2]}/{parts[-1]}"
    resource = response_entry.get("resource")
    if isinstance(resource, dict) and resource.get("id"):
        return f"{resource['resourceType']}/{resource['id']}"
    return None


async def write_bundle(
    client: FhirClient, bundle: Mapping[str, Any], capabilities: ServerCapabilities | None = None
) -> WriteBackResult:
    """Send a rendered write-back bundle without duplicating what an earlier run wrote."""
    caps = capabilities or await client.capabilities()
    types = _entry_types(bundle)
    lacking = [t for t in types if not caps.can_conditional_create(t)]
    if not lacking:
        try:
            return await _conditional(client, bundle)
        except FhirStatusError as exc:
            if exc.status not in (400, 404, 412, 422):
                raise
            note = f"the server refused the conditional-create transaction ({exc.diagnostics or exc.status})"
            log.warning("%s; writing with deterministic ids instead", note)
            result = await _read_then_put(client, bundle)
            result.notes.insert(0, note)
            return result
    result = await _read_then_put(client, bundle)
    result.notes.insert(
        0,
        f"the server declares no conditional create on identifier for {', '.join(lacking)}: wrote with "
        "deterministic ids (read, then PUT what is missing)",
    )
    return result


async def _conditional(client: FhirClient, bundle: Mapping[str, Any]) -> WriteBackResult:
    answer = await client.transaction(bundle)
    result = WriteBackResult(mode="conditional-create")
    for sent, got in zip(bundle.get("entry") or [], answer.get("entry") or [], strict=False):
        status = str((got.get("response") or {}).get("status", ""))
        where = _location(got) or str(sent["resource"]["resourceType"])
        (result.created if status.startswith("201") else result.existing).append(where)
    for entry in bundle.get("entry") or []:
        kind = entry["resource"]["resourceType"]
        query = _identifier_query(entry)
        if not query.startswith("identifier="):
            continue
        counted = await client.get_json(
            kind, params=[("identifier", query.removeprefix("identifier=")), ("_summary", "count")], expect="Bundle"
        )
        total = counted.get("total")
        if isinstance(total, int) and total > 1:
            result.notes.append(f"the server ignored ifNoneExist: {total} {kind} resources carry {query}")
    return result


def _id_of(entry: Mapping[str, Any]) -> str:
    full_url = str(entry.get("fullUrl") or "")
    if not full_url.startswith("urn:uuid:"):
        raise WriteBackError(f"write-back entry without a urn:uuid fullUrl: {full_url!r}")
    return full_url.removeprefix("urn:uuid:")


def _rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite_references(v, mapping))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_references(v, mapping) for v in node]
    return node


async def _read_then_put(client: FhirClient, bundle: Mapping[str, Any]) -> WriteBackResult:
    result = WriteBackResult(mode="read-then-put")
    entries = list(bundle.get("entry") or [])
    mapping = {str(e["fullUrl"]): f"{e['resource']['resourceType']}/{_id_of(e)}" for e in entries}
    refs = [mapping[str(e["fullUrl"])] for e in entries]
    found = await asyncio.gather(
        *(client.request("GET", ref, ok=frozenset({200}), passthrough=frozenset({404, 410})) for ref in refs)
    )
    missing: list[dict[str, Any]] = []
    for entry, ref, response in zip(entries, refs, found, strict=True):
        if response.status_code == 404:
            resource = _rewrite_references(copy.deepcopy(entry["resource"]), mapping)
            resource["id"] = ref.split("/", 1)[1]
            missing.append(
                {"fullUrl": f"{client.base_url}/{ref}", "resource": resource, "request": {"method": "PUT", "url": ref}}
            )
            continue
        result.existing.append(ref)
        if response.status_code == 410:
            result.notes.append(f"{ref} was deleted on the server; not written again")
    if not missing:
        return result
    answer = await client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": missing})
    got = answer.get("entry") or []
    if len(got) != len(missing):
        raise FhirResponseError(f"the transaction answer has {len(got)} entries for {len(missing)} sent")
    for sent, response_entry in zip(missing, got, strict=True):
        status = str((response_entry.get("response") or {}).get("status", ""))
        ref = str(sent["request"]["url"])
        (result.created if status.startswith("201") else result.existing).append(ref)
    return result


async def write_back_summary(
    client: FhirClient,
    summary: ClinicianSummary,
    turns: list[Turn],
    session_id: str,
    patient_ref: str,
    capabilities: ServerCapabilities | None = None,
) -> WriteBackResult:
    """Render a finished intake as a transaction Bundle about `patient_ref` and write it back."""
    bundle = render_fhir_bundle(summary, turns, session_id, patient_ref=patient_ref)
    return await write_bundle(client, bundle, capabilities)


__all__ = [
    "IDENTIFIER_SYSTEM",
    "WriteBackError",
    "WriteBackResult",
    "write_back_summary",
    "write_bundle",
]
