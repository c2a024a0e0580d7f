"""Parsed FHIR R4 resources (fhir.resources R4B models) turned into `PatientRecord` entries.

Each converter takes one validated resource and returns the record entry it stands for (or `None`
when the resource carries nothing a reader could use, e.g. an Observation with no value). Every
entry's `ref` is ``f"{resourceType}/{id}"`` so statements built from it can cite it.

DiagnosticReport is not converted: in Synthea (and in most lab feeds) a report only groups
Observations that are in the record on their own, so the results are already there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tools.fhir.dedupe import clean_record
from tools.fhir.record import (
    Demographics,
    PatientRecord,
    RecordAllergy,
    RecordCondition,
    RecordEncounter,
    RecordImagingStudy,
    RecordImmunization,
    RecordMedication,
    RecordObservation,
)

SYNTHEA_IDENTIFIER_SYSTEM = "https://github.com/synthetichealth/synthea"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"

# The resource types a PatientRecord is built from; everything else in a bundle (Claim,
# ExplanationOfBenefit, Provenance, CarePlan, Procedure, ...) is passed over without validation.
RECORD_RESOURCE_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Condition",
        "MedicationRequest",
        "MedicationStatement",
        "Medication",
        "AllergyIntolerance",
        "Observation",
        "Encounter",
        "Immunization",
        "ImagingStudy",
    }
)

# Verification statuses that mean "this is not true of the patient": the entry is kept but with
# this status in place of its clinical status, so it never counts as active.
_NOT_TRUE = {"entered-in-error", "refuted"}
_DROPPED_OBSERVATION_STATUS = {"entered-in-error", "cancelled"}
_NORMAL_INTERPRETATION = {"N", "NORMAL", "NEG", "ND", "NR"}
_SYSTOLIC, _DIASTOLIC = "8480-6", "8462-4"

_UNITS = {
    "Cel": "°C",
    "[degF]": "°F",
    "mm[Hg]": "mmHg",
    "[lb_av]": "lb",
    "[in_i]": "in",
    "/min": "/min",
    "{beats}/min": "/min",
    "10*3/uL": "x10^3/uL",
    "10*6/uL": "x10^6/uL",
    "10*9/L": "x10^9/L",
    "10*12/L": "x10^12/L",
}
_PERIOD_UNITS = {
    "s": "second",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "wk": "week",
    "mo": "month",
    "a": "year",
}
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"\s+")


class MissingPatientError(ValueError):
    """The resources handed to `build_patient_record` hold no Patient."""


def ref_of(resource: Any) -> str:
    """``ResourceType/id`` of a parsed resource."""
    return f"{resource.get_resource_type()}/{resource.id}"


def clean(text: Any) -> str:
    """Text as a reader should see it: zero-width characters removed, whitespace collapsed."""
    return _SPACES.sub(" ", _ZERO_WIDTH.sub("", str(text))).strip()


def to_date(value: Any) -> date | None:
    """A FHIR date/dateTime/instant (parsed or a partial 'YYYY' / 'YYYY-MM' string) as a date."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    match = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", str(value))
    if not match:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None


def concept_text(concept: Any) -> str | None:
    """The readable name of a CodeableConcept (text, else the first display, else the first code)."""
    if concept is None:
        return None
    if concept.text:
        return clean(concept.text)
    for coding in concept.coding or []:
        if coding.display:
            return clean(coding.display)
    for coding in concept.coding or []:
        if coding.code:
            return clean(coding.code)
    return None


def coding_text(coding: Any) -> str | None:
    if coding is None:
        return None
    if coding.display:
        return clean(coding.display)
    if coding.code:
        return clean(coding.code)
    return None


def concept_code(concept: Any, system: str | None = None) -> str | None:
    """The code from the coding in `system` (any system when none is in it or none is given)."""
    if concept is None:
        return None
    codings = [c for c in concept.coding or [] if c.code]
    for coding in codings:
        if system is None or coding.system == system:
            return str(coding.code)
    return str(codings[0].code) if codings else None


def _status_code(concept: Any) -> str | None:
    code = concept_code(concept)
    return code.lower() if code else None


