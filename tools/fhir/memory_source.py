"""A record source over records held in memory: the test double of `RecordSource`.

It also records every patient id it was asked for, so tests can assert that a session never asks
for anyone but its bound patient.
"""

from __future__ import annotations

from collections.abc import Iterable

from tools.fhir.record import PatientNotFoundError, PatientRecord, RecordSourceError


class InMemoryRecordSource:
    """Serves the records it was given; `broken=True` makes every fetch fail like a dead server."""

    def __init__(self, records: Iterable[PatientRecord] = (), *, broken: bool = False) -> None:
        self._records = {r.patient_id: r for r in records}
        self._broken = broken
        self.requested: list[str] = []

    async def fetch_record(self, patient_id: str) -> PatientRecord:
        self.requested.append(patient_id)
        if self._broken:
            raise RecordSourceError("record source unavailable (simulated outage)")
        try:
            return self._records[patient_id]
        except KeyError:
            raise PatientNotFoundError(patient_id, sorted(self._records)) from None

    async def list_patients(self) -> list[tuple[str, str]]:
        return [(pid, r.demographics.name) for pid, r in self._records.items()]
