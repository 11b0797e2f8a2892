"""The GPU paths of decoding: what the CPU can exercise of them (no host-to-device copy per
step, the memory check as it reads a CUDA device), and GPU-only checks (skipped here)."""

from __future__ import annotations

import pytest
import torch

from gpt2kit.generate import Generator


# -- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_graph_decode_on_a_gpu_that_is_not_the_current_device(peaky):
    """With the model on the last GPU and the thread's current device the first (as in a
    server's scheduler thread, or --device cuda:1), the graph is captured on the model's GPU
    and gives the eager step's tokens."""
    _, cpu_gen, folder = peaky
    last = f"cuda:{torch.cuda.device_count() - 1}"
    torch.cuda.set_device(0)
    graph = Generator.from_pretrained(folder, device=last, precision="fp32")
    eager = Generator(graph.model, graph.tokenizer, cuda_graph=False, static_cache=False)
    assert graph.cuda_graph
    prompts = [cpu_gen.tokenizer.encode(p) for p in ("Hi", "A longer prompt here")]
    a = graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
    assert a == eager.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
    assert graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False) == a  # replay
