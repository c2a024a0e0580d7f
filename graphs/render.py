"""Renderers for the clinician summary: Markdown for people, JSON for machines.

Red flags and uncertainties come first, because that is what a clinician must not miss; every
statement carries footnote markers that resolve to transcript turns or record entries.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.summary_schema import ClinicianSummary, SourceRef, Statement
from agents.transcript import Turn
from tools.imaging.records import ImageRecord

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


def image_source_line(image: ImageRecord) -> str:
    """What an image footnote says: the file, when it was sent, what was read, and how to check it is the same."""
    parts = [f"'{image.filename}' sent at {image.turn_id}"]
    if image.format:
        parts.append(f"{image.format.upper()} {image.width}x{image.height}")
    if image.sha256:
        parts.append(f"sha256 {image.sha256[:12]}")
    if image.triage is not None:
        parts.append(f"label set {image.triage.label_set.name} #{image.triage.label_set.content_hash[:8]}")
    parts.append(f"stored at {image.path}")
    return ", ".join(parts)


def _line(statement: Statement, notes: _Footnotes) -> str:
    text = f'"{statement.text}"' if statement.origin == "patient_words" else statement.text
    tag = " _(model-written)_" if statement.origin == "model" else ""
    return f"- {text}{tag} {notes.mark(statement.sources)}"


def render_markdown(summary: ClinicianSummary, turns: list[Turn], images: Sequence[ImageRecord] = ()) -> str:
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
    sections = summary.sections()
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
    images_by_id = {i.id: i for i in images}
    if notes.refs:
        out += ["## Sources", ""]
        for ref, number in notes.refs.items():
            turn = by_id.get(ref)
            if ref in images_by_id:
                out.append(f"[^{number}]: {ref}: image {image_source_line(images_by_id[ref])}")
            elif turn:
                answer = turn.answer if len(turn.answer) <= 300 else turn.answer[:300] + " …"
                out.append(f'[^{number}]: {ref}: Q "{turn.question}" A "{answer}"')
            else:
                out.append(f"[^{number}]: {ref}")
        out.append("")
    return "\n".join(out)


def render_json(summary: ClinicianSummary) -> str:
    return summary.model_dump_json(indent=2)


_PRINT_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:52rem;margin:1.5rem auto;color:#111;padding:0 1rem}
h1{font-size:1.35rem;margin:0 0 .3rem}h2{font-size:1.05rem;margin:1.1rem 0 .3rem;border-bottom:1px solid #999}
.meta{color:#333}.demo{border:2px solid #a15c00;padding:.4rem .6rem;background:#fff6e5}
.red{border:3px solid #b00020;padding:.3rem .8rem;background:#fdecee}.red h2{color:#b00020;border:0}
.sev-high{color:#b00020;font-weight:700}.sev-medium{color:#7a4a00;font-weight:700}.sev-low{color:#333}
sup a{text-decoration:none}ol.sources{font-size:.85rem;color:#333}.model{font-style:italic;color:#444}
@media print{body{margin:0;max-width:none}a{color:inherit}}
"""


def render_html(summary: ClinicianSummary, turns: list[Turn], images: Sequence[ImageRecord] = ()) -> str:
    """A one-page print view: red flags and uncertainties first, sources as numbered footnotes."""
    from html import escape

    notes = _Footnotes()

    def marks(sources: list[SourceRef]) -> str:
        numbers = [notes.refs.setdefault(s.ref, len(notes.refs) + 1) for s in sources]
        return "".join(f'<sup><a href="#src-{n}">[{n}]</a></sup>' for n in numbers)

    def item(statement: Statement) -> str:
        text = escape(statement.text)
        if statement.origin == "patient_words":
            text = f"&ldquo;{text}&rdquo;"
        elif statement.origin == "model":
            text = f'<span class="model">{text} (model-written)</span>'
        return f"<li>{text} {marks(statement.sources)}</li>"

    title = escape(summary.patient_name or summary.patient_id)
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Pre-visit summary: {title}</title><style>{_PRINT_CSS}</style></head><body>",
        f"<h1>Pre-visit summary: {title}</h1>",
    ]
    if summary.demo_model:
        out.append(f'<p class="demo">{escape(DEMO_NOTICE.lstrip("> ").replace("**", ""))}</p>')
    out.append(
        f'<p class="meta">Reason for visit: {escape(summary.reason_for_visit or "not given")} · '
        f"Questions asked: {summary.questions_asked} · Ended: {escape(summary.stop_reason.replace('_', ' '))} · "
        f"Written by: {escape(summary.model_id)}, {summary.generated_at:%Y-%m-%d %H:%M} UTC<br>"
        "previsit supports clinicians; it does not diagnose. Patient words are quoted verbatim.</p>"
    )
    if summary.red_flags:
        out.append('<section class="red" aria-label="Red flags"><h2>RED FLAGS</h2><ul>')
        out += [item(s) for s in summary.red_flags]
        out.append("</ul></section>")
    if summary.flags:
        order = {"high": 0, "medium": 1, "low": 2}
        out.append("<h2>Uncertainties</h2><ul>")
        for flag in sorted(summary.flags, key=lambda f: order[f.severity]):
            out.append(
                f'<li><span class="sev-{flag.severity}">{flag.severity.upper()} · '
                f"{escape(flag.kind.replace('_', ' '))}</span>: {escape(flag.message)} {marks(flag.evidence)}</li>"
            )
        out.append("</ul>")
    sections = summary.sections()
    for heading, statements in sections:
        if statements:
            out.append(f"<h2>{escape(heading)}</h2><ul>")
            out += [item(s) for s in statements]
            out.append("</ul>")
    by_id = {t.id: t for t in turns}
    images_by_id = {i.id: i for i in images}
    if notes.refs:
        out.append('<h2>Sources</h2><ol class="sources">')
        for ref, number in notes.refs.items():
            turn = by_id.get(ref)
            detail = (
                f": Q &ldquo;{escape(turn.question)}&rdquo; A &ldquo;{escape(turn.answer[:300])}&rdquo;" if turn else ""
            )
            if ref in images_by_id:
                detail = f": image {escape(image_source_line(images_by_id[ref]))}"
            out.append(f'<li id="src-{number}" value="{number}">{escape(ref)}{detail}</li>')
        out.append("</ol>")
    out.append("</body></html>")
    return "\n".join(out)
