"""Shared fixtures: tiny random GPT-2 models built locally (no hub access is ever needed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
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


def make_adapter(base_dir, out, spec, seed: int = 0):
    """Our model on `base_dir` with LoRA adapters of `spec` (a `LoraSpec`), B (and, with
    `bias="all"`, the biases) random, saved to `out` as a PEFT adapter folder; returns the
    model with the adapters, unmerged, in eval mode."""
    from gpt2kit import load_model, save_model
    from gpt2kit.formats.hf import base_ref
    from gpt2kit.formats.peft import attach_base
    from gpt2kit.model.lora import add_lora, lora_layers

    model, tokenizer, _ = load_model(base_dir)
    add_lora(model, spec)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.3)
        for name, p in model.named_parameters():
            if spec.bias == "all" and name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    attach_base(model, base_ref(str(base_dir), base_dir))
    save_model(model, tokenizer, out)
    return model.eval()


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
    from gpt2kit.training import evaluator

    scripted = iter(losses)

    def score(*args, **kwargs) -> dict:
        loss = next(scripted)
        return {"loss": loss, "bits_per_char": loss, "tokens": 100}

    monkeypatch.setattr(evaluator, "evaluate_ids", score)


# Training tests: a 2-layer, 32-wide model on ~2,300 tokens of `corpus` (~17 steps per epoch,
# so steps 20-40 cross an epoch), as flags and as a Python config.
TINY_TRAIN = [
    "--init", "scratch", "--preset", "tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
    "--n-positions", "64", "--tokenizer", "bpe:300", "--block-size", "32", "--batch-size", "4",
    "--dropout", "0.1", "--samples", "0", "--eval-every", "20", "--save-every", "10",
    "--val-fraction", "0.1", "--no-progress",
]  # fmt: skip


def tiny_train_config(corpus: Path, out: Path, **kw):
    """A `TrainConfig` of the tiny model on `corpus` into `out`, evaluating every 2 steps;
    `kw` overrides or adds options."""
    from gpt2kit.training import TrainConfig

    base = dict(
        sources=[str(corpus)], out=str(out), init="scratch", n_layer=2, n_head=2, n_embd=32,
        n_positions=64, tokenizer="bpe:300", block_size=32, batch_size=4, samples=0,
        eval_every=2, save_every=100, progress=False, val_fraction=0.1,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 3,600 characters of tiny Shakespeare, as a file."""
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(SHAKESPEARE.read_text()[:3600])
    return path


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights in a model folder's `model.safetensors`."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Assert two sets of weights are bit for bit equal, naming the first that differs."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two sets of weights are bit for bit equal."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def unavailable(reason: str):
    """Skip for a missing browser, except in CI, which installs it (`.ci/run`): fail there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


@contextlib.contextmanager
def headless_chromium() -> Iterator:
    """Debian's chromium, headless, driven by playwright (`executable_path`: nothing is
    downloaded). Use it in a module-scoped fixture at most: playwright's sync API keeps an event
    loop running in the main thread while it is open, and `asyncio.run` in any later test of
    the session would fail."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e .[test])")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()
