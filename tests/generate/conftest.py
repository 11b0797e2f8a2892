"""What the generation tests share: a tiny model with peaked distributions, a refusal check."""

from __future__ import annotations

import subprocess

import pytest

from conftest import make_hf_model
from gpt2kit.generate import Generator


@pytest.fixture(scope="package")
def peaky(tmp_path_factory):
    """A tiny HF model with large random weights, so its next-token distributions are peaked
    (a control then visibly changes what is sampled), and our Generator over the same folder."""
    folder = tmp_path_factory.mktemp("peaky") / "m"
    hf = make_hf_model(folder, initializer_range=0.5)
    return hf, Generator.from_pretrained(folder, device="cpu"), folder


def refused(result: subprocess.CompletedProcess, *texts: str) -> None:
    """The command stopped with status 2 and a message holding every text, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr
