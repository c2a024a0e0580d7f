"""A `RecordSource` over FHIR R4 bundle files on disk (the Synthea fixtures, or any R4 JSON bundle).

Bundles are read lazily: a lookup first reads the file whose name matches the id it was given
(Synthea names files ``Given_Family_<uuid>.json``), then, if that does not find the patient, every
file not read yet. Each file is read and parsed once per source instance; the parsed records are
kept on the instance. Reading and validation run in a worker thread (`asyncio.to_thread`).

A patient is found by Patient.id, by its Synthea identifier value (system
``https://github.com/synthetichealth/synthea``), or, when the file holds one patient, by the file
stem; all case-insensitively.

Only the resource types a `PatientRecord` uses are validated (see `RECORD_RESOURCE_TYPES`); Claim,
ExplanationOfBenefit, Provenance and the like are passed over unread. A resource that fails
validation is left out and counted in `PatientRecord.skipped_resources`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from tools.fhir.record import PatientNotFoundError, PatientRecord, RecordSourceError
from tools.fhir.resources import RECORD_RESOURCE_TYPES, build_patient_record, synthea_identifiers

_PATIENT_FIELDS_TO_SALVAGE = (
    "identifier",
    "name",
    "gender",
    "birthDate",
    "deceasedBoolean",
    "deceasedDateTime",
)


@dataclass
class BundlePatient:
    """One patient read from a bundle file, with the (lower-cased) keys it can be found by."""

    record: PatientRecord
    keys: list[str] = field(default_factory=list)


def _validate(raw: dict[str, Any]) -> Any:
    return get_fhir_model_class(str(raw["resourceType"])).model_validate(raw)


def _salvage_patient(raw: dict[str, Any]) -> Any:
    """A Patient that failed validation, rebuilt from the fields of it that do validate."""
    kept: dict[str, Any] = {"resourceType": "Patient", "id": raw.get("id")}
    for name in _PATIENT_FIELDS_TO_SALVAGE:
        if name in raw:
            try:
                _validate({**kept, name: raw[name]})
            except (ValueError, TypeError):
                continue
            kept[name] = raw[name]
    try:
        return _validate(kept)
    except (ValueError, TypeError):
        return _validate({"resourceType": "Patient", "id": "unknown"})


def _reference_of(raw: dict[str, Any]) -> str | None:
    for name in ("subject", "patient"):
        target = raw.get(name)
        if isinstance(target, dict) and isinstance(target.get("reference"), str):
            return str(target["reference"])
    return None


def _read_json(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise RecordSourceError(f"cannot read FHIR bundle {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordSourceError(f"FHIR bundle {path} is not valid JSON: {exc}") from exc


def _entries(path: Path, data: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) pairs of a Bundle, or of a single resource file."""
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise RecordSourceError(f"{path} is not a FHIR resource (no resourceType)")
    if data["resourceType"] != "Bundle":
        return [(None, data)]
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise RecordSourceError(f"FHIR bundle {path} has an 'entry' that is not a list")
    pairs: list[tuple[str | None, dict[str, Any]]] = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            full_url = entry.get("fullUrl")
            pairs.append((full_url if isinstance(full_url, str) else None, entry["resource"]))
    return pairs


def read_bundle_file(path: Path) -> list[BundlePatient]:
    """Every patient in one bundle file (blocking: call it in a thread from async code).

    Raises `RecordSourceError` naming the file when it cannot be read or is not FHIR JSON.
    """
    pairs = _entries(path, _read_json(path))
    parsed: list[tuple[str | None, dict[str, Any], Any, bool]] = []  # (fullUrl, raw, model, failed)
    for index, (full_url, raw) in enumerate(pairs):
        kind = raw.get("resourceType")
        if kind not in RECORD_RESOURCE_TYPES:
            continue
        if not raw.get("id"):  # transaction entries may carry their identity only in fullUrl
            tail = (full_url or "").rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            raw = {**raw, "id": tail or f"{path.stem}-{index}"}
        try:
            parsed.append((full_url, raw, _validate(raw), False))
        except (ValueError, TypeError):
            # Left out and counted; a Patient is kept with what of it validates, or the
            # patient could not be found at all.
            parsed.append((full_url, raw, _salvage_patient(raw) if kind == "Patient" else None, True))

    patients = [(raw, model) for _, raw, model, _ in parsed if raw["resourceType"] == "Patient"]
    aliases: dict[str, int] = {}
    for number, (url, raw, _, _) in enumerate(e for e in parsed if e[1]["resourceType"] == "Patient"):
        for alias in (url, f"Patient/{raw['id']}", f"urn:uuid:{raw['id']}"):
            if alias:
                aliases.setdefault(alias, number)
    groups: list[list[Any]] = [[] for _ in patients]
    skipped = [0 for _ in patients]
    full_urls = {url: model for url, _, model, _ in parsed if url and model is not None}
    for _, raw, model, failed in parsed:
        if raw["resourceType"] == "Patient":
            owners = [aliases[f"Patient/{raw['id']}"]]
        elif len(patients) == 1:
            owners = [0]
        else:
            reference = _reference_of(raw)
            if reference is None:  # e.g. Medication: shared by whoever refers to it
                owners = list(range(len(patients)))
            else:
                owners = [aliases[reference]] if reference in aliases else []
        for owner in owners:
            if model is not None and raw["resourceType"] != "Patient":
                groups[owner].append(model)
            if failed:
                skipped[owner] += 1

    found: list[BundlePatient] = []
    for number, (_, patient) in enumerate(patients):
        record = build_patient_record(
            [patient, *groups[number]],
            full_urls=full_urls,
            skipped=skipped[number],
            source=str(path),
        )
        keys = [record.patient_id.lower(), *(v.lower() for v in synthea_identifiers(patient))]
        if len(patients) == 1:
            keys.append(path.stem.lower())
        found.append(BundlePatient(record=record, keys=list(dict.fromkeys(keys))))
    return found


