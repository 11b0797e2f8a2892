"""The step loop: non-finite steps never update the weights, --max-time stops cleanly with a
checkpoint (and final/ equal to it), a GPU out of memory names the flags to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import same_weights, script_validation_losses, tiny_train_config, weights
from gpt2kit.model import GPT2
from gpt2kit.training import train


def test_non_finite_loss_never_updates_the_weights(tmp_path, corpus, monkeypatch):
    ref = train(
        tiny_train_config(corpus, tmp_path / "zero", max_steps=1, lr=1e-12, weight_decay=0.0)
    )
    assert ref.stopped == "completed"
    original_forward = GPT2.forward

    def nan_forward(self, idx, targets=None, **kw):
        out = original_forward(self, idx, targets, **kw)
        return out * float("nan") if targets is not None and self.training else out

    monkeypatch.setattr(GPT2, "forward", nan_forward)
    run = tmp_path / "nan"
    summary = train(tiny_train_config(corpus, run, max_steps=3))
    assert summary.steps == 3 and summary.stopped == "completed"
    # weights are the initial ones: same as a run whose only step had a negligible lr
    a, b = weights(tmp_path / "zero" / "final"), weights(run / "final")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-9), k
    skipped = [
        m
        for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "skipped"
    ]
    assert [m["step"] for m in skipped] == [1, 2, 3] and skipped[0]["loss"] == "nan"
    stuck = train(tiny_train_config(corpus, tmp_path / "stuck", max_steps=50))
    assert stuck.stopped == "non_finite" and stuck.steps == 5 and stuck.exit_code == 1


def test_max_time_stops_cleanly_with_a_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    summary = train(
        tiny_train_config(corpus, out, max_steps=100000, max_time=0.02, eval_every=1000)
    )
    assert summary.stopped == "max_time" and 0 < summary.steps < 100000
    assert (out / "checkpoints" / f"step-{summary.steps:06d}" / "COMPLETE").is_file()
    assert summary.final_model and Path(summary.final_model, "model.safetensors").is_file()


def test_gpu_out_of_memory_names_the_batch_size_to_try(tmp_path, corpus, monkeypatch):
    def oom(self, *a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GPT2, "forward", oom)
    from gpt2kit.errors import UserError

    with pytest.raises(UserError, match=r"--batch-size 2 --grad-accum 2 \(same tokens per step\)"):
        train(tiny_train_config(corpus, tmp_path / "run", max_steps=5))


def test_a_max_time_stop_leaves_final_equal_to_the_last_checkpoint(tmp_path, corpus, monkeypatch):
    # Only the first evaluation is a new best, so the stop's checkpoint is the --max-time one.
    script_validation_losses(monkeypatch, (3.0 + n / 100 for n in range(10**6)))
    out = tmp_path / "run"
    summary = train(
        tiny_train_config(corpus, out, max_steps=100000, max_time=0.04, save_every=1000)
    )
    assert summary.stopped == "max_time" and 2 < summary.steps < 1000
    last = max((out / "checkpoints").iterdir())
    assert last.name == f"step-{summary.steps:06d}" and (last / "COMPLETE").is_file()
    assert same_weights(weights(out / "final"), weights(last))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == summary.steps
