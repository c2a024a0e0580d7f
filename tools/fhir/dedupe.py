"""Cleaning a record before anyone reads it: entered-in-error entries go, duplicates merge.

EHR records repeat themselves (the same allergy entered twice, an active prescription re-issued
without the old one being closed) and carry entries marked entered-in-error. A clinician should
see each active problem, medication and allergy once; the merged entry keeps the other entries'
references in `duplicate_refs`, so a citation of any of them still resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, TypeVar

from tools.fhir.record import PatientRecord, RecordAllergy, RecordCondition, RecordEntry, RecordMedication

ENTERED_IN_ERROR = "entered-in-error"
_CRITICALITY = {"high": 2, "low": 1, "unable-to-assess": 0}

EntryT = TypeVar("EntryT", bound=RecordEntry)


def _merge(
    entries: Sequence[EntryT], key: Callable[[EntryT], str | None], prefer: Callable[[EntryT], tuple[Any, ...]]
) -> list[EntryT]:
    """Keep one entry per key (the preferred one, in the first one's place); others become its duplicates."""
    groups: dict[str, list[EntryT]] = {}
    order: list[str | int] = []
    for index, entry in enumerate(entries):
        group_key = key(entry)
        if group_key is None:
            order.append(index)
            continue
        if group_key not in groups:
            order.append(group_key)
        groups.setdefault(group_key, []).append(entry)
    merged: list[EntryT] = []
    for item in order:
        if isinstance(item, int):
            merged.append(entries[item])
            continue
        group = groups[item]
        keep = max(group, key=prefer)
        others = [e.ref for e in group if e is not keep] + [r for e in group for r in e.duplicate_refs]
        merged.append(keep.model_copy(update={"duplicate_refs": sorted(set(others) - {keep.ref})}) if others else keep)
    return merged


def _condition_key(condition: RecordCondition) -> str | None:
    if condition.clinical_status not in {"active", "recurrence", "relapse"}:
        return None  # resolved episodes of the same problem are history, not duplicates
    return f"{condition.code or condition.name.lower()}"


def _medication_key(medication: RecordMedication) -> str | None:
    if medication.status not in {"active", "on-hold", "intended"}:
        return None
    return f"{medication.code or medication.name.lower()}"


def _allergy_key(allergy: RecordAllergy) -> str | None:
    return f"{allergy.code or allergy.substance.lower()}|{allergy.clinical_status}"


def clean_record(record: PatientRecord) -> PatientRecord:
    """The record without entered-in-error entries and with duplicates merged."""
    conditions = [c for c in record.conditions if c.clinical_status != ENTERED_IN_ERROR]
    medications = [m for m in record.medications if m.status != ENTERED_IN_ERROR]
    allergies = [a for a in record.allergies if a.clinical_status != ENTERED_IN_ERROR]
    removed = (
        len(record.conditions)
        - len(conditions)
        + len(record.medications)
        - len(medications)
        + len(record.allergies)
        - len(allergies)
    )
    conditions = _merge(conditions, _condition_key, lambda c: (c.onset is not None, -(c.onset or date.max).toordinal()))
    medications = _merge(medications, _medication_key, lambda m: (m.authored or date.min, m.dosage is not None))
    allergies = _merge(allergies, _allergy_key, lambda a: (_CRITICALITY.get(a.criticality or "", 0), len(a.reactions)))
    merged = sum(len(e.duplicate_refs) for e in [*conditions, *medications, *allergies])
    return record.model_copy(
        update={
            "conditions": conditions,
            "medications": medications,
            "allergies": allergies,
            "entered_in_error_removed": record.entered_in_error_removed + removed,
            "duplicates_merged": merged,
        }
    )
