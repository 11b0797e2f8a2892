"""Validation during training is `gpt2kit eval`'s scorer: the same figures."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_TRAIN as TINY
from conftest import run_cli


def test_training_validation_equals_gpt2kit_eval_of_the_run(tmp_path, corpus):
    """One scorer: the figures in summary.json are what `gpt2kit eval RUN_DIR DATA_DIR` says
    with the same windows (disjoint, of the block size), for the best and the final model."""
    out = tmp_path / "run"
    r = run_cli("train", str(corpus), "--out", str(out), "--max-steps", "12", *TINY)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    last = summary["last_eval"]
    assert last["val_stride"] == 32
    for model, loss, bpc in [
        (out, summary["best_val_loss"], summary["best_val_bpc"]),
        (out / "final", last["val_loss"], last["val_bpc"]),
    ]:
        e = run_cli(
            "eval", str(model), str(out / "data"), "--block-size", "32", "--stride", "32", "--json"
        )
        assert e.returncode == 0, e.stderr
        scores = json.loads(e.stdout)
        assert scores["loss"] == pytest.approx(loss, rel=1e-5)
        assert scores["bits_per_char"] == pytest.approx(bpc, rel=1e-5)
        assert scores["tokens"] == last["val_tokens"]
