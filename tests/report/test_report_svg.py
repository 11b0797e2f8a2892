"""Line charts as SVG: round ticks, labels that fit their spacing, non-finite points left out,
long series thinned without losing a spike, and charts with nothing or one point to draw."""

from __future__ import annotations

import math
import re

from gpt2kit.report.svg import Series, format_number, line_chart, nice_ticks, thin


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3.1, 4.9, 4) == [3.5, 4.0, 4.5]
    assert nice_ticks(0, 5, 6, integer=True) == [0, 1, 2, 3, 4, 5]
    assert nice_ticks(0, 3, 6, integer=True) == [0, 1, 2, 3]  # never half a step
    assert nice_ticks(0, 12_000, 6) == [0, 2000, 4000, 6000, 8000, 10000, 12000]
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_labels_show_the_digits_their_spacing_needs():
    assert format_number(12000, 2000) == "12,000"
    assert format_number(4.25, 0.05) == "4.25"
    assert format_number(0.0005, 0.0001) == "0.0005"
    assert format_number(0) == "0"


def test_a_chart_draws_each_series_with_its_legend_and_axes():
    svg = line_chart(
        [
            Series("train", [(1, 5.0), (2, 4.0), (3, float("nan")), (4, 3.0)]),
            Series("val", [(2, 4.5), (4, 3.5)], color="#d55e00", markers=True),
        ],
        title="Loss",
        y_label="nats",
        chart_id="loss",
    )
    assert svg.startswith('<svg class="chart" data-chart="loss"') and svg.endswith("</svg>")
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert [len(p.split()) for p in lines] == [3, 2]  # the NaN point left out
    assert svg.count("<circle") == 2  # markers for the evaluations only
    assert ">train</text>" in svg and ">val</text>" in svg and ">nats</text>" in svg
    for x in ("0", "1", "2", "3", "4"):
        assert f">{x}</text>" in svg  # the step axis starts at 0, whole steps
    ys = [float(y) for p in lines for y in re.findall(r",([\d.]+)", p)]
    assert all(48 <= y <= 300 - 44 for y in ys)  # inside the plot area


def test_charts_with_one_point_or_none_still_render():
    one = line_chart([Series("lr", [(5, 1e-3)])], title="lr")
    assert "<circle" in one and "<polyline" not in one
    none = line_chart([Series("lr", []), Series("x", [(1, math.inf)])], title="lr")
    assert "no data yet" in none and "<circle" not in none


def test_a_long_series_is_thinned_and_keeps_its_spike():
    points = [(float(i), 1.0) for i in range(100_000)]
    points[54_321] = (54_321.0, 50.0)
    thinned = thin(points)
    assert len(thinned) <= 2000 and (54_321.0, 50.0) in thinned
    assert thinned[0][0] == 0 and thinned[-1][0] >= 99_900
