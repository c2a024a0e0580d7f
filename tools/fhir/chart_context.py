"""The chart as a prompt sees it: short cited lines chosen by clinical priority under a token budget.

Priority, highest first (lines are added in this order until the next one would not fit):

1. demographics (age from the birth date and `today`, or age at death; sex)
2. every active condition
3. every active medication, with its dose
4. every active allergy, with criticality, category and reactions (highest criticality first)
5. abnormal results (observations with an abnormal interpretation flag) from the last
   `results_window_days` of observations, latest per code
6. vital signs and surveys (e.g. smoking status), latest per code
7. laboratory and other results from the last `results_window_days` (a year) of results,
   latest per code
8. imaging studies
9. the most recent encounters (`max_encounters`)
10. resolved / inactive problems, one line per problem
11. immunizations, latest per vaccine

Within a tier, newest first. "Recent" is measured from the newest date in the record rather than
from today, so an old (or synthetic) record still shows its latest findings, each with its date.
Synthea sets no interpretation flags or reference ranges, so tier 5 is empty for its records and
their labs appear in tier 7.

Budget: each line costs ``count_tokens(line.render())`` (the exact text `ChartContext.render`
emits, reference included); once a line does not fit, it and every line after it are omitted,
so a lower-priority line never displaces a higher one. `omitted` counts those lines. A final
check on the whole rendered text drops trailing lines if a tokenizer counts the joined text
higher than the sum of its lines, so `tokens_used` never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import TypeVar

from tools.fhir.record import (
    ChartContext,
    CitedLine,
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

_VITAL_CATEGORIES = {"vital-signs", "survey", "social-history"}
_NOT_TRUE = {"entered-in-error", "refuted"}
_CRITICALITY_ORDER = {"high": 0, "unable-to-assess": 1, "low": 2}
_E = TypeVar("_E")


def build_chart_context(
    record: PatientRecord,
    token_budget: int,
    count_tokens: Callable[[str], int],
    today: date | None = None,
    *,
    max_encounters: int = 5,
    results_window_days: int = 365,
) -> ChartContext:
    """Cited chart lines for a prompt, by clinical priority, within `token_budget` tokens."""
    today = today or date.today()
    candidates = _candidate_lines(record, today, max_encounters, results_window_days)
    lines: list[CitedLine] = []
    used = 0
    omitted = 0
    for line in candidates:
        if omitted:
            omitted += 1
            continue
        cost = count_tokens(line.render())
        if used + cost > token_budget:
            omitted += 1
            continue
        lines.append(line)
        used += cost
    # The whole text once more: a tokenizer may count joined lines higher than their sum.
    total = count_tokens("\n".join(line.render() for line in lines)) if lines else 0
    while lines and total > token_budget:
        lines.pop()
        omitted += 1
        total = count_tokens("\n".join(line.render() for line in lines)) if lines else 0
    return ChartContext(lines=lines, token_budget=token_budget, tokens_used=total, omitted=omitted)


def _candidate_lines(
    record: PatientRecord, today: date, max_encounters: int, results_window_days: int
) -> list[CitedLine]:
    lines = [_demographics_line(record.demographics, today)]
    lines += [_condition_line(c) for c in _newest(record.active_conditions, lambda c: c.onset)]
    lines += [_medication_line(m) for m in _newest(record.active_medications, lambda m: m.authored)]
    allergies = sorted(
        _newest(record.active_allergies, lambda a: None),
        key=lambda a: _CRITICALITY_ORDER.get(a.criticality or "", 3),
    )
    lines += [_allergy_line(a) for a in allergies]

    observations = _newest(record.observations, lambda o: o.effective)
    shown: set[str] = set()
    anchor = _latest_date(o.effective for o in observations)
    recent = [o for o in observations if _within(o.effective, anchor, results_window_days)]
    abnormal = _latest_per_code(o for o in recent if o.interpretation)
    lines += [_result_line("Abnormal result", o) for o in abnormal]
    shown.update(o.ref for o in abnormal)
    vitals = _latest_per_code(o for o in observations if o.category in _VITAL_CATEGORIES)
    lines += [_vital_line(o) for o in vitals if o.ref not in shown]
    shown.update(o.ref for o in vitals)
    results = [o for o in observations if o.category not in _VITAL_CATEGORIES]
    results_anchor = _latest_date(o.effective for o in results)
    labs = _latest_per_code(o for o in results if _within(o.effective, results_anchor, results_window_days))
    lines += [_result_line(_result_label(o), o) for o in labs if o.ref not in shown]
    lines += [_imaging_line(s) for s in _newest(record.imaging_studies, lambda s: s.started)]

    encounters = _newest(record.encounters, lambda e: e.start)[: max(max_encounters, 0)]
    lines += [_encounter_line(e) for e in encounters]
    lines += _past_problem_lines(record.conditions)
    lines += _immunization_lines(record.immunizations)
    return lines


def _newest(entries: Iterable[_E], when: Callable[[_E], date | None]) -> list[_E]:
    """Newest first; undated entries last, in record order."""
    items = list(entries)
    dated = sorted((e for e in items if when(e) is not None), key=lambda e: when(e) or date.min, reverse=True)
    return dated + [e for e in items if when(e) is None]


def _latest_date(dates: Iterable[date | None]) -> date | None:
    return max((d for d in dates if d is not None), default=None)


def _within(day: date | None, anchor: date | None, days: int) -> bool:
    if anchor is None or day is None:
        return anchor is None
    return day >= anchor - timedelta(days=days)


def _latest_per_code(observations: Iterable[RecordObservation]) -> list[RecordObservation]:
    """The first (newest, given newest-first input) observation of each code, in input order."""
    seen: dict[str, RecordObservation] = {}
    for observation in observations:
        seen.setdefault(observation.code or observation.name.lower(), observation)
    return list(seen.values())


def _on(day: date | None) -> str:
    return f" ({day.isoformat()})" if day else ""


def _age(birth: date, at: date) -> str:
    months = (at.year - birth.year) * 12 + at.month - birth.month - (at.day < birth.day)
    months = max(months, 0)
    if months < 24:
        return f"{months} months"
    return f"{months // 12} years"


def _demographics_line(demographics: Demographics, today: date) -> CitedLine:
    parts = [f"Patient: {demographics.name}"]
    if demographics.gender:
        parts.append(demographics.gender)
    if demographics.deceased:
        death = demographics.deceased_date
        if death and demographics.birth_date:
            parts.append(f"died {death.isoformat()} aged {_age(demographics.birth_date, death)}")
        else:
            parts.append(f"deceased{' ' + death.isoformat() if death else ''}")
    elif demographics.birth_date:
        parts.append(f"{_age(demographics.birth_date, today)} old")
    if demographics.birth_date:
        parts.append(f"born {demographics.birth_date.isoformat()}")
    return CitedLine(text=", ".join(parts), ref=demographics.ref)


def _condition_line(condition: RecordCondition) -> CitedLine:
    since = f" (since {condition.onset:%Y-%m})" if condition.onset else ""
    status = "" if condition.clinical_status == "active" else f" [{condition.clinical_status}]"
    return CitedLine(text=f"Active problem: {condition.name}{since}{status}", ref=condition.ref)


def _medication_line(medication: RecordMedication) -> CitedLine:
    dose = medication.dosage or "dose not recorded"
    status = "" if medication.status == "active" else f" ({medication.status})"
    return CitedLine(text=f"Active medication: {medication.name}; {dose}{status}", ref=medication.ref)


def _allergy_substance(substance: str) -> str:
    lowered = substance.lower()
    if lowered.startswith("allergy to "):
        return substance[len("allergy to ") :]
    if lowered.endswith(" allergy"):
        return substance[: -len(" allergy")]
    return substance


def _allergy_line(allergy: RecordAllergy) -> CitedLine:
    details = []
    if allergy.criticality:
        details.append(f"criticality {allergy.criticality}")
    if allergy.category:
        details.append("/".join(allergy.category))
    if allergy.reactions:
        details.append("reactions: " + ", ".join(allergy.reactions))
    suffix = f" ({'; '.join(details)})" if details else ""
    return CitedLine(text=f"Allergy: {_allergy_substance(allergy.substance)}{suffix}", ref=allergy.ref)


def _result_label(observation: RecordObservation) -> str:
    if observation.category in (None, "laboratory"):
        return "Lab"
    return f"Result ({observation.category})"


def _result_line(label: str, observation: RecordObservation) -> CitedLine:
    flag = f" flag {observation.interpretation}" if observation.interpretation else ""
    return CitedLine(
        text=f"{label}: {observation.name} {observation.value}{flag}{_on(observation.effective)}",
        ref=observation.ref,
    )


def _vital_line(observation: RecordObservation) -> CitedLine:
    return CitedLine(text=f"{observation.name}: {observation.value}{_on(observation.effective)}", ref=observation.ref)


def _imaging_line(study: RecordImagingStudy) -> CitedLine:
    return CitedLine(text=f"Imaging: {study.description}{_on(study.started)}", ref=study.ref)


def _encounter_line(encounter: RecordEncounter) -> CitedLine:
    when = f" {encounter.start.isoformat()}" if encounter.start else ""
    reason = f" for {encounter.reason}" if encounter.reason else ""
    return CitedLine(text=f"Visit{when}: {encounter.type}{reason}", ref=encounter.ref)


def _past_problem_lines(conditions: list[RecordCondition]) -> list[CitedLine]:
    """One line per past problem (latest episode cited), newest first."""
    active = {"active", "recurrence", "relapse"}
    past = [c for c in conditions if c.clinical_status not in active | _NOT_TRUE]
    episodes: dict[str, list[RecordCondition]] = {}
    for condition in _newest(past, lambda c: c.abatement or c.onset):
        episodes.setdefault(condition.code or condition.name.lower(), []).append(condition)
    lines = []
    for group in episodes.values():
        latest = group[0]
        when = latest.abatement or latest.onset
        status = latest.clinical_status
        detail = f"{status} {when:%Y-%m}" if when else status
        if len(group) > 1:
            detail += f", {len(group)} episodes"
        lines.append(CitedLine(text=f"Past problem: {latest.name} ({detail})", ref=latest.ref))
    return lines


def _immunization_lines(immunizations: list[RecordImmunization]) -> list[CitedLine]:
    latest: dict[str, RecordImmunization] = {}
    for immunization in _newest(immunizations, lambda i: i.occurrence):
        latest.setdefault(immunization.vaccine.lower(), immunization)
    return [
        CitedLine(text=f"Immunization: {i.vaccine}{f' (last {i.occurrence})' if i.occurrence else ''}", ref=i.ref)
        for i in latest.values()
    ]
