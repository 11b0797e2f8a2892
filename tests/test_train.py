"""Training: exact resume after crashes, signals, non-finite steps, retention, fine-tuning."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import SHAKESPEARE, make_hf_model, run_cli, script_validation_losses
from gpt2kit import training as train_mod
from gpt2kit.training import BlockSampler, TrainConfig, lr_at, train

# A 2-layer, 32-wide model on ~2,300 tokens: ~17 steps per epoch, so steps 20-40 cross an epoch.
TINY = [
    "--init", "scratch", "--preset", "tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
    "--n-positions", "64", "--tokenizer", "bpe:300", "--block-size", "32", "--batch-size", "4",
    "--dropout", "0.1", "--samples", "0", "--eval-every", "20", "--save-every", "10",
    "--val-fraction", "0.1", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(SHAKESPEARE.read_text()[:3600])
    return path


def _weights(run_dir: Path, which: str = "final") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / which / "model.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _run_with_fault(fault: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run `gpt2kit train ARGS` in a process that SIGKILLs itself at the injected moment."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import gpt2kit.checkpoint as C, gpt2kit.training as T
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


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:101]))
    assert lrs[100] == lrs[119] == pytest.approx(0.1)


def test_block_order_is_a_pure_function_of_seed_and_epoch():
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = BlockSampler(tokens, 32, 4, seed=1), BlockSampler(tokens, 32, 4, seed=1)
    assert np.array_equal(a.blocks_in_epoch(3), b.blocks_in_epoch(3))
    assert not np.array_equal(a.blocks_in_epoch(0), a.blocks_in_epoch(1))
    assert not np.array_equal(
        a.blocks_in_epoch(0), BlockSampler(tokens, 32, 4, seed=2).blocks_in_epoch(0)
    )
    starts = a.blocks_in_epoch(0)
    assert len(set(starts.tolist())) == len(starts) and starts.max() + 33 <= len(tokens)
    x, y = a.next_batch()
    assert x.shape == y.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])


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
    _assert_same_weights(_weights(ref), _weights(crashed))
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
    fresh = train_mod.GPT2(model.config)
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
    _assert_same_weights(_weights(ref), _weights(crashed))


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
    while (
        time.time() < deadline and not (out / "checkpoints" / "step-000010" / "COMPLETE").exists()
    ):
        time.sleep(0.2)
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


def _api_config(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        sources=[str(corpus)],
        out=str(out),
        init="scratch",
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=64,
        tokenizer="bpe:300",
        block_size=32,
        batch_size=4,
        samples=0,
        eval_every=2,
        save_every=100,
        progress=False,
        val_fraction=0.1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_non_finite_loss_never_updates_the_weights(tmp_path, corpus, monkeypatch):
    ref = train(_api_config(corpus, tmp_path / "zero", max_steps=1, lr=1e-12, weight_decay=0.0))
    assert ref.stopped == "completed"
    original_forward = train_mod.GPT2.forward

    def nan_forward(self, idx, targets=None, **kw):
        out = original_forward(self, idx, targets, **kw)
        return out * float("nan") if targets is not None and self.training else out

    monkeypatch.setattr(train_mod.GPT2, "forward", nan_forward)
    run = tmp_path / "nan"
    summary = train(_api_config(corpus, run, max_steps=3))
    assert summary.steps == 3 and summary.stopped == "completed"
    # weights are the initial ones: same as a run whose only step had a negligible lr
    a, b = _weights(tmp_path / "zero"), _weights(run)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-9), k
    skipped = [
        m
        for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "skipped"
    ]
    assert [m["step"] for m in skipped] == [1, 2, 3] and skipped[0]["loss"] == "nan"
    stuck = train(_api_config(corpus, tmp_path / "stuck", max_steps=50))
    assert stuck.stopped == "non_finite" and stuck.steps == 5 and stuck.exit_code == 1


def test_early_stopping_and_retention_keep_the_best(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    )  # best at the 2nd evaluation (step 4)
    out = tmp_path / "run"
    summary = train(_api_config(corpus, out, max_steps=100, patience=3, keep_last=1, save_every=2))
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


def test_max_time_stops_cleanly_with_a_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    summary = train(_api_config(corpus, out, max_steps=100000, max_time=0.02, eval_every=1000))
    assert summary.stopped == "max_time" and 0 < summary.steps < 100000
    assert (out / "checkpoints" / f"step-{summary.steps:06d}" / "COMPLETE").is_file()
    assert summary.final_model and Path(summary.final_model, "model.safetensors").is_file()


def test_finetune_from_transformers_folder_lowers_val_loss(tmp_path, corpus):
    transformers = pytest.importorskip("transformers")
    make_hf_model(tmp_path / "base", n_positions=64)
    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            sources=[str(corpus)],
            out=str(out),
            init=str(tmp_path / "base"),
            lr=3e-3,
            max_steps=30,
            eval_every=15,
            block_size=32,
            batch_size=4,
            samples=1,
            sample_tokens=8,
            progress=False,
            val_fraction=0.1,
        )
    )
    from gpt2kit.data import load_prepared
    from gpt2kit.formats.hf import load_model

    data = load_prepared(out / "data")
    from gpt2kit.eval import evaluate_ids

    base, tokenizer, _ = load_model(tmp_path / "base")
    before = evaluate_ids(base, tokenizer, data.val, data.meta["val_chars"], 32, 32)["loss"]
    assert summary.best_val_loss < before - 0.5
    _, info = transformers.AutoModelForCausalLM.from_pretrained(
        out / "final", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    evals = [
        m
        for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if m["type"] == "eval"
    ]
    assert len(evals) == 2 and all(len(e["samples"]) == 1 for e in evals)
    assert {"val_loss", "val_ppl", "val_bpc", "tokens_seen"} <= evals[0].keys()


def test_config_yaml_resolves_file_then_flags(tmp_path, corpus):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: 0.002\nbatch-size: 2\nmax_steps: 4\n")
    out = tmp_path / "run"
    r = run_cli("train", str(corpus), "--out", str(out), "--config", str(cfg), *TINY)
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 0.002 and saved["batch_size"] == 4 and saved["max_steps"] == 4
    assert saved["resolved_total_steps"] == 4 and saved["sources"] == [str(corpus)]
    assert (out / "loss.png").is_file() and (out / "summary.json").is_file()
    # the run folder is a MODEL for generate
    g = run_cli("generate", str(out), "To be", "--max-new-tokens", "5", "--temperature", "0")
    assert g.returncode == 0 and g.stdout.startswith("To be")


def test_run_dir_protection_and_bad_options(tmp_path, corpus):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run_cli("train", str(corpus), "--out", str(out), "--resume", "never", *TINY)
    assert r.returncode == 2 and "--overwrite" in r.stderr and (out / "notes.txt").exists()
    r = run_cli(
        "train",
        str(corpus),
        "--out",
        str(out),
        "--batch-size",
        "0",
        "--lr",
        "-1",
        "--compile",
        "maybe",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert all(
        s in r.stderr
        for s in ("--batch-size must be at least 1", "--lr must be positive", "--compile must be")
    )


def test_gpu_out_of_memory_names_the_batch_size_to_try(tmp_path, corpus, monkeypatch):
    def oom(self, *a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod.GPT2, "forward", oom)
    from gpt2kit.errors import UserError

    with pytest.raises(UserError, match=r"--batch-size 2 --grad-accum 2 \(same tokens per step\)"):
        train(_api_config(corpus, tmp_path / "run", max_steps=5))


def test_scratch_model_context_follows_block_size(tmp_path, corpus):
    """A model only learns the positions it trains on, so its context is --block-size."""
    out = tmp_path / "run"
    cfg = _api_config(corpus, out, max_steps=1)
    cfg.n_positions = None
    train(cfg)
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["n_positions"] == 32 and config["n_ctx"] == 32


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


def test_list_flags_do_not_swallow_the_sources(tmp_path, corpus):
    val = tmp_path / "val.txt"
    val.write_text(SHAKESPEARE.read_text()[5000:6000])
    out = tmp_path / "run"
    r = run_cli(
        "train", "--val", str(val), str(corpus), "--out", str(out), "--max-steps", "1", *TINY
    )
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["sources"] == [str(corpus)] and saved["val"] == [str(val)]


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


def test_scratch_defaults_are_the_documented_recipe_and_max_time_alone_is_the_budget(
    tmp_path, corpus
):
    out = tmp_path / "run"
    r = run_cli(
        "train", str(corpus), "--init", "scratch", "--n-layer", "1", "--n-embd", "32",
        "--n-head", "2", "--max-time", "0.1", "--samples", "0", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["tokenizer"] == "auto" and saved["preset"] == "tiny"
    assert saved["batch_size"] == 16 and saved["dropout"] == 0.0
    assert saved["lr"] == pytest.approx(5e-3)  # 5e-3 x 128 / width, at most 5e-3
    summary = json.loads((out / "summary.json").read_text())
    steps_per_epoch = int(r.stdout.split(" steps per epoch")[0].rsplit(" ", 1)[1])
    # the time is the budget: many epochs, not one, and the schedule ends inside the budget
    assert summary["steps"] > 3 * steps_per_epoch
    assert summary["stopped"] in ("completed", "max_time") and summary["train_seconds"] < 9
    assert saved["resolved_total_steps"] >= summary["steps"]


def test_scratch_only_flags_are_refused_when_fine_tuning(tmp_path, corpus, hf_model_dir):
    for flag, value in (("--preset", "small"), ("--tokenizer", "bpe:500")):
        r = run_cli(
            "train", str(corpus), "--init", str(hf_model_dir), flag, value, "--max-steps", "1",
            "--out", str(tmp_path / "x"),
        )  # fmt: skip
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"{flag} only apply with --init scratch" in r.stderr
        assert not (tmp_path / "x").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, corpus):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    r = run_cli(
        "train", str(corpus), "--out", str(mine), "--resume", "never", "--overwrite",
        "--max-steps", "1", *TINY,
    )  # fmt: skip
    assert r.returncode == 2 and "not a gpt2kit run folder" in r.stderr
    assert (mine / "thesis.tex").read_text() == "years of work"
    run = tmp_path / "run"
    assert (
        run_cli("train", str(corpus), "--out", str(run), "--max-steps", "1", *TINY).returncode == 0
    )
    r = run_cli(
        "train", str(corpus), "--out", str(run), "--resume", "never", "--overwrite",
        "--max-steps", "2", *TINY,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_resume_from_an_earlier_checkpoint_keeps_the_best(tmp_path, corpus, monkeypatch):
    script_validation_losses(
        monkeypatch, [3.0, 1.0, 2.0, 2.5, 2.2, 1.5, 1.2, 1.1]
    )  # evals every 2 steps; best: step 4
    out = tmp_path / "run"
    train(_api_config(corpus, out, max_steps=8, save_every=2, keep_last=4))
    best_weights = _weights(out, "best")
    ckpts = out / "checkpoints"
    assert (ckpts / "step-000002").is_dir() and (ckpts / "step-000004").is_dir()
    summary = train(
        _api_config(corpus, out, max_steps=8, save_every=2, resume=str(ckpts / "step-000002"))
    )
    # the abandoned trajectory's best checkpoint is set aside, not deleted, and best/ stays the
    # best model: the resumed run's evaluations (2.2, 1.5, 1.2) never beat 1.0
    assert (ckpts / "abandoned" / "step-000004" / "COMPLETE").is_file()
    _assert_same_weights(best_weights, _weights(out, "best"))
    assert summary.best_val_loss == 1.0
    # resume auto continues the new trajectory, never the abandoned one
    assert train(_api_config(corpus, out, max_steps=10, save_every=2)).steps == 10


def test_a_run_too_large_for_memory_is_refused_before_it_starts(tmp_path):
    data = tmp_path / "data"
    text = tmp_path / "t.txt"
    text.write_text(SHAKESPEARE.read_text()[:300_000])
    assert (
        run_cli("prepare", str(text), "--out", str(data), "--tokenizer", "bpe:300").returncode == 0
    )
    t0 = time.time()
    r = run_cli(
        "train", str(data), "--init", "scratch", "--preset", "tiny", "--block-size", "100000",
        "--max-steps", "1", "--out", str(tmp_path / "x"), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "GiB" in r.stderr and "--block-size" in r.stderr and "Try" in r.stderr
    assert time.time() - t0 < 60
