"""Shared fixtures: tiny random GPT-2 models built locally (no hub access is ever needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from gpt2kit.tokenizer import gpt2_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "src" / "gpt2kit" / "assets" / "tinyshakespeare.txt"


def make_hf_model(folder: Path, seed: int = 0, **config_overrides):
    """Save a random `transformers.GPT2LMHeadModel` (2 layers, 32 wide) with GPT-2's tokenizer."""
    transformers = pytest.importorskip("transformers")
    kwargs = dict(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=50257)
    kwargs.update(config_overrides)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).eval()
    model.save_pretrained(folder)
    gpt2_tokenizer().save(folder)
    return model


@pytest.fixture
def hf_model_dir(tmp_path: Path) -> Path:
    """A folder holding a tiny random GPT-2 saved by `transformers`."""
    folder = tmp_path / "hf-model"
    make_hf_model(folder)
    return folder


def run_cli(*args: str, input: str | None = None, timeout: float = 300, env: dict | None = None):
    """Run `python -m gpt2kit ARGS` in a subprocess and return the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gpt2kit", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env=full_env,
    )


def script_validation_losses(monkeypatch, losses: Iterable[float]) -> None:
    """Make training's validation return `losses`, one per evaluation, in order (bits per
    character equal to the loss), so a test decides which step is the best."""
    from gpt2kit import training

    scripted = iter(losses)

    def score(*args, **kwargs) -> dict:
        loss = next(scripted)
        return {"loss": loss, "bits_per_char": loss, "tokens": 100}

    monkeypatch.setattr(training, "evaluate_ids", score)
