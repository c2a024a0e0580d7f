"""Shared fixtures: paths, a small in-memory record, and graph contexts built from real parts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tools.fhir.record import (
    Demographics,
    PatientRecord,
    RecordAllergy,
    RecordCondition,
    RecordMedication,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "fixtures"
SCENARIOS = FIXTURES / "scenarios"
RECORDS = FIXTURES / "fhir"


@pytest.fixture
def lisinopril_record() -> PatientRecord:
    """A small hand-made record: hypertension on lisinopril, penicillin allergy."""
    return PatientRecord(
        patient_id="p-1",
        demographics=Demographics(ref="Patient/p-1", name="Alex Doe", birth_date=date(1970, 5, 1), gender="female"),
        conditions=[
            RecordCondition(ref="Condition/c-1", name="Essential hypertension", clinical_status="active"),
            RecordCondition(ref="Condition/c-2", name="Sprain of ankle", clinical_status="resolved"),
        ],
        medications=[
            RecordMedication(ref="MedicationRequest/m-1", name="Lisinopril 10 MG Oral Tablet", status="active"),
            RecordMedication(ref="MedicationRequest/m-2", name="Naproxen sodium 220 MG Oral Tablet", status="stopped"),
        ],
        allergies=[
            RecordAllergy(ref="AllergyIntolerance/a-1", substance="Penicillin", reactions=["hives"], criticality="high")
        ],
    )


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SigLIP saved with save_pretrained, loaded back by the real MedSigLIP loading path."""
    from tools.imaging.tiny_siglip import write_tiny_siglip

    return write_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))
