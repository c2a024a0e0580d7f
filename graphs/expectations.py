"""Checking a finished intake against a scenario's expectations, with readable failures.

Used by the scenario tests and by anyone who writes their own: a failure names the missed fact or
flag and shows the transcript excerpt, so it reads like a clinician's review note.
"""

from __future__ import annotations

import re

from agents.summary_schema import ClinicianSummary
from agents.transcript import Turn
from graphs.scenario import Expectations


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9/.]+", text.lower()))


def _containing(text: str | None) -> str:
    return f" containing {text!r}" if text else ""


def summary_text(summary: ClinicianSummary) -> str:
    """All the text a clinician sees in the summary body and flags, for fact matching."""
    parts = [s.text for s in summary.statements()] + [f.message for f in summary.flags]
    return "\n".join(parts)


def check_expectations(
    expect: Expectations, summary: ClinicianSummary, turns: list[Turn], red_flag_raised: bool
) -> list[str]:
    """Every way the run falls short of `expect` (empty when it meets them)."""
    problems: list[str] = []
    text = _normalise(summary_text(summary))
    for fact in expect.summary_contains:
        if _normalise(fact) not in text:
            problems.append(f"fact missing from the summary: {fact!r}")
    body = _normalise("\n".join(s.text for s in summary.statements()))
    for text in expect.summary_lacks:
        if _normalise(text) in body:
            problems.append(f"the summary must not state {text!r}")
    for flag in expect.flags:
        matching = [
            f
            for f in summary.flags
            if f.kind == flag.kind and (not flag.contains or flag.contains.lower() in f.message.lower())
        ]
        if not matching:
            raised = ", ".join(f"{f.kind}: {f.message[:60]}" for f in summary.flags) or "none"
            wanted = f"{flag.kind}{_containing(flag.contains)}"
            if flag.severity:
                wanted += f" of severity {flag.severity}"
            if flag.evidence:
                wanted += f" with evidence {', '.join(flag.evidence)}"
            problems.append(f"expected flag {wanted}; raised: {raised}")
    for kind in expect.absent_flags:
        unwanted = [f.message[:100] for f in summary.flags if f.kind == kind]
        if unwanted:
            problems.append(f"flag {kind} must not be raised, but was: {unwanted}")
    if expect.red_flag != red_flag_raised:
        problems.append(f"red flag expected: {expect.red_flag}, raised: {red_flag_raised}")
    if expect.max_questions is not None and len(turns) > expect.max_questions:
        problems.append(f"asked {len(turns)} questions, at most {expect.max_questions} expected")
    if expect.stop_reason is not None and summary.stop_reason != expect.stop_reason:
        problems.append(f"stopped for {summary.stop_reason!r}, expected {expect.stop_reason!r}")
    if problems:
        excerpt = "\n".join(f"  [{t.id}] Q: {t.question}\n  [{t.id}] A: {t.answer[:160]}" for t in turns[-6:])
        problems.append(f"transcript (last turns):\n{excerpt}")
    return problems
