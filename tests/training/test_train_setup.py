"""Setup: fine-tuning a transformers folder, a new model's context, --overwrite only on a run
folder, and a run too large for memory refused before it starts."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from conftest import SHAKESPEARE, make_hf_model, run_cli, tiny_train_config
from conftest import TINY_TRAIN as TINY
from gpt2kit.training import TrainConfig, train


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
    base, *evals = evals  # the starting model's, before the first step: the same figure
    assert base["base"] and base["step"] == 0
    assert base["val_loss"] == pytest.approx(before, rel=1e-4)
    assert len(evals) == 2 and all(len(e["samples"]) == 1 for e in evals)
    assert {"val_loss", "val_ppl", "val_bpc", "tokens_seen"} <= evals[0].keys()


def test_scratch_model_context_follows_block_size(tmp_path, corpus):
    """A model only learns the positions it trains on, so its context is --block-size."""
    out = tmp_path / "run"
    cfg = tiny_train_config(corpus, out, max_steps=1)
    cfg.n_positions = None
    train(cfg)
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["n_positions"] == 32 and config["n_ctx"] == 32


def test_a_block_cut_to_short_data_is_the_scratch_models_context(tmp_path, capsys):
    """--block-size longer than the data trains on blocks of the data's length, so a new
    model's context is that length: no position embeddings that are never trained."""
    text = tmp_path / "short.txt"
    text.write_text("A short text of a few dozen words, far fewer tokens than the block. " * 6)
    out = tmp_path / "run"
    cfg = tiny_train_config(text, out, max_steps=1, block_size=100_000)
    cfg.n_positions = None
    train(cfg)
    assert "using blocks of" in capsys.readouterr().out
    config = json.loads((out / "final" / "config.json").read_text())
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert config["n_positions"] == resolved["resolved_block_size"] < 1_000


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


def test_cpu_precision_auto_trains_in_what_this_machine_measures_fastest(
    tmp_path, corpus, monkeypatch, capsys
):
    import torch

    from gpt2kit.training import setup as setup_module

    asked = []

    def measured(task, width):
        asked.append((task, width))
        return torch.bfloat16

    monkeypatch.setattr(setup_module, "auto_cpu_precision", measured)
    summary = train(tiny_train_config(corpus, tmp_path / "auto", device="cpu", max_steps=2))
    assert summary.exit_code == 0 and asked == [("train", 32)]
    assert "precision bf16" in capsys.readouterr().out
    train(tiny_train_config(corpus, tmp_path / "fp32", device="cpu", precision="fp32", max_steps=2))
    assert len(asked) == 1 and "precision fp32" in capsys.readouterr().out  # explicit: kept


def test_adamw_is_fused_on_the_cpu(tmp_path):
    import torch

    from gpt2kit.model import GPT2, GPT2Config
    from gpt2kit.training.config import OptimOptions
    from gpt2kit.training.setup import make_optimizer

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=16))
    optimizer = make_optimizer(model, OptimOptions(lr=1e-3), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True


def test_a_lora_run_is_budgeted_without_gradients_and_adamw_state_for_the_frozen_base(
    monkeypatch,
):
    import torch

    from gpt2kit.errors import UserError
    from gpt2kit.model import GPT2Config
    from gpt2kit.training import setup as setup_module

    config = GPT2Config()  # GPT-2 124M: 16 bytes a parameter fully trained, 4 frozen
    full = setup_module.training_memory_bytes(config, 4, 128, torch.float32)
    lora = setup_module.training_memory_bytes(config, 4, 128, torch.float32, frozen_base=True)
    assert full - lora > 12 * 120e6  # the gradients and both moments of 124M parameters
    monkeypatch.setattr(setup_module, "free_memory", lambda device: (full + lora) // 2)
    cpu = torch.device("cpu")
    setup_module.check_memory(config, 4, 128, cpu, torch.float32, frozen_base=True)  # fits
    with pytest.raises(UserError, match="GiB"):
        setup_module.check_memory(config, 4, 128, cpu, torch.float32)