def _name_matches(path: Path, key: str) -> bool:
    stem = path.stem.lower()
    return stem == key or (len(key) >= 8 and stem.endswith("_" + key))


class BundleRecordSource:
    """Records from FHIR bundle files: a directory (searched recursively for ``*.json``) or a list
    of bundle paths."""

    def __init__(self, bundles: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        if isinstance(bundles, str | os.PathLike):
            self._root: Path | None = Path(bundles)
            self._paths: list[Path] | None = None
        else:
            self._root = None
            self._paths = [Path(p) for p in bundles]
        self._records: dict[str, PatientRecord] = {}
        self._keys: dict[str, str] = {}
        self._read: set[Path] = set()
        self._failed: dict[Path, RecordSourceError] = {}
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _loop_lock(self) -> asyncio.Lock:
        """One lock per event loop, so a source outlives an `asyncio.run` (the CLI runs several)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def fetch_record(self, patient_id: str) -> PatientRecord:
        """The record of one patient (a copy: callers may change it freely)."""
        key = patient_id.strip().lower()
        async with self._loop_lock():
            if key not in self._keys:
                await self._find(key)
            found = self._keys.get(key)
            if found is None:
                if self._failed:
                    first = next(iter(self._failed.values()))
                    raise RecordSourceError(
                        f"patient {patient_id!r} not found in the readable bundles, and "
                        f"{len(self._failed)} bundle(s) could not be read: {first}"
                    ) from first
                raise PatientNotFoundError(patient_id, known=self._known())
            return self._records[found].model_copy(deep=True)

    async def list_patients(self) -> list[tuple[str, str]]:
        """(Patient.id, name) of every patient in every bundle, by name; raises `RecordSourceError`
        when a bundle cannot be read."""
        async with self._loop_lock():
            for path in await self._bundle_paths():
                await self._read_file(path)
            if self._failed:
                raise next(iter(self._failed.values()))
            return sorted(((pid, r.demographics.name) for pid, r in self._records.items()), key=lambda p: (p[1], p[0]))

    async def _find(self, key: str) -> None:
        pending = [p for p in await self._bundle_paths() if p not in self._read]
        for path in [p for p in pending if _name_matches(p, key)]:
            await self._read_file(path)
            if path in self._failed:
                raise self._failed[path]
        for path in pending:
            if key in self._keys:
                return
            await self._read_file(path)

    async def _bundle_paths(self) -> list[Path]:
        if self._paths is None:
            self._paths = await asyncio.to_thread(self._list_directory)
        return self._paths

    def _list_directory(self) -> list[Path]:
        assert self._root is not None
        if self._root.is_file():
            return [self._root]
        if not self._root.is_dir():
            raise RecordSourceError(f"no FHIR bundle directory at {self._root}")
        return sorted(self._root.rglob("*.json"))

    async def _read_file(self, path: Path) -> None:
        if path in self._read or path in self._failed:
            return
        try:
            patients = await asyncio.to_thread(read_bundle_file, path)
        except RecordSourceError as exc:
            self._failed[path] = exc
            return
        self._read.add(path)
        for patient in patients:
            pid = patient.record.patient_id
            self._records.setdefault(pid, patient.record)
            for key in patient.keys:
                self._keys.setdefault(key, pid)

    def _known(self) -> list[str]:
        return [
            f"{pid} ({name})" for name, pid in sorted((r.demographics.name, pid) for pid, r in self._records.items())
        ]