def format_number(value: Any) -> str:
    """A measured value rounded for reading: 165.054 -> '165', 25.83 -> '25.8', 0.953 -> '0.95'."""
    number = Decimal(str(value))
    if number == number.to_integral_value():
        return str(int(number))
    magnitude = abs(number)
    places = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2
    text = f"{float(number):.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_unit(quantity: Any) -> str:
    unit = quantity.unit or quantity.code
    if not unit:
        return ""
    unit = str(unit)
    unit = _UNITS.get(unit, unit)
    if unit.startswith("{") and unit.endswith("}"):  # a bare UCUM annotation such as {score}
        return ""
    return re.sub(r"\{([^}]*)\}", lambda m: m.group(1).replace("_", ""), unit)  # mL/min/{1.73_m2}


def format_quantity(quantity: Any) -> str | None:
    if quantity is None or quantity.value is None:
        return None
    comparator = str(quantity.comparator or "")
    unit = format_unit(quantity)
    number = comparator + format_number(quantity.value)
    if not unit:
        return number
    return f"{number}{unit}" if unit == "%" else f"{number} {unit}"


def _format_range(value: Any) -> str | None:
    low, high = format_quantity(value.low), format_quantity(value.high)
    if low and high:
        return f"{low} to {high}"
    if low:
        return f">= {low}"
    if high:
        return f"<= {high}"
    return None


def _format_ratio(value: Any) -> str | None:
    numerator, denominator = format_quantity(value.numerator), format_quantity(value.denominator)
    if numerator and denominator:
        return f"{numerator}/{denominator}"
    return numerator


def format_value(element: Any) -> str | None:
    """The value[x] of an Observation or of one of its components, with its unit."""
    if element.valueQuantity is not None:
        return format_quantity(element.valueQuantity)
    if element.valueCodeableConcept is not None:
        return concept_text(element.valueCodeableConcept)
    if element.valueString is not None:
        return clean(element.valueString)
    if element.valueBoolean is not None:
        return "yes" if element.valueBoolean else "no"
    if element.valueInteger is not None:
        return str(element.valueInteger)
    if element.valueRange is not None:
        return _format_range(element.valueRange)
    if element.valueRatio is not None:
        return _format_ratio(element.valueRatio)
    if element.valueDateTime is not None:
        day = to_date(element.valueDateTime)
        return day.isoformat() if day else str(element.valueDateTime)
    if element.valueTime is not None:
        return str(element.valueTime)
    if element.valuePeriod is not None:
        start, end = to_date(element.valuePeriod.start), to_date(element.valuePeriod.end)
        return " to ".join(d.isoformat() for d in (start, end) if d) or None
    if element.dataAbsentReason is not None:
        reason = concept_text(element.dataAbsentReason)
        return f"no value ({reason})" if reason else None
    return None


def _interpretation(element: Any) -> str | None:
    """Abnormal flags as codes (H, L, A, ...); 'N' and friends are not flags. Falls back to the
    reference range when the source gave a numeric value and a range but no interpretation."""
    flags: list[str] = []
    for concept in element.interpretation or []:
        code = concept_code(concept) or concept_text(concept)
        if code and code.upper() not in _NORMAL_INTERPRETATION and code not in flags:
            flags.append(code)
    if flags:
        return ",".join(flags)
    quantity = element.valueQuantity
    if quantity is None or quantity.value is None:
        return None
    for reference in element.referenceRange or []:
        low = reference.low.value if reference.low is not None else None
        high = reference.high.value if reference.high is not None else None
        if low is not None and quantity.value < low:
            return "L"
        if high is not None and quantity.value > high:
            return "H"
    return None


def _components_value(observation: Any) -> str | None:
    components = [c for c in observation.component or [] if c.code is not None]
    if not components:
        return None
    by_loinc = {concept_code(c.code, LOINC): c for c in components}
    systolic, diastolic = by_loinc.get(_SYSTOLIC), by_loinc.get(_DIASTOLIC)
    if systolic is not None and diastolic is not None:
        sys_q, dia_q = systolic.valueQuantity, diastolic.valueQuantity
        if sys_q is not None and dia_q is not None and sys_q.value is not None and dia_q.value is not None:
            unit = format_unit(sys_q) or "mmHg"
            return f"{round(sys_q.value)}/{round(dia_q.value)} {unit}"  # mmHg is read in whole numbers
    parts = []
    for component in components:
        value = format_value(component)
        if value:
            parts.append(f"{concept_text(component.code)}: {value}")
    return "; ".join(parts) or None


