"""The patient record as previsit sees it, and the interface every record source implements.

A `PatientRecord` is what the interview and the summary may know about a patient. Every entry
keeps `ref` (``Condition/abc``) so that anything said from the chart can cite where it came from.
Sources differ (fixture bundles today, a FHIR server in the FHIR issue); the interface does not.

Exception hierarchy::

    RecordError                 the record could not be had
    ├── PatientNotFoundError    no patient with that id or identifier in this source
    └── RecordSourceError       the source itself failed (unreadable file, server error)
"""

from __future__ import annotations

from datetime import date
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field


class RecordError(Exception):
    """The record could not be had."""


class PatientNotFoundError(RecordError):
    """No patient with that id in this source."""

    def __init__(self, patient_id: str, known: list[str] | None = None) -> None:
        self.patient_id = patient_id
        self.known = known or []
        hint = f" Known patients: {', '.join(self.known[:20])}." if self.known else ""
        super().__init__(f"No patient {patient_id!r} in the record source.{hint}")


class RecordSourceError(RecordError):
    """The source itself failed (unreadable bundle, server error)."""


class RecordEntry(BaseModel):
    """Anything in the record that a statement may cite."""

    ref: str = Field(description="Resource reference, e.g. 'Condition/abc'.")
    duplicate_refs: list[str] = Field(
        default_factory=list, description="Other entries merged into this one as duplicates; citing them resolves here."
    )


class RecordCondition(RecordEntry):
    name: str
    code: str | None = Field(default=None, description="SNOMED CT (or other) code.")
    clinical_status: str = Field(description="active, resolved, remission, inactive, ...")
    onset: date | None = None
    abatement: date | None = None


class RecordMedication(RecordEntry):
    name: str
    code: str | None = Field(default=None, description="RxNorm code when the source has one.")
    status: str = Field(description="MedicationRequest/Statement status: active, stopped, completed, ...")
    dosage: str | None = Field(default=None, description="Dosage instruction text when recorded.")
    authored: date | None = None


class RecordAllergy(RecordEntry):
    substance: str
    code: str | None = None
    clinical_status: str = "active"
    criticality: str | None = None
    category: list[str] = Field(default_factory=list)
    reactions: list[str] = Field(default_factory=list)


class RecordObservation(RecordEntry):
    name: str
    code: str | None = Field(default=None, description="LOINC code.")
    value: str = Field(description="Value with unit, rendered for reading.")
    category: str | None = Field(default=None, description="vital-signs, laboratory, survey, ...")
    effective: date | None = None
    interpretation: str | None = Field(default=None, description="Abnormal flag (H, L, A, ...) if any.")


class RecordEncounter(RecordEntry):
    type: str
    start: date | None = None
    reason: str | None = None


class RecordImmunization(RecordEntry):
    vaccine: str
    occurrence: date | None = None


class RecordImagingStudy(RecordEntry):
    description: str
    started: date | None = None
    modality: str | None = None


class Demographics(RecordEntry):
    name: str
    birth_date: date | None = None
    gender: str | None = None
    deceased: bool = False
    deceased_date: date | None = Field(default=None, description="Date of death when the record gives one.")


class PatientRecord(BaseModel):
    """Everything a source knows about one patient, each entry citable by its `ref`."""

    patient_id: str = Field(description="The id the session is bound to.")
    demographics: Demographics
    conditions: list[RecordCondition] = Field(default_factory=list)
    medications: list[RecordMedication] = Field(default_factory=list)
    allergies: list[RecordAllergy] = Field(default_factory=list)
    observations: list[RecordObservation] = Field(default_factory=list)
    encounters: list[RecordEncounter] = Field(default_factory=list)
    immunizations: list[RecordImmunization] = Field(default_factory=list)
    imaging_studies: list[RecordImagingStudy] = Field(default_factory=list)
    skipped_resources: int = Field(default=0, description="Resources that failed validation and were left out.")
    entered_in_error_removed: int = Field(default=0, description="Entries marked entered-in-error, left out.")
    duplicates_merged: int = Field(default=0, description="Duplicate entries merged into another entry.")
    source: str = Field(default="", description="Where the record came from (a file or a base URL).")

    @property
    def active_conditions(self) -> list[RecordCondition]:
        return [c for c in self.conditions if c.clinical_status in {"active", "recurrence", "relapse"}]

    @property
    def active_medications(self) -> list[RecordMedication]:
        return [m for m in self.medications if m.status in {"active", "on-hold", "intended"}]

    @property
    def active_allergies(self) -> list[RecordAllergy]:
        return [a for a in self.allergies if a.clinical_status == "active"]

    def find(self, ref: str) -> RecordEntry | None:
        """The entry a citation points at, if the record has it."""
        for group in (
            [self.demographics],
            self.conditions,
            self.medications,
            self.allergies,
            self.observations,
            self.encounters,
            self.immunizations,
            self.imaging_studies,
        ):
            for entry in group:
                if entry.ref == ref or ref in entry.duplicate_refs:
                    return entry
        return None


class CitedLine(BaseModel):
    """One line of chart context a prompt sees, with the resource it came from."""

    text: str
    ref: str

    def render(self) -> str:
        """The line as a prompt sees it (what the token budget counts)."""
        return f"- {self.text} [{self.ref}]"


class ChartContext(BaseModel):
    """The chart as a prompt sees it: cited lines chosen by clinical priority under a token budget."""

    lines: list[CitedLine]
    token_budget: int
    tokens_used: int
    omitted: int = Field(default=0, description="Record entries that did not fit the budget.")

    def render(self) -> str:
        return "\n".join(line.render() for line in self.lines)


@runtime_checkable
class RecordSource(Protocol):
    """Where records come from: fixture bundles now, a FHIR server later."""

    async def fetch_record(self, patient_id: str) -> PatientRecord:
        """The record of one patient; raises `PatientNotFoundError` or `RecordSourceError`."""
        ...

    async def list_patients(self) -> list[tuple[str, str]]:
        """(patient id, display name) pairs this source can serve."""
        ...
