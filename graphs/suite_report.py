"""The suite report: totals, four plots and a row per scenario, as HTML and as Markdown.

The HTML is one self-contained file (inline CSS and SVG, no script, nothing fetched), so it can be
mailed or attached to a CI run. The Markdown links the same plots as SVG files next to it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from pydantic import BaseModel

from graphs.suite_plots import count_scatter, histogram, nice_step
from graphs.suite_results import SuiteResult


class SuiteTotals(BaseModel):
    """The suite at a glance; None where nothing could be measured."""

    scenarios: int
    by_status: dict[str, int]
    mean_fact_recall: float | None
    median_fact_recall: float | None
    pooled_fact_recall: float | None
    facts_found: int
    facts_total: int
    mean_unsupported_rate: float | None
    unsupported_statements: int
    statements_total: int
    flag_precision: float | None
    flag_recall: float | None
    flags_expected: int
    flags_raised: int
    flags_matched: int
    red_flags_expected: int
    red_flags_raised: int
    red_flags_detected: int
    red_flags_missed: int
    red_flags_unexpected: int
    mean_questions: float | None
    prompt_tokens: int
    output_tokens: int
    model_calls: int
    mean_turn_ms: float | None
    p50_turn_ms: float | None
    p95_turn_ms: float | None
    mean_intake_s: float | None
    models: list[str]
    patients: list[str]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def suite_totals(results: Sequence[SuiteResult]) -> SuiteTotals:
    scores = [r.score for r in results if r.score is not None]
    stats = [r.stats for r in results if r.stats is not None]
    recalls = [s.fact_recall for s in scores if s.fact_recall is not None]
    turn_ms = [t * 1000 for s in stats for t in s.turn_latencies_s]
    flags_expected = sum(s.flags_expected for s in scores)
    flags_raised = sum(s.flags_raised for s in scores)
    flags_matched = sum(s.flags_matched for s in scores)
    statements = sum(s.statements_total for s in scores)
    unsupported = sum(s.unsupported_statements for s in scores)
    return SuiteTotals(
        scenarios=len(results),
        by_status=dict(Counter(r.status for r in results)),
        mean_fact_recall=_mean(recalls),
        median_fact_recall=statistics.median(recalls) if recalls else None,
        pooled_fact_recall=_ratio(sum(s.facts_found for s in scores), sum(s.facts_total for s in scores)),
        facts_found=sum(s.facts_found for s in scores),
        facts_total=sum(s.facts_total for s in scores),
        mean_unsupported_rate=_mean([s.unsupported_rate for s in scores if s.unsupported_rate is not None]),
        unsupported_statements=unsupported,
        statements_total=statements,
        flag_precision=_ratio(flags_matched, flags_raised),
        flag_recall=_ratio(flags_matched, flags_expected),
        flags_expected=flags_expected,
        flags_raised=flags_raised,
        flags_matched=flags_matched,
        red_flags_expected=sum(s.red_flag_expected for s in scores),
        red_flags_raised=sum(s.red_flag_raised for s in scores),
        red_flags_detected=sum(s.red_flag_expected and s.red_flag_raised for s in scores),
        red_flags_missed=sum(s.red_flag_expected and not s.red_flag_raised for s in scores),
        red_flags_unexpected=sum(s.red_flag_raised and not s.red_flag_expected for s in scores),
        mean_questions=_mean([s.questions_asked for s in scores]),
        prompt_tokens=sum(s.prompt_tokens for s in stats),
        output_tokens=sum(s.output_tokens for s in stats),
        model_calls=sum(s.model_calls for s in stats),
        mean_turn_ms=_mean(turn_ms),
        p50_turn_ms=_percentile(turn_ms, 0.5),
        p95_turn_ms=_percentile(turn_ms, 0.95),
        mean_intake_s=_mean([s.wall_s for s in stats]),
        models=sorted({r.model_id for r in results if r.model_id}),
        patients=sorted({r.patient for r in results if r.patient}),
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ms_edges(values: Sequence[float]) -> list[float]:
    """About 15 bins of a round width up to the largest value (the last bin holds the slowest turns)."""
    top = max(values) if values else 1.0
    step = max(1.0, nice_step(top / 15, 1))
    bins = max(1, min(20, int(top // step) + 1))
    return [i * step for i in range(bins + 1)]


def suite_plots(results: Sequence[SuiteResult]) -> dict[str, str]:
    """The four plots, by file stem."""
    scores = [r.score for r in results if r.score is not None]
    recalls = [s.fact_recall * 100 for s in scores if s.fact_recall is not None]
    questions = [s.questions_asked for s in scores]
    turn_ms = [t * 1000 for r in results if r.stats for t in r.stats.turn_latencies_s]
    q_top = max(questions, default=0)
    q_step = max(1, -(-(q_top + 1) // 20))
    return {
        "fact-recall": histogram(
            "fact-recall",
            "Fact recall per scenario",
            recalls,
            [i * 10 for i in range(11)],
            "hidden facts found in the summary (%)",
        ),
        "flags": count_scatter(
            "flags",
            "Summary flags raised vs expected",
            [(s.flags_expected, s.flags_raised) for s in scores],
            "flags expected (scenario)",
            "flags raised (summary)",
        ),
        "questions": histogram(
            "questions",
            "Questions asked per intake",
            questions,
            list(range(0, q_top + q_step + 1, q_step)),
            "questions asked",
        ),
        "turn-latency": histogram(
            "turn-latency",
            "Latency per turn (answer to next question)",
            turn_ms,
            _ms_edges(turn_ms),
            "milliseconds per turn",
            "turns",
            edge_format="{:g}",
        ),
    }


def _flag_pr(result: SuiteResult) -> str:
    score = result.score
    if score is None:
        return ""
    return f"{_pct(score.flag_precision)} / {_pct(score.flag_recall)}"


def _cells(result: SuiteResult) -> list[str]:
    """Plain-text cells of one row (escaped by the caller)."""
    score, stats = result.score, result.stats
    if score is None or stats is None:
        return [result.key, result.status] + [""] * 8
    turns = stats.turn_latencies_s
    return [
        result.scenario_id or result.key,
        result.status,
        f"{_pct(score.fact_recall)} ({score.facts_found}/{score.facts_total})",
        f"{_pct(score.unsupported_rate)} ({score.unsupported_statements}/{score.statements_total})",
        _flag_pr(result),
        f"{'yes' if score.red_flag_expected else 'no'} / {'yes' if score.red_flag_raised else 'no'}",
        str(score.questions_asked),
        f"{stats.prompt_tokens + stats.output_tokens}",
        f"{statistics.fmean(turns) * 1000:.0f}" if turns else "n/a",
        "; ".join(score.missed_facts),
    ]


HEADERS = [
    "scenario",
    "status",
    "fact recall",
    "unsupported",
    "flag P / R",
    "red flag exp / raised",
    "questions",
    "tokens",
    "ms / turn",
    "missed facts",
]


def _totals_lines(t: SuiteTotals) -> list[tuple[str, str]]:
    status = ", ".join(f"{n} {s}" for s, n in sorted(t.by_status.items())) or "none"
    return [
        ("Scenarios", f"{t.scenarios} ({status})"),
        (
            "Fact recall",
            f"mean {_pct(t.mean_fact_recall)}, median {_pct(t.median_fact_recall)}, "
            f"pooled {_pct(t.pooled_fact_recall)} ({t.facts_found} of {t.facts_total} facts)",
        ),
        (
            "Unsupported statements",
            f"mean rate {_pct(t.mean_unsupported_rate)} ({t.unsupported_statements} of {t.statements_total})",
        ),
        (
            "Summary flags",
            f"precision {_pct(t.flag_precision)}, recall {_pct(t.flag_recall)} "
            f"({t.flags_matched} matched, {t.flags_raised} raised, {t.flags_expected} expected)",
        ),
        (
            "Red flags",
            f"{t.red_flags_detected} of {t.red_flags_expected} expected detected, {t.red_flags_missed} missed, "
            f"{t.red_flags_unexpected} raised where none was expected",
        ),
        ("Questions asked", f"mean {_num(t.mean_questions)} per intake"),
        (
            "Model",
            f"{t.model_calls} calls, {t.prompt_tokens} prompt + {t.output_tokens} output tokens "
            f"({', '.join(t.models) or 'none'})",
        ),
        (
            "Time",
            f"{_num(t.mean_turn_ms, 0)} ms per turn (p50 {_num(t.p50_turn_ms, 0)}, p95 {_num(t.p95_turn_ms, 0)}), "
            f"{_num(t.mean_intake_s, 2)} s per intake",
        ),
        ("Simulated patient", ", ".join(t.patients) or "n/a"),
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, results: Sequence[SuiteResult], notes: Sequence[str] = ()) -> str:
    totals = suite_totals(results)
    lines = [f"# {title}", "", f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.", ""]
    lines += [f"- **{name}:** {value}" for name, value in _totals_lines(totals)]
    lines += ["", "## Plots", ""]
    lines += [f"![{stem}](plots/{stem}.svg)" for stem in suite_plots(results)]
    lines += ["", "## Scenarios", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for result in results:
        lines.append("| " + " | ".join(_md_cell(c) for c in _cells(result)) + " |")
    errors = [r for r in results if r.status == "error"]
    if errors:
        lines += ["", "## Errors", ""] + [f"- `{_md_cell(r.key)}`: {_md_cell(r.error or '')}" for r in errors]
    failed = [r for r in results if r.problems]
    if failed:
        lines += ["", "## Unmet expectations", ""]
        for result in failed:
            lines.append(f"- `{result.key}`:")
            lines += [f"  - {_md_cell(p.splitlines()[0])}" for p in result.problems if not p.startswith("transcript")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f1f1f;margin:24px;max-width:1400px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
dl.totals{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}dl.totals dt{font-weight:600}
dl.totals dd{margin:0}.plots{display:flex;flex-wrap:wrap;gap:16px}
.plots figure{margin:0;border:1px solid #d9d9d9;border-radius:4px}
table{border-collapse:collapse;font-size:0.85rem;width:100%}
th,td{border:1px solid #d0d0d0;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef2f6;position:sticky;top:0}td.num{text-align:right;white-space:nowrap}
.status{font-weight:600;padding:1px 6px;border-radius:3px;white-space:nowrap}
.passed{background:#dff0d8;color:#1d4d1d}.done{background:#e8eef5;color:#1f3b57}
.failed{background:#fbe3c8;color:#6b3300}.error{background:#f6d5d5;color:#7a1010}
td.missed{max-width:420px}td.error-text{color:#7a1010}
"""


