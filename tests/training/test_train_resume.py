"""Exact resume: a run killed (SIGKILL) mid-training, mid-checkpoint or right after an
evaluation, then resumed, ends with the same weights, bit for bit, as one never stopped; the
resumed run reuses the prepared data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_TRAIN as TINY
from conftest import assert_same_weights, run_cli, weights
from gpt2kit.model import GPT2


def _run_with_fault(fault: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run `gpt2kit train ARGS` in a process that SIGKILLs itself at the injected moment."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import gpt2kit.training.checkpoint as C, gpt2kit.training.loop as T
        from gpt2kit.cli import main
        fault = {fault!r}
        if fault.startswith("step:"):
            at = int(fault[5:]); orig = T.lr_at
            def lr_at(step, *a):
                if step == at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return orig(step, *a)
            T.lr_at = lr_at
        else:  # "marker:N": die after the checkpoint folder is in place, before its marker
            at = int(fault[7:]); orig = C._write_marker
            def write_marker(folder):
                if folder.name == f"step-{{at:06d}}":
                    os.kill(os.getpid(), signal.SIGKILL)
                orig(folder)
            C._write_marker = write_marker
        sys.exit(main(sys.argv[1:]))
    """)
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "fault", ["step:23", "marker:30"], ids=["sigkill-mid-training", "sigkill-while-checkpointing"]
)
def test_resume_after_sigkill_gives_bit_identical_weights(tmp_path, corpus, fault):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    r = run_cli("train", str(corpus), "--out", str(ref), "--max-steps", "40", *TINY)
    assert r.returncode == 0, r.stderr
    r = _run_with_fault(
        fault, ["train", str(corpus), "--out", str(crashed), "--max-steps", "40", *TINY]
    )
    assert r.returncode == -signal.SIGKILL
    assert not (crashed / "final").exists()
    if fault.startswith("marker"):  # the half-finished checkpoint exists but is not complete
        assert (crashed / "checkpoints" / "step-000030").is_dir()
        assert not (crashed / "checkpoints" / "step-000030" / "COMPLETE").exists()
    r = run_cli("train", str(corpus), "--out", str(crashed), "--max-steps", "40", *TINY)
    assert r.returncode == 0, r.stderr
    assert "Resuming from" in r.stdout and "step-000020" in r.stdout
    assert_same_weights(weights(ref / "final"), weights(crashed / "final"))
    # the resumed part (steps 21-40) crossed an epoch boundary
    train_logs = {
        m["step"]: m
        for m in map(json.loads, (crashed / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "train"
    }
    assert int(train_logs[20]["epoch"]) < int(train_logs[40]["epoch"])
    steps = [
        m["step"]
        for m in map(json.loads, (crashed / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "train"
    ]
    assert steps == sorted(set(steps)), "metrics of redone steps are not duplicated"


# GPT-2's 50,257-token vocabulary, the `tiny` preset's width, and clipping on every step.
GPT2_VOCAB = [
    "--init", "scratch", "--preset", "tiny", "--tokenizer", "gpt2", "--block-size", "64",
    "--batch-size", "4", "--grad-clip", "0.05", "--lr", "3e-3", "--dropout", "0.1",
    "--samples", "1", "--sample-tokens", "4", "--eval-every", "10", "--save-every", "5",
    "--log-every", "1", "--val-fraction", "0.1", "--no-progress",
]  # fmt: skip


def test_loaded_parameters_have_a_fresh_models_layout(tmp_path, hf_model_dir):
    """A parameter read from a file must be laid out as a new model's is (contiguous, same
    strides, 64-byte aligned): CPU matmul results depend on both, so resume would drift."""
    from gpt2kit.formats.hf import load_model

    model, _, _ = load_model(hf_model_dir)
    fresh = GPT2(model.config)
    fresh_params = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        assert p.is_contiguous(), name
        assert p.stride() == fresh_params[name].stride(), name
        assert p.data_ptr() % 64 == 0, f"{name} is not 64-byte aligned"


def test_resume_is_exact_with_gpt2_vocabulary_clipping_and_a_kill_after_evaluation(
    tmp_path, corpus
):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    args = ["train", str(corpus), "--max-steps", "25", *GPT2_VOCAB]
    r = run_cli(*args, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    # killed as step 13 starts: right after the evaluation and checkpoint of step 10
    r = _run_with_fault("step:12", [*args, "--out", str(crashed)])
    assert r.returncode == -signal.SIGKILL
    r = run_cli(*args, "--out", str(crashed))
    assert r.returncode == 0, r.stderr
    assert "step-000010" in r.stdout
    clipped = [
        m
        for m in map(json.loads, (ref / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "train" and m["step"] > 10
    ]
    assert all(m["grad_norm"] > 0.05 for m in clipped)  # clipping was active after the resume
    assert_same_weights(weights(ref / "final"), weights(crashed / "final"))


def test_resume_reuses_the_prepared_data_and_max_time_counts_per_run(tmp_path, corpus):
    out = tmp_path / "run"
    first = run_cli(
        "train",
        str(corpus),
        "--out",
        str(out),
        "--max-steps",
        "100000",
        "--max-time",
        "0.05",
        *TINY,
    )
    assert first.returncode == 0, first.stderr
    stopped_at = json.loads((out / "summary.json").read_text())["steps"]
    again = run_cli(
        "train",
        str(corpus),
        "--out",
        str(out),
        "--max-steps",
        "100000",
        "--max-time",
        "0.05",
        *TINY,
    )
    assert again.returncode == 0, again.stderr
    assert "is up to date" in again.stdout  # the bpe:300 data was not tokenized again
    resumed_steps = json.loads((out / "summary.json").read_text())["steps"] - stopped_at
    assert resumed_steps > 5  # a whole time budget again, not one step
