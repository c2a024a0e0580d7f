"""Importers: AgentClinic OSCE cases and Synthea bundles to scenarios.

AgentClinic (SamuelSchmidgall/AgentClinic, MIT): facts come from `Patient_Actor`, rewritten into
the patient's voice where that is simple and split into sentence-sized facts. Exam findings and
test results are kept in the scenario (available on request; the simulated patient never speaks
from them). The correct diagnosis goes to `evaluation` only and is removed from anything the
patient or the interviewer sees. Each case gets a minimal FHIR transaction bundle with one Patient
to bind the intake to.

Synthea: a bundle becomes a scenario skeleton with facts prefilled from the record (active
medications, allergies, active conditions) and a reason for visit given by the user.

Bad input (a line that is not JSON, a case with no patient facts, a duplicate id) is reported as a
problem naming the file and line; the rest is imported.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from agents.coverage import IntakeElement
from agents.simulated_patient import HiddenFact
from graphs.scenario import Evaluation, Scenario
from tools.fhir.bundle_source import read_bundle_file
from tools.fhir.record import RecordError
from tools.fhir.resources import SYNTHEA_IDENTIFIER_SYSTEM

AGENTCLINIC_SYSTEM = "urn:previsit:agentclinic"
AGENTCLINIC_SOURCE = "AgentClinic MedQA case {n}, SamuelSchmidgall/AgentClinic, MIT"
SYNTHEA_SOURCE = "Synthea record {name}, smart-on-fhir/generated-sample-data (R4/SYNTHEA), Apache-2.0"
REFERENCE_DATE = date(2025, 1, 15)
"""The visit date of imported AgentClinic cases; birth dates are derived from ages against it."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, AGENTCLINIC_SYSTEM)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_AGE = re.compile(r"(\d+)[- ](year|month|week|day)s?[- ]old", re.IGNORECASE)
_EMPTY = re.compile(r"^(information )?not (provided|available|applicable)|^no additional|^n/?a\.?$|^none\.?$", re.I)
_SUBJECT = re.compile(r"^(?:the )?(?:patient|she|he)(?:'s)?\s+(\w+)\b\s*(?:that\s+)?", re.IGNORECASE)
_CHILD_SUBJECT = re.compile(r"^(?:the )?(?:patient|baby|infant|child|newborn|she|he)\b", re.IGNORECASE)
_VERBS = {
    "has": "have",
    "is": "am",
    "was": "was",
    "had": "had",
    "reports": "have",
    "presents": "have",
    "notes": "notice",
    "denies": "deny",
    "does": "do",
    "describes": "describe",
    "states": "say",
    "mentions": "mention",
    "complains": "complain",
    "experiences": "experience",
    "works": "work",
    "lives": "live",
    "drinks": "drink",
    "smokes": "smoke",
    "uses": "use",
    "takes": "take",
    "feels": "feel",
    "recently": "recently",
}
_COORDINATED = re.compile(r"\b(and|but|or) (has|does|is|reports|denies|notes|takes)\b")
_PRONOUNS = ((r"\bher\b", "my"), (r"\bhis\b", "my"), (r"\bshe\b", "I"), (r"\bhe\b", "I"), (r"\bhimself\b", "myself"))
_SNOMED_TAG = re.compile(r"\s*\((disorder|finding|situation|morphologic abnormality|procedure)\)\s*$")
_SOCIAL_CONDITION = re.compile(
    r"employment|education|social|stress|medication review|housing|criminal|refugee|labor force|"
    r"risk activity|intimate partner|misuse|transport|received",
    re.IGNORECASE,
)


@dataclass
class ImportedScenario:
    """One scenario and, for AgentClinic cases, the Patient bundle it binds to."""

    scenario: Scenario
    bundle: dict[str, Any] | None = None


@dataclass
class ImportResult:
    imported: list[ImportedScenario] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE.split(text.strip()) if p.strip()]
    return [p if p[-1] in ".!?" else f"{p}." for p in parts]


