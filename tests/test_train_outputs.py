"""What a training run leaves behind: `best/` holds the best step's weights, a `--max-time` stop
leaves `final/` equal to the last checkpoint, and Ctrl-C (once: a checkpoint and a summary;
twice: at once) exits with status 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SHAKESPEARE, script_validation_losses
from gpt2kit.training import TrainConfig, train

# tests/test_train.py's tiny settings: a 2-layer, 32-wide model on ~2,300 tokens.
TINY = [
    "--init", "scratch", "--preset", "tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
    "--n-positions", "64", "--tokenizer", "bpe:300", "--block-size", "32", "--batch-size", "4",
    "--dropout", "0.1", "--samples", "0", "--eval-every", "20", "--save-every", "10",
    "--val-fraction", "0.1", "--no-progress", "--max-steps", "100000",
]  # fmt: skip
CHECKPOINT_FILES = {
    "COMPLETE", "config.json", "model.safetensors", "optimizer.pt", "rng_scaler.pt",
    "trainer_state.json", "tokenizer.json",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(SHAKESPEARE.read_text()[:3600])
    return path


def _config(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        sources=[str(corpus)], out=str(out), init="scratch", n_layer=2, n_head=2, n_embd=32,
        n_positions=64, tokenizer="bpe:300", block_size=32, batch_size=4, samples=0,
        eval_every=2, save_every=100, progress=False, val_fraction=0.1,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_holds_the_best_steps_weights_not_the_last(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    )  # best at the 2nd evaluation: step 4 of 10
    out = tmp_path / "run"
    summary = train(_config(corpus, out, max_steps=100, patience=3, save_every=2, keep_last=10))
    assert summary.stopped == "early_stopping" and summary.steps == 10
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == [f"step-{s:06d}" for s in (2, 4, 6, 8, 10)]
    best = _weights(out / "best")
    # best/ is step 4's model and no other step's (each step changed the weights)
    assert [c.name for c in checkpoints if _same(best, _weights(c))] == ["step-000004"]
    assert _same(_weights(out / "final"), _weights(checkpoints[-1]))


def test_a_max_time_stop_leaves_final_equal_to_the_last_checkpoint(tmp_path, corpus, monkeypatch):
    # Only the first evaluation is a new best, so the stop's checkpoint is the --max-time one.
    script_validation_losses(monkeypatch, (3.0 + n / 100 for n in range(10**6)))
    out = tmp_path / "run"
    summary = train(_config(corpus, out, max_steps=100000, max_time=0.04, save_every=1000))
    assert summary.stopped == "max_time" and 2 < summary.steps < 1000
    last = max((out / "checkpoints").iterdir())
    assert last.name == f"step-{summary.steps:06d}" and (last / "COMPLETE").is_file()
    assert _same(_weights(out / "final"), _weights(last))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] == summary.steps


def _start(out: Path, corpus: Path, slow_flag: Path | None = None) -> subprocess.Popen:
    """`gpt2kit train` in a subprocess; while `slow_flag` exists, each checkpoint save first
    touches `slow_flag.saving` and sleeps two minutes."""
    script = textwrap.dedent(f"""
        import pathlib, sys, time
        import gpt2kit.checkpoint as C
        from gpt2kit.cli import main
        flag = {str(slow_flag) if slow_flag else None!r}
        save = C.save_checkpoint
        def slow_save(*args, **kwargs):
            if flag and pathlib.Path(flag).exists():
                pathlib.Path(flag + ".saving").touch()
                time.sleep(120)
            return save(*args, **kwargs)
        C.save_checkpoint = slow_save
        sys.exit(main(sys.argv[1:]))
    """)
    args = ["train", str(corpus), "--out", str(out), *TINY]
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"{path} never appeared (exit {proc.returncode}): {stderr}")
        time.sleep(0.1)


def test_sigint_exits_130_after_a_complete_checkpoint_and_summary(tmp_path, corpus):
    out = tmp_path / "run"
    proc = _start(out, corpus)
    _wait_for(out / "checkpoints" / "step-000010" / "COMPLETE", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "SIGINT" and summary["exit_code"] == 130
    step = summary["steps"]
    assert step >= 10
    last = out / "checkpoints" / f"step-{step:06d}"
    assert {p.name for p in last.iterdir()} >= CHECKPOINT_FILES
    assert json.loads((last / "trainer_state.json").read_text())["step"] == step


def test_a_second_sigint_while_the_first_is_handled_exits_at_once(tmp_path, corpus):
    out, slow = tmp_path / "run", tmp_path / "slow"
    proc = _start(out, corpus, slow_flag=slow)
    _wait_for(out / "checkpoints" / "step-000010" / "COMPLETE", proc)
    slow.touch()  # from now on, saving a checkpoint takes two minutes
    proc.send_signal(signal.SIGINT)
    _wait_for(Path(f"{slow}.saving"), proc)  # the first SIGINT's checkpoint is being written
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the second Ctrl-C did not exit: it waited for the checkpoint")
    assert proc.returncode == 130, stderr
    assert time.time() - t0 < 30
    assert "Traceback" not in stderr


def test_a_full_disk_while_checkpointing_exits_2_naming_the_fix(
    tmp_path, corpus, monkeypatch, capsys
):
    """PyTorch reports a failed write as a RuntimeError; on a full disk it is the user's to fix."""
    import shutil
    from collections import namedtuple

    from gpt2kit import checkpoint
    from gpt2kit.cli import main

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
