"""Checkpoints: retention keeps the newest and the best, best/ is the best step's model,
--resume PATH sets the abandoned trajectory's best aside, a full disk exits 2 with the fix."""

from __future__ import annotations

import json

from conftest import (
    TINY_TRAIN,
    assert_same_weights,
    same_weights,
    script_validation_losses,
    tiny_train_config,
    weights,
)
from gpt2kit.training import train

TINY = [*TINY_TRAIN, "--max-steps", "100000"]


def test_early_stopping_and_retention_keep_the_best(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    )  # best at the 2nd evaluation (step 4)
    out = tmp_path / "run"
    summary = train(
        tiny_train_config(corpus, out, max_steps=100, patience=3, keep_last=1, save_every=2)
    )
    assert summary.stopped == "early_stopping" and summary.steps == 10
    assert summary.best_val_loss == 2.0
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-000004", "step-000010"]  # the best and the newest
    best_state = json.loads(
        (out / "checkpoints" / "step-000004" / "trainer_state.json").read_text()
    )
    assert best_state["best_step"] == 4
    assert (out / "best" / "model.safetensors").is_file() and (
        out / "final" / "model.safetensors"
    ).is_file()


def test_resume_from_an_earlier_checkpoint_keeps_the_best(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 1.0, 2.0, 2.5, 2.2, 1.5, 1.2, 1.1]
    )  # evals every 2 steps; best: step 4
    out = tmp_path / "run"
    train(tiny_train_config(corpus, out, max_steps=8, save_every=2, keep_last=4))
    best_weights = weights(out / "best")
    ckpts = out / "checkpoints"
    assert (ckpts / "step-000002").is_dir() and (ckpts / "step-000004").is_dir()
    summary = train(
        tiny_train_config(corpus, out, max_steps=8, save_every=2, resume=str(ckpts / "step-000002"))
    )
    # the abandoned trajectory's best checkpoint is set aside, not deleted, and best/ stays the
    # best model: the resumed run's evaluations (2.2, 1.5, 1.2) never beat 1.0
    assert (ckpts / "abandoned" / "step-000004" / "COMPLETE").is_file()
    assert_same_weights(best_weights, weights(out / "best"))
    assert summary.best_val_loss == 1.0
    # resume auto continues the new trajectory, never the abandoned one
    assert train(tiny_train_config(corpus, out, max_steps=10, save_every=2)).steps == 10


def test_best_holds_the_best_steps_weights_not_the_last(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    )  # best at the 2nd evaluation: step 4 of 10
    out = tmp_path / "run"
    summary = train(
        tiny_train_config(corpus, out, max_steps=100, patience=3, save_every=2, keep_last=10)
    )
    assert summary.stopped == "early_stopping" and summary.steps == 10
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == [f"step-{s:06d}" for s in (2, 4, 6, 8, 10)]
    best = weights(out / "best")
    # best/ is step 4's model and no other step's (each step changed the weights)
    assert [c.name for c in checkpoints if same_weights(best, weights(c))] == ["step-000004"]
    assert same_weights(weights(out / "final"), weights(checkpoints[-1]))


def test_a_full_disk_while_checkpointing_exits_2_naming_the_fix(
    tmp_path, corpus, monkeypatch, capsys
):
    """PyTorch reports a failed write as a RuntimeError; on a full disk it is the user's to fix."""
    import shutil
    from collections import namedtuple

    from gpt2kit.cli import main
    from gpt2kit.training import checkpoint

    def full(*a, **k):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed"
        )

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    out = tmp_path / "run"
    status = main(["train", str(corpus), "--out", str(out), *TINY])  # fails at step 10
    err = capsys.readouterr().err
    assert status == 2, err
    assert "No space left on device" in err and "The disk is full" in err and "--out" in err


def test_the_resume_state_reads_and_writes_trainer_state_json_as_before():
    """`trainer_state.json` keeps its keys and order; one from before `tokenizer_spec` and
    `total_steps` were saved still reads (those two unknown)."""
    from gpt2kit.training.checkpoint import TrainState

    old = {
        "step": 20, "epoch": 1, "cursor": 3, "tokens_seen": 2560, "best_val_loss": 4.5,
        "best_val_bpc": 4.8, "best_step": 20, "bad_evals": 0, "train_seconds": 7.5,
    }  # fmt: skip
    state = TrainState.from_json(old)
    assert state.step == 20 and state.cursor == 3 and state.total_steps is None
    saved = {**old, "tokenizer_spec": "bpe:300", "total_steps": 40}
    assert TrainState.from_json(saved).to_json() == saved
    assert list(TrainState.from_json(saved).to_json()) == list(saved)