def demographics_from_patient(patient: Any) -> Demographics:
    names = list(patient.name or [])
    chosen = next((n for n in names if n.use == "official"), names[0] if names else None)
    name = "Unknown"
    if chosen is not None:
        if chosen.text:
            name = clean(chosen.text)
        else:
            parts = [*(chosen.given or []), chosen.family or ""]
            name = clean(" ".join(str(p) for p in parts if p)) or "Unknown"
    deceased_date = to_date(patient.deceasedDateTime)
    return Demographics(
        ref=ref_of(patient),
        name=name,
        birth_date=to_date(patient.birthDate),
        gender=str(patient.gender) if patient.gender else None,
        deceased=bool(patient.deceasedBoolean) or deceased_date is not None,
        deceased_date=deceased_date,
    )


def synthea_identifiers(patient: Any) -> list[str]:
    """Values of the patient's Synthea identifiers (the UUID at the end of a Synthea file name)."""
    return [str(i.value) for i in patient.identifier or [] if i.system == SYNTHEA_IDENTIFIER_SYSTEM and i.value]


def _verified_status(clinical: str | None, verification: Any, default: str) -> str:
    verified = _status_code(verification)
    if verified in _NOT_TRUE:
        return verified
    return clinical or default


def condition_from_fhir(condition: Any) -> RecordCondition:
    onset = to_date(condition.onsetDateTime)
    if onset is None and condition.onsetPeriod is not None:
        onset = to_date(condition.onsetPeriod.start)
    abatement = to_date(condition.abatementDateTime)
    if abatement is None and condition.abatementPeriod is not None:
        abatement = to_date(condition.abatementPeriod.start)
    return RecordCondition(
        ref=ref_of(condition),
        name=concept_text(condition.code) or "Unnamed condition",
        code=concept_code(condition.code, SNOMED),
        clinical_status=_verified_status(
            _status_code(condition.clinicalStatus), condition.verificationStatus, "unknown"
        ),
        onset=onset,
        abatement=abatement,
    )


def _format_timing(timing: Any) -> str | None:
    if timing is None:
        return None
    if timing.code is not None and concept_text(timing.code):
        return concept_text(timing.code)
    repeat = timing.repeat
    if repeat is None or repeat.period is None or not repeat.periodUnit:
        return None
    frequency = int(repeat.frequency or 1)
    period = format_number(repeat.period)
    unit = _PERIOD_UNITS.get(str(repeat.periodUnit), str(repeat.periodUnit))
    if period == "1":
        times = "once" if frequency == 1 else "twice" if frequency == 2 else f"{frequency} times"
        return f"{times} a {unit}"
    if frequency == 1:
        return f"every {period} {unit}s"
    return f"{frequency} times every {period} {unit}s"


def format_dosage(dosage: Any) -> str | None:
    """One Dosage as text: its own text when recorded, else dose, route, timing and 'as needed'."""
    if dosage.text:
        return clean(dosage.text)
    parts: list[str] = []
    for dose_and_rate in dosage.doseAndRate or []:
        dose = format_quantity(dose_and_rate.doseQuantity)
        if dose is None and dose_and_rate.doseRange is not None:
            dose = _format_range(dose_and_rate.doseRange)
        if dose:
            if dose_and_rate.doseQuantity is not None and not format_unit(dose_and_rate.doseQuantity):
                dose += " dose" if dose == "1" else " doses"
            parts.append(dose)
            break
    if dosage.route is not None and concept_text(dosage.route):
        parts.append(str(concept_text(dosage.route)).lower())
    timing = _format_timing(dosage.timing)
    if timing:
        parts.append(timing)
    if dosage.asNeededBoolean:
        parts.append("as needed")
    elif dosage.asNeededCodeableConcept is not None:
        parts.append(f"as needed for {concept_text(dosage.asNeededCodeableConcept)}")
    if not parts and dosage.patientInstruction:
        return clean(dosage.patientInstruction)
    return " ".join(parts) or None


def _format_dosages(dosages: Iterable[Any]) -> str | None:
    rendered = [d for d in (format_dosage(dosage) for dosage in dosages) if d]
    return "; ".join(dict.fromkeys(rendered)) or None