def render_html(title: str, results: Sequence[SuiteResult], notes: Sequence[str] = ()) -> str:
    totals = suite_totals(results)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>",
        '<dl class="totals">',
    ]
    parts += [f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in _totals_lines(totals)]
    parts += ["</dl>", "<h2>Plots</h2>", '<div class="plots">']
    parts += [f"<figure>{svg}</figure>" for svg in suite_plots(results).values()]
    parts += ["</div>", "<h2>Scenarios</h2>", "<table><thead><tr>"]
    parts += [f'<th scope="col">{escape(h)}</th>' for h in HEADERS]
    parts.append("</tr></thead><tbody>")
    for result in results:
        cells = _cells(result)
        status = f'<span class="status {result.status}">{escape(result.status)}</span>'
        row = [f'<th scope="row">{escape(cells[0])}</th>', f"<td>{status}</td>"]
        if result.score is None:
            row.append(f'<td class="error-text" colspan="{len(HEADERS) - 2}">{escape(result.error or "")}</td>')
        else:
            row += [f'<td class="num">{escape(c)}</td>' for c in cells[2:9]]
            missed = result.score.missed_facts
            shown = "".join(f"<li>{escape(m)}</li>" for m in missed[:3])
            more = (
                f"<details><summary>{len(missed) - 3} more</summary><ul>"
                + "".join(f"<li>{escape(m)}</li>" for m in missed[3:])
                + "</ul></details>"
                if len(missed) > 3
                else ""
            )
            row.append(f'<td class="missed">{"<ul>" + shown + "</ul>" if shown else "none"}{more}</td>')
        parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("</tbody></table>")
    failed = [r for r in results if r.problems]
    if failed:
        parts.append("<h2>Unmet expectations</h2>")
        for result in failed:
            parts.append(f"<h3>{escape(result.key)}</h3><pre>{escape(chr(10).join(result.problems))}</pre>")
    if notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{escape(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(out_dir: Path, title: str, results: Sequence[SuiteResult], notes: Sequence[str] = ()) -> list[Path]:
    """report.html, report.md, summary.json (the totals) and plots/*.svg under `out_dir`."""
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, svg in suite_plots(results).items():
        path = plots_dir / f"{stem}.svg"
        path.write_text(svg + "\n", encoding="utf-8")
        written.append(path)
    for name, text in (
        ("report.html", render_html(title, results, notes)),
        ("report.md", render_markdown(title, results, notes)),
        ("summary.json", suite_totals(results).model_dump_json(indent=2) + "\n"),
    ):
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
