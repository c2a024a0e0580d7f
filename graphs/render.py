"""Renderers for the clinician summary: Markdown for people, JSON for machines.

Red flags and uncertainties come first, because that is what a clinician must not miss; every
statement carries footnote markers that resolve to transcript turns or record entries.
"""

from __future__ import annotations

from agents.summary_schema import ClinicianSummary, SourceRef, Statement
from agents.transcript import Turn

DEMO_NOTICE = (
    "> **Demo output.** Parts of this summary were written by a small demo model, not MedGemma. "
    "It shows how previsit works; it is not for clinical use."
)


class _Footnotes:
    def __init__(self) -> None:
        self.refs: dict[str, int] = {}

    def mark(self, sources: list[SourceRef]) -> str:
        marks = []
        for source in sources:
            number = self.refs.setdefault(source.ref, len(self.refs) + 1)
            marks.append(f"[^{number}]")
        return "".join(marks)


def _line(statement: Statement, notes: _Footnotes) -> str:
    text = f'"{statement.text}"' if statement.origin == "patient_words" else statement.text
    tag = " _(model-written)_" if statement.origin == "model" else ""
    return f"- {text}{tag} {notes.mark(statement.sources)}"


def render_markdown(summary: ClinicianSummary, turns: list[Turn]) -> str:
    """The one-page summary a clinician reads."""
    notes = _Footnotes()
    out: list[str] = [f"# Pre-visit summary: {summary.patient_name or summary.patient_id}", ""]
    if summary.demo_model:
        out += [DEMO_NOTICE, ""]
    out += [
        f"Reason for visit: {summary.reason_for_visit or 'not given'}  ",
        f"Questions asked: {summary.questions_asked}; interview ended: {summary.stop_reason.replace('_', ' ')}  ",
        f"Written by: {summary.model_id}; {summary.generated_at:%Y-%m-%d %H:%M} UTC",
        "",
        "_previsit supports clinicians; it does not diagnose. Patient words are quoted verbatim._",
        "",
    ]
    if summary.red_flags:
        out += ["## RED FLAGS", ""]
        out += [_line(s, notes) for s in summary.red_flags]
        out.append("")
    if summary.flags:
        out += ["## Uncertainties", ""]
        order = {"high": 0, "medium": 1, "low": 2}
        for flag in sorted(summary.flags, key=lambda f: order[f.severity]):
            marks = notes.mark(flag.evidence) if flag.evidence else ""
            out.append(
                f"- **{flag.severity.upper()} · {flag.kind.replace('_', ' ')}**: {flag.message} {marks}".rstrip()
            )
        out.append("")
    sections: list[tuple[str, list[Statement]]] = [
        ("Chief complaint", [summary.chief_complaint] if summary.chief_complaint else []),
        ("History of present illness", [h.statement for h in summary.hpi]),
        ("HPI narrative", summary.hpi_narrative),
        ("Medications", summary.medications),
        ("Allergies", summary.allergies),
        ("Relevant history", summary.history),
        ("Patient's concerns and questions", summary.patient_concerns),
    ]
    for title, statements in sections:
        if not statements:
            continue
        out += [f"## {title}", ""]
        if title == "History of present illness":
            for item in summary.hpi:
                label = item.element.value.replace("_", " ").capitalize()
                line = _line(item.statement, notes)
                out.append(f"- **{label}:** {line[2:]}")
        else:
            out += [_line(s, notes) for s in statements]
        out.append("")
    if summary.removed_statements:
        out += ["## Removed by the verifier (not supported by their sources)", ""]
        out += [f"- ~~{s.text}~~" for s in summary.removed_statements]
        out.append("")
    by_id = {t.id: t for t in turns}
    if notes.refs:
        out += ["## Sources", ""]
        for ref, number in notes.refs.items():
            turn = by_id.get(ref)
            if turn:
                answer = turn.answer if len(turn.answer) <= 300 else turn.answer[:300] + " …"
                out.append(f'[^{number}]: {ref}: Q "{turn.question}" A "{answer}"')
            else:
                out.append(f"[^{number}]: {ref}")
        out.append("")
    return "\n".join(out)


def render_json(summary: ClinicianSummary) -> str:
    return summary.model_dump_json(indent=2)