MedicationResolver = Callable[[Any, str | None], Any]
"""(owning resource, reference string) -> the Medication resource it points at, or None."""


def _medication_name_and_code(resource: Any, resolve: MedicationResolver | None) -> tuple[str, str | None]:
    concept = resource.medicationCodeableConcept
    reference = resource.medicationReference
    if concept is None and reference is not None:
        medication = resolve(resource, reference.reference) if resolve is not None else None
        if medication is not None and medication.code is not None:
            concept = medication.code
        elif reference.display:
            return clean(reference.display), None
    if concept is None:
        return "Unnamed medication", None
    return concept_text(concept) or "Unnamed medication", concept_code(concept, RXNORM)


def medication_from_request(request: Any, resolve: MedicationResolver | None = None) -> RecordMedication:
    name, code = _medication_name_and_code(request, resolve)
    return RecordMedication(
        ref=ref_of(request),
        name=name,
        code=code,
        status=str(request.status or "unknown"),
        dosage=_format_dosages(request.dosageInstruction or []),
        authored=to_date(request.authoredOn),
    )


def medication_from_statement(statement: Any, resolve: MedicationResolver | None = None) -> RecordMedication:
    name, code = _medication_name_and_code(statement, resolve)
    authored = to_date(statement.dateAsserted) or to_date(statement.effectiveDateTime)
    if authored is None and statement.effectivePeriod is not None:
        authored = to_date(statement.effectivePeriod.start)
    return RecordMedication(
        ref=ref_of(statement),
        name=name,
        code=code,
        status=str(statement.status or "unknown"),
        dosage=_format_dosages(statement.dosage or []),
        authored=authored,
    )


def allergy_from_fhir(allergy: Any) -> RecordAllergy:
    substance = concept_text(allergy.code)
    reactions: list[str] = []
    for reaction in allergy.reaction or []:
        if substance is None and reaction.substance is not None:
            substance = concept_text(reaction.substance)
        for manifestation in reaction.manifestation or []:
            text = concept_text(manifestation)
            if text:
                if reaction.severity:
                    text = f"{text} ({reaction.severity})"
                if text not in reactions:
                    reactions.append(text)
    return RecordAllergy(
        ref=ref_of(allergy),
        substance=substance or "Unnamed substance",
        code=concept_code(allergy.code, SNOMED),
        clinical_status=_verified_status(_status_code(allergy.clinicalStatus), allergy.verificationStatus, "active"),
        criticality=str(allergy.criticality) if allergy.criticality else None,
        category=[str(c) for c in allergy.category or []],
        reactions=reactions,
    )


def observation_from_fhir(observation: Any) -> RecordObservation | None:
    """The observation with its value rendered, or None when it has no value (e.g. a panel)."""
    if observation.status in _DROPPED_OBSERVATION_STATUS:
        return None
    value = format_value(observation) or _components_value(observation)
    if value is None:
        return None
    category = None
    for concept in observation.category or []:
        category = concept_code(concept) or concept_text(concept)
        if category:
            break
    effective = to_date(observation.effectiveDateTime) or to_date(observation.effectiveInstant)
    if effective is None and observation.effectivePeriod is not None:
        effective = to_date(observation.effectivePeriod.start)
    if effective is None:
        effective = to_date(observation.issued)
    return RecordObservation(
        ref=ref_of(observation),
        name=concept_text(observation.code) or "Unnamed observation",
        code=concept_code(observation.code, LOINC),
        value=value,
        category=category,
        effective=effective,
        interpretation=_interpretation(observation),
    )


def encounter_from_fhir(encounter: Any) -> RecordEncounter:
    kind = next((t for t in (concept_text(c) for c in encounter.type or []) if t), None)
    if kind is None:
        kind = coding_text(encounter.class_fhir) or "Encounter"
    reasons = [t for t in (concept_text(c) for c in encounter.reasonCode or []) if t]
    reasons += [clean(r.display) for r in encounter.reasonReference or [] if r.display]
    return RecordEncounter(
        ref=ref_of(encounter),
        type=kind,
        start=to_date(encounter.period.start) if encounter.period is not None else None,
        reason="; ".join(dict.fromkeys(reasons)) or None,
    )


