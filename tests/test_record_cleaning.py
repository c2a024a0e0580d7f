"""A record with duplicate or entered-in-error entries: errors are ignored, duplicates merged."""

from __future__ import annotations

from datetime import date

from tools.fhir.dedupe import clean_record
from tools.fhir.record import Demographics, PatientRecord, RecordAllergy, RecordCondition, RecordMedication


def _record() -> PatientRecord:
    return PatientRecord(
        patient_id="p",
        demographics=Demographics(ref="Patient/p", name="Pat"),
        conditions=[
            RecordCondition(
                ref="Condition/c1",
                name="Hypertension",
                code="38341003",
                clinical_status="active",
                onset=date(2015, 1, 1),
            ),
            RecordCondition(
                ref="Condition/c2",
                name="Hypertension",
                code="38341003",
                clinical_status="active",
                onset=date(2012, 6, 1),
            ),
            RecordCondition(ref="Condition/c3", name="Asthma", code="195967001", clinical_status="entered-in-error"),
            RecordCondition(ref="Condition/c4", name="Sinusitis", code="444814009", clinical_status="resolved"),
            RecordCondition(ref="Condition/c5", name="Sinusitis", code="444814009", clinical_status="resolved"),
        ],
        medications=[
            RecordMedication(
                ref="MedicationRequest/m1",
                name="Lisinopril 10 MG",
                code="314076",
                status="active",
                authored=date(2020, 1, 1),
            ),
            RecordMedication(
                ref="MedicationRequest/m2",
                name="Lisinopril 10 MG",
                code="314076",
                status="active",
                authored=date(2022, 1, 1),
            ),
            RecordMedication(ref="MedicationRequest/m3", name="Amoxicillin", status="entered-in-error"),
        ],
        allergies=[
            RecordAllergy(ref="AllergyIntolerance/a1", substance="Penicillin", code="91936005", criticality="low"),
            RecordAllergy(
                ref="AllergyIntolerance/a2",
                substance="Penicillin",
                code="91936005",
                criticality="high",
                reactions=["hives"],
            ),
        ],
    )


def test_entered_in_error_entries_are_left_out_and_counted() -> None:
    cleaned = clean_record(_record())
    assert "Condition/c3" not in [c.ref for c in cleaned.conditions]
    assert "MedicationRequest/m3" not in [m.ref for m in cleaned.medications]
    assert cleaned.entered_in_error_removed == 2


def test_active_duplicates_merge_into_the_most_informative_entry_and_every_ref_still_resolves() -> None:
    cleaned = clean_record(_record())
    (hypertension,) = cleaned.active_conditions
    assert hypertension.ref == "Condition/c2", "the earliest onset is kept"
    (lisinopril,) = cleaned.active_medications
    assert lisinopril.ref == "MedicationRequest/m2", "the latest prescription is kept"
    (penicillin,) = cleaned.allergies
    assert (penicillin.ref, penicillin.criticality, penicillin.reactions) == (
        "AllergyIntolerance/a2",
        "high",
        ["hives"],
    )
    assert cleaned.find("Condition/c1") is hypertension
    assert cleaned.find("MedicationRequest/m1") is lisinopril
    assert cleaned.find("AllergyIntolerance/a1") is penicillin
    assert cleaned.duplicates_merged == 3


def test_resolved_episodes_of_one_problem_are_history_not_duplicates() -> None:
    cleaned = clean_record(_record())
    assert [c.ref for c in cleaned.conditions if c.clinical_status == "resolved"] == ["Condition/c4", "Condition/c5"]
