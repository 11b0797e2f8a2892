"""LoRA fine-tuning (`train --lora-r`): only the adapters train and are saved (checkpoints a few
KB beside a frozen base), the optimizer state holds only them, a run killed and resumed ends
with the same adapters bit for bit, the run folder is a MODEL, and bad options exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_weights, make_hf_model, run_cli
from gpt2kit import load_model
from gpt2kit.model.lora import LoraLinear

LORA = [
    "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--dropout", "0.1",
    "--block-size", "32", "--batch-size", "4", "--max-steps", "8", "--lr", "1e-2",
    "--samples", "0", "--eval-every", "4", "--save-every", "4", "--val-fraction", "0.1",
    "--no-progress",
]  # fmt: skip


def _killed_at(step: int, args: list[str]) -> subprocess.CompletedProcess:
    """Run `gpt2kit ARGS` in a process that SIGKILLs itself as optimizer step `step` starts."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import gpt2kit.training.loop as T
        from gpt2kit.cli import main
        orig = T.lr_at
        def lr_at(step, *a):
            if step == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(step, *a)
        T.lr_at = lr_at
        sys.exit(main(sys.argv[1:]))
    """)
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )


def _adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora") / "base"
    make_hf_model(folder)
    return folder


def test_lora_run_trains_only_adapters_and_resumes_exactly(tmp_path, corpus, base):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    args = ["train", str(corpus), "--init", str(base), *LORA]
    r = run_cli(*args, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    assert "LoRA: rank 4" in r.stdout and "trainable parameters" in r.stdout

    # the checkpoint: adapters, optimizer and state, tiny beside the base's weights
    ckpt = ref / "checkpoints" / "step-000008"
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "config.json").exists()
    size = sum(f.stat().st_size for f in ckpt.iterdir())
    assert size < (base / "model.safetensors").stat().st_size / 20
    adapters = _adapter(ckpt)
    assert len(adapters) == 2 * 2 * 4  # A and B of c_attn, attn.c_proj, c_fc, mlp.c_proj x 2
    assert all(".lora_A." in k or ".lora_B." in k for k in adapters)
    assert any(t.abs().sum() > 0 for k, t in adapters.items() if ".lora_B." in k)  # it learned
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    n_params = sum(len(g["params"]) for g in opt["param_groups"])
    assert n_params == len(opt["state"]) == len(adapters)  # the optimizer holds only adapters
    shapes = sorted(tuple(s["exp_avg"].shape) for s in opt["state"].values())
    assert shapes == sorted(tuple(t.shape) for t in adapters.values())
    base_ref = json.loads((ckpt / "gpt2kit_base.json").read_text())
    assert base_ref["folder"] == str(base.resolve()) and len(base_ref["sha256"]) == 64
    assert (ref / "final" / "adapter_model.safetensors").is_file()

    # resuming it as a full fine-tuning run (no --lora-r) is refused before any step
    i = args.index("--lora-r")
    without = args[:i] + args[i + 2 :]
    r = run_cli(*without, "--out", str(ref), "--max-steps", "10")
    assert r.returncode == 2 and "holds LoRA adapters of rank 4" in r.stderr, r.stderr

    # killed as step 6 starts (after the checkpoint of step 4), then resumed
    r = _killed_at(6, [*args, "--out", str(crashed)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = run_cli(*args, "--out", str(crashed))
    assert r.returncode == 0, r.stderr
    assert "Resuming from" in r.stdout and "step-000004" in r.stdout
    assert_same_weights(_adapter(ref / "final"), _adapter(crashed / "final"))

    # the run folder is a MODEL: its best adapter merged into the base
    model, _, folder = load_model(ref)
    assert folder == ref / "best" and not any(isinstance(m, LoraLinear) for m in model.modules())
    plain, _, _ = load_model(base)
    ids = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(ids), plain(ids))


def test_bad_lora_options_exit_2_with_every_problem_named(tmp_path, corpus):
    r = run_cli(
        "train", str(corpus), "--out", str(tmp_path / "r"), "--init", "scratch",
        "--lora-r", "0", "--lora-targets", "c_attn,q_proj",
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    for text in ("--lora-r must be at least 1", "q_proj is not a layer", "--init scratch"):
        assert text in r.stderr
    assert not (tmp_path / "r").exists()
