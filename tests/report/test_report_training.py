"""The report a real training run writes at its end: it opens in headless chromium with its
curves and samples drawn; a fine-tuning run's report sets the starting model beside the tuned
one (a scratch run's has no such section); a report that fails to render never fails the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_hf_model, tiny_train_config
from gpt2kit.report.svg import PALETTE
from gpt2kit.training import train

SAMPLES = dict(samples=2, sample_tokens=8, log_every=1)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def scratch_run(corpus, tmp_path_factory) -> Path:
    """A tiny model trained from scratch for 6 steps, evaluated (with 2 samples) every 3."""
    out = tmp_path_factory.mktemp("scratch") / "run"
    train(tiny_train_config(corpus, out, max_steps=6, eval_every=3, **SAMPLES))
    return out


@pytest.fixture(scope="module")
def tuned_run(corpus, tmp_path_factory) -> Path:
    """A tiny local GPT-2 (transformers-saved) fine-tuned for 4 steps, evaluated every 2."""
    folder = tmp_path_factory.mktemp("tuned")
    make_hf_model(folder / "base", n_positions=64)
    sizes = dict(n_layer=None, n_head=None, n_embd=None, n_positions=None, tokenizer=None)
    config = tiny_train_config(
        corpus, folder / "run", init=str(folder / "base"), lr=3e-3, max_steps=4, eval_every=2,
        **sizes, **SAMPLES,
    )  # fmt: skip
    train(config)
    return folder / "run"


def test_a_training_run_writes_a_report_that_chromium_shows(scratch_run, open_page, tmp_path):
    from PIL import Image

    report = scratch_run / "report.html"
    assert report.is_file()
    page = open_page(report)
    assert "completed" in page.inner_text("#overview")

    # the five curves are drawn, the loss with a line through the six logged steps
    charts = page.locator("#curves svg.chart")
    assert charts.count() == 5
    for i in range(5):
        box = charts.nth(i).bounding_box()
        assert charts.nth(i).is_visible() and box["width"] > 300 and box["height"] > 150
    train_line = page.locator('svg[data-chart="loss"] polyline[data-series="train loss"]')
    assert len(train_line.get_attribute("points").split()) == 6
    assert page.locator('svg[data-chart="loss"] circle').count() == 2  # the evaluations

    # each evaluation's samples side by side, exactly as training wrote them
    evals = [r for r in metrics(scratch_run) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    grid = page.locator("#samples-grid")
    assert grid.is_visible()
    shown = grid.locator("td pre").all_text_contents()
    # a row per prompt, a column per evaluation
    assert shown == [evals[j]["samples"][i] for i in (0, 1) for j in (0, 1)]
    assert page.locator("#base-vs-tuned").count() == 0  # trained from scratch: no base

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    image = Image.open(shot).convert("RGB")
    box = page.locator('svg[data-chart="loss"]').bounding_box()
    crop = image.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
    blue = np.array([int(PALETTE[0][i : i + 2], 16) for i in (1, 3, 5)])
    drawn = int((np.abs(np.asarray(crop, dtype=int) - blue).sum(axis=-1) < 60).sum())
    assert drawn > 100  # the train loss line is on the screen, not only in the markup


def test_a_fine_tuning_report_sets_the_starting_model_beside_the_tuned_one(tuned_run, open_page):
    records = [r for r in metrics(tuned_run) if r["type"] == "eval"]
    base, *evals = records
    assert base["step"] == 0 and base["base"] is True and [r["step"] for r in evals] == [2, 4]
    assert not any(r.get("base") for r in evals)
    for r in evals:  # the same prompts and seed as the starting model's samples
        assert r["sample_prompts"] == base["sample_prompts"]
        assert r["sample_seed"] == base["sample_seed"]
    summary = json.loads((tuned_run / "summary.json").read_text())
    assert [e["step"] for e in summary["evals"]] == [2, 4]
    assert summary["best_val_loss"] == min(r["val_loss"] for r in evals)

    page = open_page(tuned_run / "report.html")
    section = page.locator("#base-vs-tuned")
    assert section.is_visible()
    cells = section.locator("table.base-vs-tuned tbody tr").first.locator("td").all_inner_texts()
    assert cells[:3] == [
        "validation loss",
        f"{base['val_loss']:,.4f}",
        f"{evals[-1]['val_loss']:,.4f}",
    ]
    side_by_side = page.locator("#base-vs-tuned-samples td pre").all_text_contents()
    assert side_by_side[:2] == [base["samples"][0], evals[-1]["samples"][0]]
    assert "0 (starting model)" in page.inner_text("#evaluations")


def test_a_report_that_fails_to_render_is_a_warning_not_a_failed_run(
    tmp_path, corpus, monkeypatch, capsys
):
    import gpt2kit.report

    def broken(*args, **kwargs):
        raise RuntimeError("no report today")

    monkeypatch.setattr(gpt2kit.report, "write_run_report", broken)
    summary = train(tiny_train_config(corpus, tmp_path / "run", max_steps=2))
    assert summary.stopped == "completed" and summary.exit_code == 0
    assert (tmp_path / "run" / "final").is_dir() and not (tmp_path / "run" / "report.html").exists()
    assert "Warning: could not write" in capsys.readouterr().err