def immunization_from_fhir(immunization: Any) -> RecordImmunization:
    vaccine = concept_text(immunization.vaccineCode) or "Unnamed vaccine"
    if immunization.status == "not-done":
        vaccine += " (not given)"
    return RecordImmunization(
        ref=ref_of(immunization),
        vaccine=vaccine,
        occurrence=to_date(immunization.occurrenceDateTime),
    )


def imaging_study_from_fhir(study: Any) -> RecordImagingStudy:
    series = list(study.series or [])
    modality = next((str(s.modality.code) for s in series if s.modality and s.modality.code), None)
    if modality is None:
        modality = next((str(m.code) for m in study.modality or [] if m.code), None)
    description = clean(study.description) if study.description else None
    if description is None:
        description = next((t for t in (concept_text(c) for c in study.procedureCode or []) if t), None)
    if description is None:
        description = next((clean(s.description) for s in series if s.description), None)
    if description is None and series:
        first = series[0]
        kind = coding_text(first.modality) or "Imaging study"
        site = coding_text(first.bodySite)
        description = f"{kind} of {site.lower()}" if site else kind
    return RecordImagingStudy(
        ref=ref_of(study),
        description=description or "Imaging study",
        started=to_date(study.started),
        modality=modality,
    )


def _medication_resolver(medications: Sequence[Any], full_urls: Mapping[str, Any] | None) -> MedicationResolver:
    by_key: dict[str, Any] = dict(full_urls or {})
    for medication in medications:
        if medication.id:
            by_key.setdefault(f"Medication/{medication.id}", medication)
            by_key.setdefault(f"urn:uuid:{medication.id}", medication)

    def resolve(owner: Any, reference: str | None) -> Any:
        if not reference:
            return None
        if reference.startswith("#"):
            for contained in owner.contained or []:
                if contained.id == reference[1:] and contained.get_resource_type() == "Medication":
                    return contained
            return None
        found = by_key.get(reference)
        if found is None and "/" in reference:  # absolute URL ending in Medication/id
            found = by_key.get("/".join(reference.rstrip("/").split("/")[-2:]))
        if found is not None and found.get_resource_type() == "Medication":
            return found
        return None

    return resolve


def build_patient_record(
    resources: Iterable[Any],
    *,
    patient_id: str | None = None,
    full_urls: Mapping[str, Any] | None = None,
    skipped: int = 0,
    source: str = "",
) -> PatientRecord:
    """A PatientRecord from one patient's parsed resources (fhir.resources R4B models).

    The list must hold the patient's Patient resource (the first one is used). `full_urls` maps
    bundle fullUrls to resources so `medicationReference`s can be resolved; Medication resources
    in `resources` are resolved by ``Medication/id`` and ``urn:uuid:id`` without it. A resource
    whose conversion fails is left out and counted in `skipped_resources`, like one that failed
    validation (`skipped` carries those in).
    """
    items = list(resources)
    patient = next((r for r in items if r.get_resource_type() == "Patient"), None)
    if patient is None:
        raise MissingPatientError("no Patient resource among the resources")
    resolve = _medication_resolver([r for r in items if r.get_resource_type() == "Medication"], full_urls)
    record = PatientRecord(
        patient_id=patient_id or str(patient.id),
        demographics=demographics_from_patient(patient),
        skipped_resources=skipped,
        source=source,
    )
    for resource in items:
        kind = resource.get_resource_type()
        try:
            if kind == "Condition":
                record.conditions.append(condition_from_fhir(resource))
            elif kind == "MedicationRequest":
                record.medications.append(medication_from_request(resource, resolve))
            elif kind == "MedicationStatement":
                record.medications.append(medication_from_statement(resource, resolve))
            elif kind == "AllergyIntolerance":
                record.allergies.append(allergy_from_fhir(resource))
            elif kind == "Observation":
                observation = observation_from_fhir(resource)
                if observation is not None:
                    record.observations.append(observation)
            elif kind == "Encounter":
                record.encounters.append(encounter_from_fhir(resource))
            elif kind == "Immunization":
                record.immunizations.append(immunization_from_fhir(resource))
            elif kind == "ImagingStudy":
                record.imaging_studies.append(imaging_study_from_fhir(resource))
        except (ValueError, TypeError, AttributeError, ArithmeticError):
            record.skipped_resources += 1
    return clean_record(record)
