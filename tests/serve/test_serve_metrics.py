"""The Prometheus text the server's /metrics answers: cumulative histogram buckets, sums,
counts, and gauges read when rendered."""

from __future__ import annotations

from gpt2kit.serve.metrics import Histogram, Metrics


def test_a_histogram_renders_cumulative_buckets_sum_and_count():
    h = Histogram("t_seconds", "A time.", buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 3.0):
        h.observe(value)
    assert h.render() == [
        "# HELP t_seconds A time.",
        "# TYPE t_seconds histogram",
        't_seconds_bucket{le="0.1"} 1',
        't_seconds_bucket{le="1"} 3',
        't_seconds_bucket{le="+Inf"} 4',
        "t_seconds_sum 4.25",
        "t_seconds_count 4",
    ]


def test_gauges_read_the_scheduler_when_rendered():
    state = {"running": 3, "waiting": 0}
    m = Metrics(lambda: state["running"], lambda: state["waiting"])
    m.generated_tokens.inc(5)
    state["waiting"] = 7
    text = m.render()
    assert "gpt2kit_requests_running 3\n" in text
    assert "gpt2kit_requests_waiting 7\n" in text
    assert "gpt2kit_generated_tokens_total 5\n" in text
    assert text.count("# TYPE") == 8
