"""Patient scope: the session's one patient, bound once, added to every request by code.

A `PatientScope` is made from the server's own id for the patient after the patient is found
(by id or by identifier). From then on:

- every request is built by the scope (`read`, `everything`, `search`): the patient goes in the
  path (``Patient/{id}``, ``Patient/{id}/$everything``) or in the search parameter (``patient=``,
  else ``subject=Patient/{id}``), never from text a patient or a model wrote;
- `PatientScope.check_request` is the client's request guard: a request whose path or
  ``patient``/``subject`` parameters name anyone else is refused before it is sent
  (`FhirScopeError`); a server's paging link must stay on the server and, if it names a patient,
  name this one;
- `PatientScope.owns` checks every resource that comes back: one that belongs to another patient is
  left out and counted, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx

from tools.fhir.client import FhirScopeError, ServerCapabilities

# The resource types a record is searched for, and the element naming their patient (R4).
PATIENT_ELEMENT: dict[str, str] = {
    "Condition": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "AllergyIntolerance": "patient",
    "Observation": "subject",
    "Encounter": "subject",
    "Immunization": "patient",
    "ImagingStudy": "subject",
}
RECORD_SEARCH_TYPES: tuple[str, ...] = tuple(PATIENT_ELEMENT)
# Types a record may hold that belong to no patient (a Medication a request points at).
SHARED_TYPES = frozenset({"Medication"})
_PATIENT_PARAMS = ("patient", "subject", "patient:Patient", "subject:Patient")


def reference_id(reference: str, resource_type: str) -> str | None:
    """The id in a literal reference to `resource_type` (relative, absolute or versioned), else None."""
    parts = [p for p in reference.split("?")[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


@dataclass(frozen=True)
class PatientScope:
    """One patient on one server; the only patient a bound session's requests may name."""

    patient_id: str
    """The server's id for the patient (``Patient/{patient_id}``)."""
    base_url: str
    bound_key: str = ""
    """What the session was bound with (an id or an identifier value), for messages."""

    @property
    def reference(self) -> str:
        return f"Patient/{self.patient_id}"

    def read(self) -> str:
        return self.reference

    def everything(self) -> str:
        return f"{self.reference}/$everything"

    def search(
        self, resource_type: str, capabilities: ServerCapabilities | None, page_size: int
    ) -> tuple[str, list[tuple[str, str]]] | None:
        """The path and parameters of a search for this patient's resources of one type, or None when
        the server offers no way to scope that type to a patient."""
        element = PATIENT_ELEMENT.get(resource_type)
        if element is None:
            raise FhirScopeError(f"{resource_type} is not a patient record type previsit searches")
        caps = capabilities if capabilities is not None and capabilities.types else None
        if caps is not None and not caps.declares(resource_type):
            return None
        params: list[tuple[str, str]]
        if caps is None or caps.supports_search_param(resource_type, "patient"):
            params = [("patient", self.patient_id)]
        elif caps.supports_search_param(resource_type, element):
            params = [(element, self.reference)]
        else:
            return None
        params.append(("_count", str(page_size)))
        if resource_type == "MedicationRequest" and (
            caps is None or caps.supports_include("MedicationRequest", "MedicationRequest:medication")
        ):
            params.append(("_include", "MedicationRequest:medication"))
        return resource_type, params

    def owns(self, resource: dict[str, Any]) -> bool:
        """Does this resource belong to the bound patient (or to no patient, like a Medication)?"""
        kind = resource.get("resourceType")
        if kind == "Patient":
            return resource.get("id") == self.patient_id
        if kind in SHARED_TYPES:
            return True
        element = PATIENT_ELEMENT.get(str(kind))
        if element is None:
            return False
        target = resource.get(element)
        reference = target.get("reference") if isinstance(target, dict) else None
        return isinstance(reference, str) and reference_id(reference, "Patient") == self.patient_id

    def _names_this_patient(self, value: str) -> bool:
        value = unquote(value)
        return value == self.patient_id or reference_id(value, "Patient") == self.patient_id

    def check_request(self, url: httpx.URL, next_link: bool = False) -> None:
        """Refuse (`FhirScopeError`) a request that is not about the bound patient."""
        base = httpx.URL(self.base_url.rstrip("/") + "/")
        path = url.path
        if not path.startswith(base.path) and path + "/" != base.path:
            raise FhirScopeError(f"request outside the FHIR base {self.base_url}: {url}")
        segments = [unquote(s) for s in path[len(base.path) :].split("/") if s]
        for name, value in url.params.multi_items():
            if name in _PATIENT_PARAMS and not all(self._names_this_patient(v) for v in value.split(",")):
                raise FhirScopeError(f"request names a patient other than the bound {self.reference}: {name}={value}")
        if segments == ["metadata"]:
            return
        if segments[:2] == ["Patient", self.patient_id]:
            return
        if segments and segments[0] == "Patient":
            raise FhirScopeError(f"request for a patient other than the bound {self.reference}: {url}")
        if len(segments) == 1 and segments[0] in PATIENT_ELEMENT:
            if any(name in _PATIENT_PARAMS for name, _ in url.params.multi_items()):
                return
            raise FhirScopeError(f"search of {segments[0]} without the bound patient {self.reference}: {url}")
        if next_link:
            # A server's own continuation link (e.g. HAPI's ``?_getpages=...``) on the same server;
            # what it returns is checked resource by resource with `owns`.
            return
        raise FhirScopeError(f"request outside the bound patient's record ({self.reference}): {url}")
