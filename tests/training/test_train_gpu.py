"""Training on a CUDA GPU: bf16 autocast, torch.compile and fused AdamW together (skipped
without a GPU; `benchmarks/gpu_check.sh` runs these on a GPU machine)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_train_config
from gpt2kit.formats.hf import load_model
from gpt2kit.training import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_bf16_compiled_training_on_cuda_learns_and_saves_a_model_the_cpu_loads(corpus, tmp_path):
    config = tiny_train_config(
        corpus, tmp_path / "run", device="cuda", precision="auto", compile="auto", max_steps=40
    )
    summary = train(config)
    assert summary.exit_code == 0 and summary.steps == 40
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]
    assert losses[-1] < losses[0]
    gpu, _, _ = load_model(tmp_path / "run" / "final", device="cuda")
    cpu, _, _ = load_model(tmp_path / "run" / "final", device="cpu")
    ids = torch.randint(0, cpu.config.vocab_size, (2, 16))
    with torch.no_grad():
        a = gpu(ids.cuda()).float().cpu()
        b = cpu(ids)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)  # fp32 on both: kernels differ


def test_bf16_autocast_was_used_on_cuda(corpus, tmp_path, capsys):
    # uncompiled: the test above covers torch.compile, and the GPU check's tests have 90 s
    train(tiny_train_config(corpus, tmp_path / "run", device="cuda", max_steps=2, compile="off"))
    assert "precision bf16" in capsys.readouterr().out
