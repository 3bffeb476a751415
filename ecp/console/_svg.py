"""Charts drawn on the server as SVG: no script, no library, nothing for the CSP to allow.

Colours come from presentation attributes (the CSP forbids inline styles)
and always come with words: a legend names every series and the page puts
the same numbers in a table beside the picture.
"""

from __future__ import annotations

import math
from typing import Final

from markupsafe import Markup, escape

from ecp.console._render import visible
from ecp.console.charts import Chart

__all__ = ["chart_svg"]

_W: Final = 640
_LEFT: Final = 56
_RIGHT: Final = 12
_TOP: Final = 12
_PLOT_H: Final = 170
_NAMED: Final = {
    "allow": "#2e7d32",
    "completed": "#2e7d32",
    "approved after": "#2e7d32",
    "deny": "#c62828",
    "denied": "#c62828",
    "denials": "#c62828",
    "allow_after_approval": "#b26a00",
    "still waiting": "#b26a00",
    "failed": "#6a1b9a",
    "interrupted": "#ad1457",
    "unknown": "#e65100",
    "running": "#0550ae",
    "undecided": "#57606a",
    "p50": "#0550ae",
    "p95": "#b26a00",
}
_PALETTE: Final = ("#0550ae", "#b26a00", "#6a1b9a", "#2e7d32", "#c62828", "#57606a")


def _colour(name: str, i: int) -> str:
    return _NAMED.get(name, _PALETTE[i % len(_PALETTE)])


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return float(m * exp)
    return float(10 * exp)  # pragma: no cover - the loop always returns


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:,.1f}"


def _short(text: str, n: int) -> str:
    text = visible(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _legend(chart: Chart, y: int) -> list[str]:
    out, x = [], _LEFT
    for i, s in enumerate(chart.series):
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{_colour(s.name, i)}"/>'
            f'<text x="{x + 14}" y="{y}" class="chart-legend">{escape(_short(s.name, 24))}</text>'
        )
        x += 24 + 8 * min(len(s.name), 24)
    return out


def _axes(top: float) -> list[str]:
    out = []
    for frac in (0.0, 0.5, 1.0):
        y = _TOP + _PLOT_H * (1 - frac)
        out.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="chart-axis">'
            f"{_num(top * frac)}</text>"
        )
    return out


def _x_labels(labels: tuple[str, ...], step: float) -> list[str]:
    every = max(1, math.ceil(len(labels) / 8))
    return [
        f'<text x="{_LEFT + step * (i + 0.5):.1f}" y="{_TOP + _PLOT_H + 16}" '
        f'text-anchor="middle" class="chart-axis">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _stacked(chart: Chart) -> tuple[list[str], int]:
    n = len(chart.labels) or 1
    totals = [sum((s.values[i] or 0.0) for s in chart.series) for i in range(len(chart.labels))]
    top = _nice_max(max(totals, default=0.0))
    step = (_W - _LEFT - _RIGHT) / n
    out = _axes(top)
    for i in range(len(chart.labels)):
        y = float(_TOP + _PLOT_H)
        for j, s in enumerate(chart.series):
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            h = _PLOT_H * v / top
            y -= h
            out.append(
                f'<rect x="{_LEFT + step * i + 2:.1f}" y="{y:.1f}" width="{max(step - 4, 1):.1f}" '
                f'height="{h:.1f}" fill="{_colour(s.name, j)}">'
                f"<title>{escape(_short(s.name, 40))} {escape(chart.labels[i])}: "
                f"{_num(v)}</title></rect>"
            )
    out += _x_labels(chart.labels, step)
    return out, _TOP + _PLOT_H + 40


def _lines(chart: Chart) -> tuple[list[str], int]:
    n = len(chart.labels) or 1
    values = [v for s in chart.series for v in s.values if v is not None]
    top = _nice_max(max(values, default=0.0))
    step = (_W - _LEFT - _RIGHT) / n
    out = _axes(top)
    for j, s in enumerate(chart.series):
        colour = _colour(s.name, j)
        points = [
            (_LEFT + step * (i + 0.5), _TOP + _PLOT_H * (1 - v / top))
            for i, v in enumerate(s.values)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    out += _x_labels(chart.labels, step)
    return out, _TOP + _PLOT_H + 40


def _categories(chart: Chart) -> tuple[list[str], int]:
    row = 22
    label_w = 190
    left = label_w + 8
    values = [sum((s.values[i] or 0.0) for s in chart.series) for i in range(len(chart.labels))]
    top = _nice_max(max(values, default=0.0))
    width = _W - left - 70
    out = []
    for i, label in enumerate(chart.labels):
        y = _TOP + row * i
        out.append(
            f'<text x="{label_w}" y="{y + 15}" text-anchor="end" class="chart-axis">'
            f"<title>{escape(visible(label))}</title>{escape(_short(label, 28))}</text>"
        )
        x = float(left)
        for j, s in enumerate(chart.series):
            v = s.values[i] or 0.0
            if v <= 0:
                continue
            w = width * v / top
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}" '
                f'fill="{_colour(s.name, j)}"><title>{escape(_short(s.name, 40))}: {_num(v)}'
                "</title></rect>"
            )
            x += w
        out.append(
            f'<text x="{x + 6:.1f}" y="{y + 15}" class="chart-axis">{_num(values[i])}</text>'
        )
    return out, _TOP + row * max(len(chart.labels), 1) + 28


def chart_svg(chart: Chart, title_id: str) -> Markup:
    """``chart`` as an inline SVG labelled by the element ``title_id``."""
    if not chart.labels or not any(v for s in chart.series for v in s.values):
        return Markup('<p class="muted chart-empty">No data in this window.</p>')
    if chart.kind == "stacked":
        body, height = _stacked(chart)
    elif chart.kind == "lines":
        body, height = _lines(chart)
    else:
        body, height = _categories(chart)
    body += _legend(chart, height - 6)
    head = (
        f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-labelledby="{escape(title_id)}" xmlns="http://www.w3.org/2000/svg">'
    )
    # Every text from data went through escape() above; the rest is numbers.
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704
