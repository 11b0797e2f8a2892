"""The report pages from run folders in every state a run can be left in: interrupted (no
summary, a line cut short), stale summary, no evaluation, no metrics at all; every stop reason;
user text escaped; several runs compared on one page."""

from __future__ import annotations

import re

import pytest

from gpt2kit.report import load_run, render_run, write_compare_report, write_run_report
from gpt2kit.report.data import STOPS
from gpt2kit.runs import RunDir

from .conftest import eval_record, make_run, summary_of, train_record


def section(html: str, section_id: str) -> str:
    """The HTML of the page's `<section id=...>`; fails when there is none."""
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, f"no section {section_id!r}"
    return m.group(1)


def chart(html: str, chart_id: str) -> str:
    m = re.search(rf'<svg class="chart" data-chart="{chart_id}".*?</svg>', html, re.S)
    assert m, f"no chart {chart_id!r}"
    return m.group(0)


def test_an_interrupted_run_renders_what_it_has(tmp_path):
    records = [train_record(s, 5.0 - s / 4) for s in range(1, 6)]
    records.insert(3, eval_record(3, 4.5, ["a sample", "ROMEO: more"]))
    run = make_run(tmp_path / "run", records, tail='{"type": "train", "st')  # killed mid-line
    html = write_run_report(run).read_text()
    assert RunDir(run).report.is_file()
    assert 'data-stopped="interrupted"' in html and "no summary.json" in html
    # every curve drawn from the records that are there, the cut line left out
    for name in ("loss", "lr", "grad_norm", "tokens_per_s"):
        line = re.search(r'<polyline points="([^"]+)"', chart(html, name))
        assert line and len(line.group(1).split()) == 5, name
    assert "<circle" in chart(html, "bpc")  # the one evaluation, as a dot
    assert "4.5000" in section(html, "evaluations")
    assert "a sample" in section(html, "samples")
    assert "not written" in section(html, "models")


def test_a_summary_left_by_an_earlier_invocation_is_not_taken_as_the_end(tmp_path):
    folder = tmp_path / "run"
    run = make_run(folder, [train_record(s, 4.0) for s in range(1, 7)], summary_of(folder, 2))
    data = load_run(run)
    assert data.stopped == "interrupted" and data.summary is None
    assert any("earlier invocation" in n for n in data.notes)
    assert load_run(run, crashed=True).stopped == "error"  # the loop says it crashed


def test_a_run_without_evaluations_renders(tmp_path):
    folder = tmp_path / "run"
    run = make_run(folder, [train_record(1, 5.0), train_record(2, 4.8)], summary_of(folder, 2))
    html = write_run_report(run).read_text()
    assert "No evaluation yet" in section(html, "evaluations")
    assert "No samples" in section(html, "samples")
    assert "no data yet" in chart(html, "bpc") and "<polyline" in chart(html, "loss")
    assert 'data-stopped="completed"' in html


def test_a_run_with_only_its_config_and_checkpoints_renders(tmp_path):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    make_run(folder, [])
    (folder / "metrics.jsonl").unlink()
    html = render_run(load_run(folder))
    assert "metrics.jsonl is missing" in section(html, "notes")
    assert html.count("no data yet") == 5


@pytest.mark.parametrize("stopped", ["completed", "early_stopping", "max_time", "SIGINT", "SIGTERM", "non_finite"])  # fmt: skip
def test_the_page_says_how_the_run_stopped(tmp_path, stopped):
    folder = tmp_path / "run"
    records = [train_record(1, 5.0), eval_record(1, 4.9)]
    if stopped == "non_finite":
        records.append({"type": "skipped", "step": 2, "reason": "non-finite", "loss": "nan"})
    make_run(folder, records, summary_of(folder, 2 if stopped == "non_finite" else 1, stopped))
    overview = section(render_run(load_run(folder)), "overview")
    assert f'data-stopped="{stopped}"' in overview and STOPS[stopped] in overview
    if stopped == "non_finite":
        assert "1 skipped (no update): steps 2" in overview


def test_samples_options_and_names_are_shown_as_text_never_as_markup(tmp_path):
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    folder = tmp_path / "<b>run"
    config = {"sources": [evil], "init": "scratch", "text_column": '"><svg onload=alert(1)>'}
    make_run(folder, [eval_record(2, 4.0, [evil, "ROMEO: & <i>"])], config=config)
    html = write_run_report(folder).read_text()
    assert "<script" not in html.lower()  # the page has no script of its own: any is injected
    assert "<img" not in html and "<svg onload" not in html and "<b>run" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in section(html, "samples")
    assert '"prompt">ROMEO:</span> &amp; &lt;i&gt;</pre>' in section(html, "samples")
    assert "Run report: &lt;b&gt;run</h1>" in html
    assert "&lt;svg onload=alert(1)&gt;" in section(html, "config")


def test_the_page_needs_nothing_from_the_network(tmp_path):
    folder = tmp_path / "run"
    make_run(folder, [train_record(1, 5.0), eval_record(1, 4.0, ["x", "ROMEO: y"])])
    html = write_run_report(folder).read_text()
    assert not re.search(r"https?://|<link|<script|@import|url\(|\ssrc=", html)


def test_the_compare_page_overlays_the_runs_and_tables_their_figures(tmp_path):
    a = make_run(
        tmp_path / "a" / "run",
        [train_record(s, 5.0 - s / 10) for s in (1, 2, 3)] + [eval_record(3, 4.25)],
    )
    b = make_run(
        tmp_path / "b" / "run",
        [train_record(s, 6.0 - s / 10) for s in (1, 2)] + [eval_record(2, 5.75)],
        summary_of(tmp_path / "b" / "run", 2, "max_time"),
    )
    write_run_report(a)  # a has its own report: the compare page links to it
    out = write_compare_report([a, b], tmp_path / "cmp" / "compare.html")
    html = out.read_text()
    for name in ("train_loss", "lr", "tokens_per_s"):
        assert re.findall(r'data-series="([^"]+)"', chart(html, name)) == ["a/run", "b/run"]
    assert chart(html, "val_loss").count("<circle") == 2
    body = section(html, "figures").split("<tbody>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == 2
    assert "4.2500" in rows[0] and 'data-stopped="interrupted"' in rows[0]
    assert "5.7500" in rows[1] and 'data-stopped="max_time"' in rows[1]
    assert 'href="../a/run/report.html"' in rows[0] and "href" not in rows[1]