def _first_person(sentence: str, child: bool) -> str:
    """Rewrite a third-person case sentence into the patient's (or the caregiver's) voice, where simple."""
    if child:
        return _CHILD_SUBJECT.sub("My child", sentence, count=1)
    match = _SUBJECT.match(sentence)
    if match is None:
        return sentence
    verb = match.group(1).lower()
    if verb == "presents":
        rest = sentence[match.end() :]
        rest = re.sub(r"^(with|to the \w+ with)\s+", "", rest)
        new = f"I have {rest}" if not rest.startswith(("for", "to")) else f"I am here {rest}"
    elif verb in _VERBS:
        new = f"I {_VERBS[verb]} {sentence[match.end() :]}"
    elif verb.endswith("s") and len(verb) > 3:
        new = f"I {verb[:-1]} {sentence[match.end() :]}"
    else:
        return sentence
    for pattern, repl in _PRONOUNS:
        new = re.sub(pattern, repl, new, flags=re.IGNORECASE)
    new = _COORDINATED.sub(lambda m: f"{m.group(1)} {_VERBS.get(m.group(2).lower(), m.group(2))}", new)
    return new.replace(" am had ", " had ").strip()


def _age(demographics: str) -> tuple[int, str] | None:
    if re.search(r"newborn|neonate", demographics, re.IGNORECASE):
        return 0, "day"
    match = _AGE.search(demographics)
    return (int(match.group(1)), match.group(2).lower()) if match else None


def _is_child(demographics: str) -> bool:
    age = _age(demographics)
    return age is not None and (age[1] != "year" or age[0] < 16)


def _gender(demographics: str) -> str:
    text = demographics.lower()
    if re.search(r"\b(female|woman|girl|gravida|nulliparous|mother)\b", text):
        return "female"
    if re.search(r"\b(male|man|boy)\b", text):
        return "male"
    return "unknown"


def _birth_date(demographics: str) -> date | None:
    age = _age(demographics)
    if age is None:
        return None
    n, unit = age
    if unit == "year":
        return REFERENCE_DATE.replace(year=REFERENCE_DATE.year - n)
    days = {"month": 30, "week": 7, "day": 1}[unit] * n
    return REFERENCE_DATE - timedelta(days=days)


def agentclinic_patient_id(scenario_id: str) -> str:
    """The deterministic Patient id of an imported AgentClinic case."""
    return str(uuid.uuid5(_NAMESPACE, scenario_id))


def agentclinic_patient_bundle(scenario_id: str, number: int, demographics: str) -> dict[str, Any]:
    """A minimal FHIR R4 transaction bundle with the case's one Patient."""
    patient_id = agentclinic_patient_id(scenario_id)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": AGENTCLINIC_SYSTEM, "value": scenario_id}],
        "name": [{"use": "official", "text": f"AgentClinic Case {number}", "family": f"Case {number}"}],
        "gender": _gender(demographics),
    }
    born = _birth_date(demographics)
    if born is not None:
        patient["birthDate"] = born.isoformat()
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{patient_id}", "resource": patient, "request": {"method": "POST", "url": "Patient"}}
        ],
    }


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k.replace('_', ' ')}: {_text(v)}." for k, v in value.items())
    return "" if value is None else str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[str]:
    if isinstance(value, list):
        return [_text(v) for v in value if _text(v)]
    return [_text(value)] if _text(value) else []


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _clear_element(text: str) -> IntakeElement | None:
    """Medication and allergy sentences in the patient's voice; anything else is left untagged."""
    if re.match(r"^I (take|am (currently )?(on|taking))\b", text):
        return IntakeElement.MEDICATIONS
    if re.match(r"^I (am|have) (no |any )?(known )?(allergic|allergies|allergy)\b", text, re.IGNORECASE):
        return IntakeElement.ALLERGIES
    return None


