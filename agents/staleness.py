"""Stale record values: the chart's latest reading of something is older than a configurable age.

A clinician reading "BP 128/84" should know it is from three years ago. Vital signs and labs are
judged by their latest value per code; active medications by when they were last prescribed.
"""

from __future__ import annotations

from datetime import date, timedelta

from agents.summary_schema import SourceRef, UncertaintyFlag
from tools.fhir.record import PatientRecord, RecordObservation

DEFAULT_STALE_AFTER_DAYS = 365


def _latest_per_code(observations: list[RecordObservation]) -> list[RecordObservation]:
    latest: dict[str, RecordObservation] = {}
    for observation in observations:
        key = observation.code or observation.name
        current = latest.get(key)
        if observation.effective and (current is None or (current.effective or date.min) < observation.effective):
            latest[key] = observation
    return list(latest.values())


def stale_flags(
    record: PatientRecord, today: date, stale_after_days: int = DEFAULT_STALE_AFTER_DAYS
) -> list[UncertaintyFlag]:
    """One flag for stale vitals and labs, one for medications not prescribed within the age."""
    cutoff = today - timedelta(days=stale_after_days)
    flags: list[UncertaintyFlag] = []
    measured = [o for o in record.observations if o.category in {"vital-signs", "laboratory"}]
    stale = sorted(
        (o for o in _latest_per_code(measured) if o.effective and o.effective < cutoff),
        key=lambda o: o.effective or date.min,
    )
    if stale:
        shown = ", ".join(f"{o.name} {o.value} ({o.effective:%Y-%m-%d})" for o in stale[:6])
        more = f" and {len(stale) - 6} more" if len(stale) > 6 else ""
        flags.append(
            UncertaintyFlag(
                kind="stale",
                severity="low",
                message=f"The latest recorded vitals/labs are older than {stale_after_days} days: {shown}{more}.",
                evidence=[SourceRef(kind="record", ref=o.ref) for o in stale[:6]],
            )
        )
    old_meds = [m for m in record.active_medications if m.authored and m.authored < cutoff]
    if old_meds:
        names = ", ".join(f"{m.name} (last prescribed {m.authored:%Y-%m-%d})" for m in old_meds[:6])
        flags.append(
            UncertaintyFlag(
                kind="stale",
                severity="low",
                message=f"Active medications not prescribed within {stale_after_days} days: {names}.",
                evidence=[SourceRef(kind="record", ref=m.ref) for m in old_meds[:6]],
            )
        )
    return flags
