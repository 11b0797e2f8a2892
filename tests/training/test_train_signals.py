"""Signals: SIGTERM and Ctrl-C (once: a complete checkpoint and a summary, exit 143/130;
twice: exit at once)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, run_cli

TINY = TINY_TRAIN
TINY_LONG = [*TINY_TRAIN, "--max-steps", "100000"]  # until stopped


def test_sigterm_saves_a_complete_checkpoint_and_exits_143(tmp_path, corpus):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gpt2kit",
        "train",
        str(corpus),
        "--out",
        str(out),
        "--max-steps",
        "100000",
        *TINY,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # Any complete checkpoint will do: on a fast machine step 10's is pruned within milliseconds.
    while time.time() < deadline and not any((out / "checkpoints").glob("step-*/COMPLETE")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "SIGTERM"
    step = summary["steps"]
    assert (out / "checkpoints" / f"step-{step:06d}" / "COMPLETE").is_file()
    r = run_cli("train", str(corpus), "--out", str(out), "--max-steps", str(step + 3), *TINY)
    assert r.returncode == 0, r.stderr
    assert (
        f"(step {step})" in r.stdout
        and json.loads((out / "summary.json").read_text())["steps"] == step + 3
    )


CHECKPOINT_FILES = {
    "COMPLETE", "config.json", "model.safetensors", "optimizer.pt", "rng_scaler.pt",
    "trainer_state.json", "tokenizer.json",
}  # fmt: skip


def _start(out: Path, corpus: Path, slow_flag: Path | None = None) -> subprocess.Popen:
    """`gpt2kit train` in a subprocess; while `slow_flag` exists, each checkpoint save first
    touches `slow_flag.saving` and sleeps two minutes."""
    script = textwrap.dedent(f"""
        import pathlib, sys, time
        import gpt2kit.training.checkpoint as C
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
    args = ["train", str(corpus), "--out", str(out), *TINY_LONG]
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `path` exists (a glob pattern when it has a `*`), failing if `proc` ends or
    `seconds` pass first."""
    deadline = time.time() + seconds
    exists = (lambda: any(Path("/").glob(str(path)[1:]))) if "*" in str(path) else path.exists
    while not exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"{path} never appeared (exit {proc.returncode}): {stderr}")
        time.sleep(0.05)


def _any_checkpoint(out: Path) -> Path:
    # Any complete checkpoint will do: on a fast machine step 10's is pruned within milliseconds.
    return out / "checkpoints" / "step-*" / "COMPLETE"


def test_sigint_exits_130_after_a_complete_checkpoint_and_summary(tmp_path, corpus):
    out = tmp_path / "run"
    proc = _start(out, corpus)
    _wait_for(_any_checkpoint(out), proc)
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
    _wait_for(_any_checkpoint(out), proc)
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
