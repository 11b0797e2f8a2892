"""Line charts as inline SVG text: axes with round-number ticks, a title, a legend, and one
polyline per series (markers where asked, or where a series has a single point). No plotting
library: the report is one HTML file that needs nothing but a browser."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

Point = tuple[float, float]

# Colour-blind-safe colours (Okabe-Ito), in the order series get them.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
MAX_POINTS = 2000  # a longer series is thinned to this many, keeping each bucket's extremes


@dataclass
class Series:
    """One line of a chart: its legend name, its (x, y) points, and how it is drawn."""

    name: str
    points: list[Point]
    color: str = PALETTE[0]
    markers: bool = False  # a dot at every point (evaluations: few points, each one matters)
    dashed: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering
    [`lo`, `hi`]; `integer`: at least 1 apart (steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    if integer:
        raw = max(raw, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, n = [], 0
    while first + n * step <= hi + step * 1e-9:
        ticks.append(round(first + n * step, 12))
        n += 1
    return ticks


def format_number(value: float, spread: float = 0.0) -> str:
    """`value` as a tick label: thousands separators for whole numbers, and as many decimals
    (or an exponent) as `spread`, the distance between ticks, needs."""
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-3:
        return f"{value:.2g}" if spread == 0 else f"{value:.3g}"
    if float(value).is_integer() and (spread == 0 or spread >= 1):
        return f"{int(value):,}"
    decimals = max(0, -math.floor(math.log10(spread))) if spread > 0 else 3
    return f"{value:,.{min(decimals, 6)}f}"


def thin(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most about `limit` points: buckets along x, each keeping its lowest and highest
    point (a spike stays visible)."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 2))
    out: list[Point] = []
    for i in range(0, len(points), size):
        bucket = points[i : i + size]
        pair = sorted({min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])})
        out.extend(pair)
    return out


def line_chart(
    series: list[Series],
    *,
    title: str,
    x_label: str = "step",
    y_label: str = "",
    chart_id: str = "",
    width: int = 560,
    height: int = 300,
    steps: bool = True,
) -> str:
    """The chart as an `<svg>` element: `series` drawn against shared axes (non-finite points
    left out), titled, with a legend; a chart without any point says so instead. `steps`: x
    is a step count (the axis starts at 0, whole-number ticks)."""
    left, right, top, bottom = 64, 24, 48, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    clean = [
        (s, thin([(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]))
        for s in series
    ]
    xs = [x for _, pts in clean for x, _ in pts]
    ys = [y for _, pts in clean for _, y in pts]
    attrs = (
        f'class="chart" data-chart="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img"'
    )
    parts = [f"<svg {attrs}>", f"<title>{escape(title)}</title>"]
    parts.append(
        f'<text x="{left}" y="18" class="chart-title">{escape(title)}</text>'
    )  # the title, top left
    if not xs:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="no-data">'
            "no data yet</text></svg>"
        )
        return "".join(parts)

    x_lo, x_hi = min(xs), max(xs)
    if steps:
        x_lo = min(x_lo, 0.0)
    y_lo, y_hi = min(ys), max(ys)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi == y_lo:
        pad = abs(y_lo) * 0.1 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    else:
        pad = (y_hi - y_lo) * 0.05
        y_lo, y_hi = y_lo - pad, y_hi + pad
    x_ticks, y_ticks = nice_ticks(x_lo, x_hi, 6, integer=steps), nice_ticks(y_lo, y_hi, 5)

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    # the plot area, the grid and the tick labels
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="plot-area"/>'
    )
    x_spread = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 0.0
    y_spread = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 0.0
    for t in x_ticks:
        x = px(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" class="grid"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
            f"{escape(format_number(t, x_spread))}</text>"
        )
    for t in y_ticks:
        y = py(t)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(format_number(t, y_spread))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="axis-label">'
        f"{escape(x_label)}</text>"
    )
    if y_label:
        parts.append(
            f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
            f'text-anchor="middle" class="axis-label">{escape(y_label)}</text>'
        )

    # the lines, then the legend (the series that have points)
    legend_x = left
    for s, pts in clean:
        if not pts:
            continue
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        name = escape(s.name)
        if len(pts) > 1:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
                f'stroke-width="1.8"{dash} class="line" data-series="{name}"/>'
            )
        if s.markers or len(pts) == 1:
            for x, y in pts:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.2" fill="{s.color}">'
                    f"<title>{name}: {escape(format_number(y, 1e-4))} at {x_label} "
                    f"{escape(format_number(x))}</title></circle>"
                )
        parts.append(
            f'<rect x="{legend_x}" y="28" width="14" height="4" fill="{s.color}"/>'
            f'<text x="{legend_x + 18}" y="34" class="legend">{name}</text>'
        )
        legend_x += 30 + 6.5 * len(s.name)
    parts.append("</svg>")
    return "".join(parts)
