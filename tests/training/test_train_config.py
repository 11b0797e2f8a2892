"""Train's options: YAML then flags, the saved config.yaml, the documented from-scratch
defaults, and bad options reported all at once."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import SHAKESPEARE, run_cli
from conftest import TINY_TRAIN as TINY


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
    # the saved config.yaml is a --config file: the derived keys beside the options are the
    # declared ones, and reading it back gives the run's options
    from gpt2kit.config import build_config, options_of, to_dict
    from gpt2kit.training import TrainConfig

    options = {f.name for f, _ in options_of(TrainConfig)}
    assert set(saved) - options == set(TrainConfig.DERIVED_KEYS)
    again = build_config(TrainConfig, {}, out / "config.yaml")
    assert to_dict(again) == {k: v for k, v in saved.items() if k in options}
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
    assert saved["batch_size"] == 8 and saved["dropout"] == 0.0
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


def test_options_live_in_groups_and_keep_their_flat_names():
    """Groups change where an option lives in Python, not how the API, YAML or config.yaml
    name it: flat keywords and attributes still work, and config.yaml keeps its key order."""
    import subprocess
    import sys
    from dataclasses import replace

    from gpt2kit.config import to_dict
    from gpt2kit.training import TrainConfig

    config = TrainConfig(init="scratch", lr=1e-3, n_layer=2, eval_every=5, text_column="body")
    assert config.optim.lr == config.lr == 1e-3 and config.model.n_layer == 2
    assert config.evaluation.eval_every == 5 and config.reading.text_column == "body"
    config.n_positions = 32
    assert config.model.n_positions == 32
    other = replace(config, lr=2e-3)
    assert other.lr == 2e-3 and other.n_layer == 2 and config.lr == 1e-3
    other.n_layer = 3
    assert config.n_layer == 2  # configs never share a group
    reading = list(to_dict(TrainConfig().reading))
    assert list(to_dict(TrainConfig())) == [
        "sources", "out", "init", "preset", "n_layer", "n_head", "n_embd", "n_positions",
        "dropout", "tokenizer", "val", "val_fraction", *reading, "lora_r", "lora_alpha",
        "lora_dropout", "lora_targets", "lora_bias", "block_size", "batch_size",
        "grad_accum", "tokens_per_step", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
        "beta1", "beta2", "grad_clip", "max_steps", "epochs", "max_time", "eval_every",
        "eval_tokens", "patience", "samples", "sample_tokens", "save_every", "keep_last",
        "log_every", "seed", "device", "precision", "compile", "parallel", "nproc", "resume",
            "overwrite", "progress",
    ]  # fmt: skip
    # `gpt2kit.train` is the function, whatever was imported before it
    code = "import gpt2kit.training.loop, gpt2kit; assert gpt2kit.train is gpt2kit.training.train"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
