"""The starting model of a fresh fine-tuning run is evaluated before the first step (for the
report's base vs tuned): once, as step 0, never the best model, never counted by early
stopping, not again on resume, and replaced (not repeated) by a fresh start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_hf_model, script_validation_losses, tiny_train_config
from gpt2kit.training import train

FINE_TUNE = dict(n_layer=None, n_head=None, n_embd=None, n_positions=None, tokenizer=None)


def evals(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "eval"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "model"
    make_hf_model(folder, n_positions=64)
    return folder


def test_the_starting_model_is_neither_the_best_nor_a_lost_patience(
    tmp_path, corpus, base_model, monkeypatch
):
    # The starting model scores far better than any trained step: were it a candidate, best/
    # would hold it and patience 1 would stop the run at its first evaluation.
    script_validation_losses(monkeypatch, [1.0, 3.0, 2.9, 2.8])
    out = tmp_path / "run"
    summary = train(
        tiny_train_config(
            corpus, out, init=str(base_model), max_steps=3, eval_every=1, patience=1, **FINE_TUNE
        )
    )
    assert summary.stopped == "completed" and summary.steps == 3
    assert summary.best_val_loss == 2.8 and (out / "best").is_dir()
    records = evals(out)
    assert [(r["step"], r.get("base", False)) for r in records] == [
        (0, True), (1, False), (2, False), (3, False)
    ]  # fmt: skip
    assert records[0]["val_loss"] == 1.0 and records[0]["tokens_seen"] == 0
    assert [e["step"] for e in summary.evals] == [1, 2, 3]  # the summary: trained weights only


def test_the_starting_model_is_evaluated_once_per_fresh_start(
    tmp_path, corpus, base_model, monkeypatch
):
    script_validation_losses(monkeypatch, (4.0 - n / 100 for n in range(100)))
    out = tmp_path / "run"
    config = tiny_train_config(corpus, out, init=str(base_model), max_steps=2, **FINE_TUNE)
    train(config)
    config.max_steps = 4  # resume: the step-2 checkpoint goes on, with no second base
    train(config)
    assert [(r["step"], r.get("base", False)) for r in evals(out)] == [
        (0, True), (2, False), (4, False)
    ]  # fmt: skip
    config.resume, config.overwrite, config.max_steps = "never", True, 2  # a fresh start
    train(config)
    assert [(r["step"], r.get("base", False)) for r in evals(out)] == [(0, True), (2, False)]


def test_a_scratch_run_has_no_starting_model_to_evaluate(tmp_path, corpus):
    train(tiny_train_config(corpus, tmp_path / "run", max_steps=2))
    assert [r["step"] for r in evals(tmp_path / "run")] == [2]
