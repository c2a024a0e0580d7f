"""Small SVG charts for suite reports, written by hand so a report needs no plotting library and no script.

Every chart is an ``<svg role="img">`` with a <title> and a <desc> that states the numbers in
words (screen readers read them; so does anyone reading the Markdown), labelled axes and colours
with enough contrast on white.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from html import escape

WIDTH = 520
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 52
BAR = "#2f6497"
POINT = "#b3471d"
GRID = "#d9d9d9"
INK = "#1f1f1f"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\""


def nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power:
            return float(mult * power)
    return float(10 * power)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


def _frame(slug: str, title: str, desc: str, body: list[str], x_label: str, y_label: str) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" aria-labelledby="{slug}-title {slug}-desc" {FONT}>',
            f'<title id="{slug}-title">{escape(title)}</title>',
            f'<desc id="{slug}-desc">{escape(desc)}</desc>',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
            f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600" '
            f'fill="{INK}">{escape(title)}</text>',
            *body,
            f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle" '
            f'font-size="13" fill="{INK}">{escape(x_label)}</text>',
            f'<text transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle" '
            f'font-size="13" fill="{INK}">{escape(y_label)}</text>',
            "</svg>",
        ]
    )


def _y_axis(max_value: float, *, integer: bool = True) -> tuple[list[str], float]:
    """Gridlines and labels; returns the top of the axis."""
    plot_h = HEIGHT - TOP - BOTTOM
    step = max(1.0, nice_step(max_value)) if integer else nice_step(max_value)
    top = step * max(1, math.ceil(max_value / step))
    parts: list[str] = []
    value = 0.0
    while value <= top + 1e-9:
        y = TOP + plot_h - plot_h * value / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{INK}">{_fmt(value)}</text>'
        )
        value += step
    return parts, top


def _empty(slug: str, title: str, x_label: str, y_label: str, why: str) -> str:
    body = [
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" fill="{INK}">{escape(why)}</text>'
    ]
    return _frame(slug, title, why, body, x_label, y_label)


def histogram(
    slug: str,
    title: str,
    values: Sequence[float],
    edges: Sequence[float],
    x_label: str,
    y_label: str = "scenarios",
    *,
    edge_format: str = "{:g}",
) -> str:
    """Counts of `values` in the bins between `edges` (the last bin includes its right edge)."""
    if not values:
        return _empty(slug, title, x_label, y_label, "No values to plot.")
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = len(counts) - 1
        for i in range(len(counts)):
            if value < edges[i + 1]:
                index = i
                break
        counts[max(index, 0)] += 1
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    body, top = _y_axis(max(counts))
    width = plot_w / len(counts)
    for i, count in enumerate(counts):
        h = plot_h * count / top
        x = LEFT + i * width
        label = f"{edge_format.format(edges[i])} to {edge_format.format(edges[i + 1])}: {count}"
        body.append(
            f'<rect x="{x + 1:.1f}" y="{TOP + plot_h - h:.1f}" width="{width - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR}"><title>{escape(label)}</title></rect>'
        )
        if count:
            body.append(
                f'<text x="{x + width / 2:.1f}" y="{TOP + plot_h - h - 4:.1f}" text-anchor="middle" '
                f'font-size="11" fill="{INK}">{count}</text>'
            )
    step = max(1, math.ceil(len(edges) / 11))
    for i in range(0, len(edges), step):
        x = LEFT + i * width
        body.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="11" '
            f'fill="{INK}">{escape(edge_format.format(edges[i]))}</text>'
        )
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="{INK}"/>')
    bins = "; ".join(
        f"{edge_format.format(edges[i])} to {edge_format.format(edges[i + 1])}: {c}" for i, c in enumerate(counts) if c
    )
    desc = f"Histogram of {len(values)} values of {x_label}. Non-empty bins: {bins}."
    return _frame(slug, title, desc, body, x_label, y_label)


def count_scatter(slug: str, title: str, points: Sequence[tuple[int, int]], x_label: str, y_label: str) -> str:
    """Integer pairs as circles whose area grows with how many scenarios share them; y = x is dashed."""
    if not points:
        return _empty(slug, title, x_label, y_label, "No scenarios to plot.")
    counts = Counter(points)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    top_value = max(max(x for x, _ in points), max(y for _, y in points), 1)
    step = max(1.0, nice_step(top_value))
    top = step * math.ceil(top_value / step)
    right = top
    pad = 0.5  # half a unit around the data, so points on an axis are not drawn over its labels

    def px(x: float) -> float:
        return LEFT + plot_w * (x + pad) / (right + 2 * pad)

    def py(y: float) -> float:
        return TOP + plot_h - plot_h * (y + pad) / (top + 2 * pad)

    body: list[str] = []
    value = 0.0
    while value <= top + 1e-9:
        y = py(value)
        body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(
            f'<text x="{LEFT - 6}" y="{py(value) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{INK}">{_fmt(value)}</text>'
        )
        body.append(
            f'<text x="{px(value):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="11" '
            f'fill="{INK}">{_fmt(value)}</text>'
        )
        value += step
    body.append(
        f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(right):.1f}" y2="{py(right):.1f}" stroke="#6b6b6b" '
        'stroke-dasharray="5 4"><title>raised = expected</title></line>'
    )
    biggest = max(counts.values())
    for (x, y), n in sorted(counts.items()):
        radius = 4 + 10 * math.sqrt(n / biggest)
        label = f"{n} scenario(s): {x} expected, {y} raised"
        body.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius:.1f}" fill="{POINT}" fill-opacity="0.75" '
            f'stroke="#ffffff"><title>{escape(label)}</title></circle>'
        )
        if n > 1:
            body.append(
                f'<text x="{px(x) + radius + 3:.1f}" y="{py(y) + 4:.1f}" font-size="11" fill="{INK}">{n}</text>'
            )
    above = sum(n for (x, y), n in counts.items() if y > x)
    below = sum(n for (x, y), n in counts.items() if y < x)
    desc = (
        f"{len(points)} scenarios. {len(points) - above - below} raised as many flags as expected, "
        f"{above} raised more, {below} raised fewer."
    )
    return _frame(slug, title, desc, body, x_label, y_label)