def agentclinic_facts(actor: dict[str, Any], diagnosis: str) -> list[HiddenFact]:
    """Sentence-sized facts in the patient's voice; none of them names the diagnosis."""
    demographics = _text(actor.get("Demographics"))
    child = _is_child(demographics)
    facts: list[HiddenFact] = []
    symptoms = _mapping(actor.get("Symptoms"))
    primary = _text(symptoms.get("Primary_Symptom")).rstrip(".")
    if primary:
        who = "My child is" if child else "I'm"
        facts.append(
            HiddenFact(text=f"{who} here because of {_lower_first(primary)}.", element=IntakeElement.CHIEF_COMPLAINT)
        )
    for sentence in _sentences(_text(actor.get("History"))):
        text = _first_person(sentence, child)
        facts.append(HiddenFact(text=text, element=_clear_element(text)))
    for symptom in _items(symptoms.get("Secondary_Symptoms")):
        lead = "My child also has" if child else "I also have"
        facts.append(HiddenFact(text=f"{lead} {_lower_first(symptom.rstrip('.'))}."))
    for key, element in (("Past_Medical_History", IntakeElement.HISTORY), ("Social_History", None)):
        for sentence in _sentences(_text(actor.get(key))):
            if not _EMPTY.search(sentence):
                facts.append(HiddenFact(text=_first_person(sentence, child), element=element))
    for sentence in _sentences(_text(actor.get("Review_of_Systems"))):
        if not _EMPTY.search(sentence):
            facts.append(HiddenFact(text=_first_person(sentence, child)))
    needle = diagnosis.strip().lower()
    return [f for f in facts if not needle or needle not in f.text.lower()]


def _reason(primary: str, diagnosis: str) -> str:
    reason = _lower_first(primary.strip().rstrip(".").replace("'", "").replace('"', ""))
    if not reason or (diagnosis and diagnosis.lower() in reason.lower()):
        return "a health concern"
    return reason


def _scenario_id(raw: Any, number: int) -> str:
    if isinstance(raw, str) and raw.strip():
        slug = re.sub(r"[^a-z0-9_-]+", "-", raw.strip().lower()).strip("-_")
        if slug:
            return slug
    return f"agentclinic-medqa-{number:03d}"


def import_agentclinic(path: str | Path, limit: int | None = None) -> ImportResult:
    """Every usable case of an AgentClinic OSCE JSONL file; bad lines become problems."""
    file = Path(path)
    result = ImportResult()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        result.problems.append(f"{file}: cannot be read ({exc})")
        return result
    seen_ids: dict[str, int] = {}
    seen_cases: dict[str, int] = {}
    number = 0
    for line_no, line in enumerate(lines, start=1):
        if limit is not None and len(result.imported) >= limit:
            break
        if not line.strip():
            continue
        number += 1
        where = f"{file}:{line_no}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            result.problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); line skipped")
            continue
        osce = data.get("OSCE_Examination", data) if isinstance(data, dict) else None
        actor = osce.get("Patient_Actor") if isinstance(osce, dict) else None
        if not isinstance(osce, dict) or not isinstance(actor, dict) or not actor:
            result.problems.append(f"{where}: no OSCE_Examination.Patient_Actor; case skipped")
            continue
        diagnosis = _text(osce.get("Correct_Diagnosis"))
        facts = agentclinic_facts(actor, diagnosis)
        if not facts:
            result.problems.append(f"{where}: the Patient_Actor gives no facts; case skipped")
            continue
        scenario_id = _scenario_id(data.get("id"), number)
        if scenario_id in seen_ids:
            result.problems.append(
                f"{where}: duplicate scenario id {scenario_id!r} (first at line {seen_ids[scenario_id]}); case skipped"
            )
            continue
        digest = hashlib.sha256(json.dumps(osce, sort_keys=True).encode()).hexdigest()
        if digest in seen_cases:
            result.problems.append(f"{where}: duplicate of the case at line {seen_cases[digest]}; case skipped")
            continue
        seen_ids[scenario_id] = line_no
        seen_cases[digest] = line_no
        demographics = _text(actor.get("Demographics"))
        symptoms = _mapping(actor.get("Symptoms"))
        reason = _reason(_text(symptoms.get("Primary_Symptom")), diagnosis)
        persona = (
            f"The parent of the patient ({demographics}), answering for the child."
            if _is_child(demographics)
            else f"A {demographics}."
            if demographics
            else ""
        )
        scenario = Scenario(
            id=scenario_id,
            title=f"AgentClinic case {number}: {reason}",
            source=AGENTCLINIC_SOURCE.format(n=number),
            patient_id=agentclinic_patient_id(scenario_id),
            reason_for_visit=reason,
            persona=persona,
            facts=facts,
            visit_date=REFERENCE_DATE,
            exam_findings=dict(osce.get("Physical_Examination_Findings") or {}),
            test_results=dict(osce.get("Test_Results") or {}),
            evaluation=Evaluation(
                correct_diagnosis=diagnosis or None,
                objective_for_doctor=_text(osce.get("Objective_for_Doctor")) or None,
            ),
        )
        result.imported.append(
            ImportedScenario(scenario, agentclinic_patient_bundle(scenario_id, number, demographics))
        )
    return result


