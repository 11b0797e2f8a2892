"""The GPU paths of decoding: what the CPU can exercise of them (no host-to-device copy per
step, the memory check as it reads a CUDA device), and GPU-only checks (skipped here)."""

from __future__ import annotations

import pytest
import torch

from gpt2kit.errors import UserError
from gpt2kit.generate import Generator
from gpt2kit.generate import generator as generator_module
from gpt2kit.generate.processors import SamplingNoise


def test_noise_of_rows_out_of_step_is_found_without_a_tensor_made_from_host_data(monkeypatch):
    """Rows seeded at different steps (a server's joiners) read their noise at different
    phases of their blocks. Making that index from a Python list is a host-to-device copy,
    which on CUDA waits for the GPU every token; it is computed on the device instead."""
    noise = SamplingNoise([5, None, 7], 50, torch.device("cpu"), steps=8)
    for _ in range(3):
        noise.next()
    noise.seed(1, 6)
    alone = [SamplingNoise([s], 50, torch.device("cpu"), steps=8) for s in (5, 6, 7)]
    for _ in range(3):
        alone[0].next()
        alone[2].next()

    def no_host_data(*args, **kwargs):
        raise AssertionError("torch.tensor(host data) in SamplingNoise.next")

    monkeypatch.setattr(torch, "tensor", no_host_data)
    for _ in range(12):
        step = noise.next()
        assert all(torch.equal(step[i], a.next()[0]) for i, a in enumerate(alone))


class _OnCuda(Generator):
    device = torch.device("cuda")  # what the memory check reads; nothing runs


def test_decoding_memory_check_counts_what_pytorch_keeps_cached_as_free(peaky, monkeypatch):
    """`mem_get_info` counts the blocks PyTorch's allocator keeps for reuse (an earlier call's
    cache and logits) as used; they are this process's to use, so a batch that fits in them is
    not refused."""
    _, gen, _ = peaky
    on_cuda = _OnCuda(gen.model, gen.tokenizer)
    gib = 2**30
    monkeypatch.setattr(generator_module, "free_memory", lambda device: gib // 1024)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * gib)
    on_cuda._check_memory(batch=4, capacity=64)  # fits in the 9 GiB cached: no error
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 10 * gib)
    with pytest.raises(UserError, match="--batch-size"):
        on_cuda._check_memory(batch=10**6, capacity=64)


# -- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_noise_of_rows_out_of_step_on_cuda_depends_only_on_each_seed():
    cuda = torch.device("cuda")
    noise = SamplingNoise([5, None], 50, cuda)  # 8 steps a block off the CPU
    for _ in range(3):
        noise.next()
    noise.seed(1, 6)
    alone = [SamplingNoise([s], 50, cuda) for s in (5, 6)]
    for _ in range(3):
        alone[0].next()
    for _ in range(20):
        step = noise.next()
        assert all(torch.equal(step[i], a.next()[0]) for i, a in enumerate(alone))


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
