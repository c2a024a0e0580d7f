"""BundleRecordSource over the Synthea fixture bundles, checked against the raw JSON read independently."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.record import (
    PatientNotFoundError,
    PatientRecord,
    RecordMedication,
    RecordObservation,
    RecordSource,
    RecordSourceError,
)
from tools.fhir.resources import MissingPatientError, build_patient_record

REPO_ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_DIR = REPO_ROOT / "fixtures" / "fhir" / "synthea"
BUNDLES = sorted(SYNTHEA_DIR.glob("*.json"))
SYNTHEA_SYSTEM = "https://github.com/synthetichealth/synthea"
BONNIE = SYNTHEA_DIR / "Bonnie_Marvin_5c55a67c-fb41-4509-9eae-a55eebf760e1.json"
GABRIELA = SYNTHEA_DIR / "Gabriela_Streich_2469aaa6-cd76-46be-89cf-1443858151b5.json"


@functools.cache
def _parsed(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def raw_bundle(path: Path) -> dict[str, Any]:
    """The bundle as plain JSON, read with the json module (a copy the caller may change)."""
    return copy.deepcopy(_parsed(path))


def raw_resources(path: Path, kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in _parsed(path)["entry"] if e["resource"]["resourceType"] == kind]


def raw_patient(path: Path) -> dict[str, Any]:
    (patient,) = raw_resources(path, "Patient")
    return patient


def synthea_id(path: Path) -> str:
    return str(next(i["value"] for i in raw_patient(path)["identifier"] if i.get("system") == SYNTHEA_SYSTEM))


def status(resource: dict[str, Any]) -> str:
    return str(resource["clinicalStatus"]["coding"][0]["code"])


def refs(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


@pytest.fixture(scope="module")
def source() -> BundleRecordSource:
    """One source for the read-only tests of this module: each bundle is parsed once."""
    return BundleRecordSource(SYNTHEA_DIR)


def comparable(record: PatientRecord) -> dict[str, Any]:
    return record.model_dump(exclude={"skipped_resources", "source"})


def test_fixtures_are_the_twelve_synthea_bundles() -> None:
    assert len(BUNDLES) == 12
    assert (SYNTHEA_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8").count("Boston Children's Hospital") == 1
    for path in BUNDLES:
        assert path.stem.endswith(synthea_id(path)), "file names end in the Synthea identifier"


def test_bundle_source_is_a_record_source() -> None:
    assert isinstance(BundleRecordSource(SYNTHEA_DIR), RecordSource)


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem.split("_")[0])
async def test_every_bundle_loads_with_every_record_resource(source: BundleRecordSource, path: Path) -> None:
    record = await source.fetch_record(path.stem)
    patient = raw_patient(path)
    official = next(n for n in patient["name"] if n.get("use") == "official")

    assert record.patient_id == patient["id"]
    assert record.demographics.ref == f"Patient/{patient['id']}"
    assert record.demographics.name == " ".join([*official["given"], official["family"]])
    assert record.demographics.birth_date is not None
    assert record.demographics.birth_date.isoformat() == patient["birthDate"]
    assert record.demographics.gender == patient["gender"]
    assert record.demographics.deceased == ("deceasedDateTime" in patient)
    assert record.skipped_resources == 0
    assert record.source == str(path)

    assert {c.ref for c in record.conditions} == refs(raw_resources(path, "Condition"))
    assert {m.ref for m in record.medications} == refs(
        raw_resources(path, "MedicationRequest") + raw_resources(path, "MedicationStatement")
    )
    assert {a.ref for a in record.allergies} == refs(raw_resources(path, "AllergyIntolerance"))
    assert {e.ref for e in record.encounters} == refs(raw_resources(path, "Encounter"))
    assert {i.ref for i in record.immunizations} == refs(raw_resources(path, "Immunization"))
    assert {s.ref for s in record.imaging_studies} == refs(raw_resources(path, "ImagingStudy"))
    with_value = [
        o for o in raw_resources(path, "Observation") if "component" in o or any(k.startswith("value") for k in o)
    ]
    assert {o.ref for o in record.observations} == refs(with_value)

    active_conditions = [c for c in raw_resources(path, "Condition") if status(c) == "active"]
    assert {c.ref for c in record.active_conditions} == refs(active_conditions)
    active_allergies = [a for a in raw_resources(path, "AllergyIntolerance") if status(a) == "active"]
    assert {a.ref for a in record.active_allergies} == refs(active_allergies)
    active_requests = [m for m in raw_resources(path, "MedicationRequest") if m["status"] == "active"]
    assert {m.ref for m in record.active_medications} == refs(active_requests)


async def test_lookup_by_id_identifier_and_file_stem_agree() -> None:
    # Separate sources, so each key is resolved from scratch: Patient.id is not in the file names
    # (it differs from the Synthea identifier), so it is found only by reading the bundles.
    by_id, by_identifier, by_stem = (BundleRecordSource(SYNTHEA_DIR) for _ in range(3))
    for path in BUNDLES:
        patient_id = raw_patient(path)["id"]
        assert patient_id != synthea_id(path)
        record = await by_id.fetch_record(patient_id)
        assert record.patient_id == patient_id
        assert await by_identifier.fetch_record(synthea_id(path)) == record
        assert await by_stem.fetch_record(path.stem) == record
        for key in (patient_id.upper(), f" {synthea_id(path).upper()} ", path.stem.lower()):
            assert await by_id.fetch_record(key) == record


async def test_fetch_returns_a_copy(source: BundleRecordSource) -> None:
    first = await source.fetch_record(BONNIE.stem)
    first.allergies.clear()
    assert len((await source.fetch_record(BONNIE.stem)).allergies) == 3


async def test_list_patients_names_every_patient(source: BundleRecordSource) -> None:
    listed = await source.list_patients()
    expected = {raw_patient(p)["id"] for p in BUNDLES}
    assert {pid for pid, _ in listed} == expected
    assert ("0af711aa-5601-49cd-987e-162e8dac3525", "Bonnie Marvin") in listed


async def test_source_over_a_list_of_paths() -> None:
    source = BundleRecordSource([BONNIE, GABRIELA])
    assert len(await source.list_patients()) == 2
    with pytest.raises(PatientNotFoundError):
        await source.fetch_record(raw_patient(BUNDLES[-1])["id"])


async def test_unknown_patient_lists_known_patients(source: BundleRecordSource) -> None:
    with pytest.raises(PatientNotFoundError) as caught:
        await source.fetch_record("no-such-patient")
    message = str(caught.value)
    assert "no-such-patient" in message
    assert len(caught.value.known) == 12
    for path in BUNDLES:
        assert raw_patient(path)["id"] in message
    assert "Bonnie Marvin" in message


async def test_corrupt_json_raises_record_source_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "Broken_Bundle_0000.json"
    broken.write_text('{"resourceType": "Bundle", "entry": [', encoding="utf-8")
    source = BundleRecordSource(tmp_path)
    for key in ("someone", "Broken_Bundle_0000"):
        with pytest.raises(RecordSourceError, match=r"Broken_Bundle_0000\.json"):
            await source.fetch_record(key)
    with pytest.raises(RecordSourceError, match=r"Broken_Bundle_0000\.json"):
        await source.list_patients()


async def test_corrupt_file_does_not_hide_other_patients(tmp_path: Path) -> None:
    shutil.copy(BONNIE, tmp_path / BONNIE.name)
    (tmp_path / "Aaa_Broken.json").write_bytes(b"\xff\xfe not json")
    record = await BundleRecordSource(tmp_path).fetch_record(raw_patient(BONNIE)["id"])
    assert record.demographics.name == "Bonnie Marvin"


async def test_non_bundle_json_and_missing_paths_are_source_errors(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(RecordSourceError, match=r"list\.json"):
        await BundleRecordSource(tmp_path).fetch_record("anyone")
    with pytest.raises(RecordSourceError, match=r"missing\.json"):
        await BundleRecordSource([tmp_path / "missing.json"]).fetch_record("missing")
    with pytest.raises(RecordSourceError, match="no FHIR bundle directory"):
        await BundleRecordSource(tmp_path / "nowhere").fetch_record("anyone")


async def test_invalid_resource_is_skipped_and_counted(source: BundleRecordSource, tmp_path: Path) -> None:
    bundle = raw_bundle(BONNIE)
    broken = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition")
    broken["clinicalStatus"] = 42
    copied = tmp_path / BONNIE.name
    copied.write_text(json.dumps(bundle), encoding="utf-8")

    original = await source.fetch_record(BONNIE.stem)
    record = await BundleRecordSource(tmp_path).fetch_record(BONNIE.stem)

    assert record.skipped_resources == 1
    assert record.find(f"Condition/{broken['id']}") is None
    assert len(record.conditions) == len(raw_resources(BONNIE, "Condition")) - 1
    expected = comparable(original)
    expected["conditions"] = [c for c in expected["conditions"] if c["ref"] != f"Condition/{broken['id']}"]
    assert comparable(record) == expected


async def test_invalid_patient_is_salvaged_and_counted(tmp_path: Path) -> None:
    bundle = raw_bundle(BONNIE)
    patient = bundle["entry"][0]["resource"]
    assert patient["resourceType"] == "Patient"
    patient["birthDate"] = "the nineties"
    (tmp_path / BONNIE.name).write_text(json.dumps(bundle), encoding="utf-8")

    record = await BundleRecordSource(tmp_path).fetch_record(synthea_id(BONNIE))
    assert record.skipped_resources == 1
    assert record.demographics.name == "Bonnie Marvin"
    assert record.demographics.birth_date is None
    assert len(record.allergies) == 3


async def test_bonnie_marvin_allergies_and_medications(source: BundleRecordSource) -> None:
    record = await source.fetch_record("5c55a67c-fb41-4509-9eae-a55eebf760e1")
    substances = sorted(a.substance.lower() for a in record.active_allergies)
    assert len(substances) == 3
    for word in ("mould", "dander", "nut"):
        assert sum(word in s for s in substances) == 1, word
    assert all(a.criticality == "low" for a in record.active_allergies)

    active = sorted(m.name.lower() for m in record.active_medications)
    assert len(active) == 3
    assert any("fexofenadine" in m for m in active)
    assert any("epinephrine" in m and "auto-injector" in m for m in active)
    assert any("errin" in m for m in active)
    fexofenadine = next(m for m in record.active_medications if "Fexofenadine" in m.name)
    assert fexofenadine.code == "997488"  # RxNorm
    assert fexofenadine.dosage == "as needed"


async def test_observation_values_are_rendered_with_units(source: BundleRecordSource) -> None:
    record = await source.fetch_record(BONNIE.stem)
    raw_bp = next(o for o in raw_resources(BONNIE, "Observation") if o["code"]["coding"][0]["code"] == "55284-4")
    parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in raw_bp["component"]}
    bp = record.find(f"Observation/{raw_bp['id']}")
    assert isinstance(bp, RecordObservation)
    assert bp.value == f"{round(parts['8480-6'])}/{round(parts['8462-4'])} mmHg"
    smoking = next(o for o in record.observations if o.code == "72166-2")
    assert smoking.value == "Never smoker"
    assert smoking.category == "survey"
    height = next(o for o in record.observations if o.code == "8302-2")
    assert height.value.endswith(" cm")


async def test_deceased_patient_has_a_death_date(source: BundleRecordSource) -> None:
    record = await source.fetch_record(GABRIELA.stem)
    assert record.demographics.deceased
    assert record.demographics.deceased_date is not None
    assert record.demographics.deceased_date.isoformat() == raw_patient(GABRIELA)["deceasedDateTime"][:10]


# A small hand-written bundle for what the Synthea fixtures do not have: MedicationStatement,
# medicationReference, doseAndRate + timing, interpretation flags, valueString, two patients.
def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


MIXED_BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        _entry({"resourceType": "Patient", "id": "p1", "name": [{"text": "Ann Example"}], "gender": "female"}),
        _entry({"resourceType": "Patient", "id": "p2", "name": [{"family": "Other", "given": ["Bo"]}]}),
        _entry(
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": {
                    "coding": [
                        {
                            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "code": "197361",
                            "display": "Amlodipine 5 MG Oral Tablet",
                        }
                    ]
                },
            }
        ),
        _entry(
            {
                "resourceType": "MedicationStatement",
                "id": "ms1",
                "status": "active",
                "medicationReference": {"reference": "urn:uuid:med1"},
                "subject": {"reference": "urn:uuid:p1"},
                "dosage": [{"text": "one tablet every morning"}],
            }
        ),
        _entry(
            {
                "resourceType": "MedicationRequest",
                "id": "mr1",
                "status": "active",
                "intent": "order",
                "medicationReference": {"reference": "Medication/med1"},
                "subject": {"reference": "Patient/p1"},
                "dosageInstruction": [
                    {
                        "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                        "route": {"text": "Oral"},
                        "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}],
                    }
                ],
            }
        ),
        _entry(
            {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "category": [{"coding": [{"code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
                "subject": {"reference": "urn:uuid:p1"},
                "effectiveDateTime": "2024-03-01",
                "valueQuantity": {"value": 212.4, "unit": "mg/dL"},
                "interpretation": [{"coding": [{"code": "H"}]}],
            }
        ),
        _entry(
            {
                "resourceType": "Observation",
                "id": "o2",
                "status": "final",
                "code": {"text": "Comment"},
                "subject": {"reference": "urn:uuid:p2"},
                "valueString": "patient  well\u200b",
            }
        ),
        _entry(
            {
                "resourceType": "AllergyIntolerance",
                "id": "a1",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {"coding": [{"code": "refuted"}]},
                "code": {"text": "Penicillin"},
                "patient": {"reference": "urn:uuid:p2"},
                "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "mild"}],
            }
        ),
    ],
}


async def test_hand_written_bundle_with_two_patients(tmp_path: Path) -> None:
    (tmp_path / "mixed.json").write_text(json.dumps(copy.deepcopy(MIXED_BUNDLE)), encoding="utf-8")
    source = BundleRecordSource(tmp_path)
    assert await source.list_patients() == [("p1", "Ann Example"), ("p2", "Bo Other")]
    with pytest.raises(PatientNotFoundError):
        await source.fetch_record("mixed")  # a file stem names a patient only when it holds one

    ann = await source.fetch_record("P1")
    statement = ann.find("MedicationStatement/ms1")
    request = ann.find("MedicationRequest/mr1")
    assert statement is request is not None, "the active statement and request for amlodipine are one entry"
    assert len(ann.active_medications) == 1 and ann.duplicates_merged == 1
    assert isinstance(statement, RecordMedication)
    assert (statement.name, statement.code) == ("Amlodipine 5 MG Oral Tablet", "197361")
    assert statement.dosage in ("one tablet every morning", "5 mg oral twice a day")
    (glucose,) = ann.observations
    assert (glucose.value, glucose.interpretation, glucose.category) == ("212 mg/dL", "H", "laboratory")
    assert ann.allergies == []

    bo = await source.fetch_record("p2")
    assert [o.value for o in bo.observations] == ["patient well"]
    (allergy,) = bo.allergies
    assert allergy.clinical_status == "refuted"
    assert allergy.reactions == ["Hives (mild)"]
    assert bo.active_allergies == []


def test_conversions_of_shapes_synthea_does_not_use() -> None:
    def parse(resource: dict[str, Any]) -> Any:
        return get_fhir_model_class(resource["resourceType"]).model_validate(resource)

    patient = {"resourceType": "Patient", "id": "p", "deceasedBoolean": True, "birthDate": "1950-03"}
    subject = {"reference": "Patient/p"}
    resources: list[dict[str, Any]] = [
        patient,
        {
            "resourceType": "Observation",
            "id": "panel",
            "status": "final",
            "code": {"text": "Panel"},
            "effectivePeriod": {"start": "2020-01-02"},
            "component": [
                {"code": {"text": "A"}, "valueString": "x"},
                {
                    "code": {"text": "B"},
                    "valueRange": {"low": {"value": 1, "unit": "mg"}, "high": {"value": 2, "unit": "mg"}},
                },
            ],
        },
        {
            "resourceType": "Observation",
            "id": "k",
            "status": "final",
            "code": {"text": "Potassium"},
            "valueQuantity": {"value": 6.1, "unit": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
        },
        {
            "resourceType": "Observation",
            "id": "absent",
            "status": "final",
            "code": {"text": "X"},
            "dataAbsentReason": {"text": "patient refused"},
        },
        {
            "resourceType": "Observation",
            "id": "err",
            "status": "entered-in-error",
            "code": {"text": "X"},
            "valueString": "a",
        },
        {
            "resourceType": "Observation",
            "id": "members",
            "status": "final",
            "code": {"text": "Panel"},
            "hasMember": [{"reference": "Observation/k"}],
        },
        {
            "resourceType": "MedicationRequest",
            "id": "contained",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "contained": [{"resourceType": "Medication", "id": "med", "code": {"text": "Contained med"}}],
            "medicationReference": {"reference": "#med"},
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}},
                    "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
                },
                {"timing": {"code": {"text": "BID"}}, "asNeededCodeableConcept": {"text": "pain"}},
            ],
        },
        {
            "resourceType": "MedicationRequest",
            "id": "unresolved",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationReference": {"reference": "Medication/elsewhere", "display": "Mystery pill"},
        },
        {
            "resourceType": "Condition",
            "id": "wrong",
            "subject": subject,
            "code": {"text": "Thing"},
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
            "onsetPeriod": {"start": "2001-02"},
        },
        {
            "resourceType": "Immunization",
            "id": "flu",
            "status": "not-done",
            "vaccineCode": {"text": "Flu"},
            "patient": subject,
            "occurrenceString": "last fall",
        },
        {
            "resourceType": "Encounter",
            "id": "e",
            "status": "finished",
            "class": {"code": "AMB", "display": "ambulatory"},
            "reasonReference": [{"display": "Headache"}],
        },
        {
            "resourceType": "ImagingStudy",
            "id": "ct",
            "status": "available",
            "subject": subject,
            "description": "CT head",
            "modality": [{"code": "CT"}],
        },
    ]
    record = build_patient_record([parse(r) for r in resources])

    assert record.demographics.name == "Unknown"
    assert record.demographics.deceased and record.demographics.deceased_date is None
    assert record.demographics.birth_date == date(1950, 3, 1)
    values = {o.ref: (o.value, o.interpretation, o.effective) for o in record.observations}
    assert values == {
        "Observation/panel": ("A: x; B: 1 mg to 2 mg", None, date(2020, 1, 2)),
        "Observation/k": ("6.1 mmol/L", "H", None),
        "Observation/absent": ("no value (patient refused)", None, None),
    }
    medications = {m.ref: (m.name, m.dosage) for m in record.medications}
    assert medications == {
        "MedicationRequest/contained": ("Contained med", "2 tablet every 8 hours; BID as needed for pain"),
        "MedicationRequest/unresolved": ("Mystery pill", None),
    }
    assert record.conditions == [], "a condition verified as entered-in-error is left out"
    assert record.entered_in_error_removed == 1
    assert [i.vaccine for i in record.immunizations] == ["Flu (not given)"]
    assert [(e.type, e.reason) for e in record.encounters] == [("ambulatory", "Headache")]
    assert [(s.description, s.modality) for s in record.imaging_studies] == [("CT head", "CT")]
    assert record.skipped_resources == 0

    with pytest.raises(MissingPatientError):
        build_patient_record([parse(resources[2])])