def _raw_patient(path: Path) -> dict[str, Any] | None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data.get("entry", []) if isinstance(data, dict) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
            return resource
    return None


def import_synthea(paths: list[str | Path], reason: str) -> ImportResult:
    """A scenario skeleton per Synthea bundle, with facts from the record in the patient's voice."""
    result = ImportResult()
    seen: dict[str, Path] = {}
    for item in paths:
        path = Path(item)
        try:
            patients = read_bundle_file(path)
            raw = _raw_patient(path)
        except (RecordError, OSError, ValueError) as exc:
            result.problems.append(f"{path}: cannot be imported ({exc})")
            continue
        if len(patients) != 1 or raw is None:
            result.problems.append(f"{path}: expected one Patient, found {len(patients)}; skipped")
            continue
        record = patients[0].record
        identifiers = [
            str(i.get("value"))
            for i in raw.get("identifier", [])
            if isinstance(i, dict) and i.get("system") == SYNTHEA_IDENTIFIER_SYSTEM and i.get("value")
        ]
        patient_id = identifiers[0] if identifiers else record.patient_id
        name = re.sub(r"\d+", "", record.demographics.name).strip()
        scenario_id = re.sub(r"[^a-z0-9]+", "-", f"synthea {name}".lower()).strip("-")
        if scenario_id in seen:
            result.problems.append(
                f"{path}: duplicate scenario id {scenario_id!r} (also from {seen[scenario_id]}); skipped"
            )
            continue
        seen[scenario_id] = path
        facts = [
            HiddenFact(text=f"I'm here because of {reason.strip().rstrip('.')}.", element=IntakeElement.CHIEF_COMPLAINT)
        ]
        for med in record.medications:
            if med.status == "active":
                facts.append(HiddenFact(text=f"I take {med.name}.", element=IntakeElement.MEDICATIONS))
        for allergy in record.allergies:
            if allergy.clinical_status in ("active", ""):
                substance = re.sub(r"^allergy to\s+|\s+allergy$", "", allergy.substance, flags=re.IGNORECASE)
                text = f"I'm allergic to {_lower_first(substance)}."
                if allergy.reactions:
                    text += f" It gives me {', '.join(r.lower() for r in allergy.reactions)}."
                facts.append(HiddenFact(text=text, element=IntakeElement.ALLERGIES))
        for condition in record.conditions:
            if condition.clinical_status != "active" or "(situation)" in condition.name:
                continue
            if _SOCIAL_CONDITION.search(condition.name):
                continue
            facts.append(
                HiddenFact(text=f"I have {_SNOMED_TAG.sub('', condition.name)}.", element=IntakeElement.HISTORY)
            )
        scenario = Scenario(
            id=scenario_id,
            title=f"{name}: {reason.strip()}",
            source=SYNTHEA_SOURCE.format(name=path.name),
            patient_id=patient_id,
            reason_for_visit=reason.strip(),
            facts=facts,
        )
        result.imported.append(ImportedScenario(scenario))
    return result


def scenario_yaml(scenario: Scenario) -> str:
    """Readable YAML in the model's field order; defaults left out."""
    data = scenario.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write_import(result: ImportResult, out_dir: str | Path) -> list[Path]:
    """Write one YAML per scenario, and the Patient bundles under `out_dir/fhir/`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item in result.imported:
        target = out / f"{item.scenario.id}.yaml"
        target.write_text(scenario_yaml(item.scenario), encoding="utf-8")
        written.append(target)
        if item.bundle is not None:
            fhir_dir = out / "fhir"
            fhir_dir.mkdir(exist_ok=True)
            bundle_file = fhir_dir / f"{item.scenario.id}_{item.scenario.patient_id}.json"
            bundle_file.write_text(json.dumps(item.bundle, indent=2) + "\n", encoding="utf-8")
    return written
