"""The GPU paths of training setup that the CPU can exercise: the memory check as it reads a
CUDA device (its total memory mocked), so a GPU run is not refused what fits there."""

from __future__ import annotations

import pytest
import torch

from gpt2kit.errors import UserError
from gpt2kit.model import GPT2Config
from gpt2kit.training import setup as training_setup

H200_BYTES = 143_771_156_480  # what torch.cuda.mem_get_info reports as an H200's total
H100_BYTES = 85_029_158_912


def test_a_cuda_run_is_not_refused_for_attention_scores_its_fused_kernels_never_store(
    monkeypatch,
):
    """GPT-2 124M at batch 64 x 1024 in bf16 trains on one H200 (FACTS.md measured it), and
    batch 32 on an H100: SDPA's flash and memory-efficient kernels keep no (B, H, T, T)
    scores, which the CPU's estimate counts (5 x heads x T / width values per token, twice)."""
    config, bf16, cuda = GPT2Config(), torch.bfloat16, torch.device("cuda")
    for total, batch in ((H200_BYTES, 64), (H100_BYTES, 32)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, t=total: (t, t))
        training_setup.check_memory(config, batch, 1024, cuda, bf16)  # fits: no error
    with pytest.raises(UserError, match="--batch-size"):  # still refuses what cannot fit
        training_setup.check_memory(config, 256, 1024, cuda, bf16)
    cpu = training_setup.training_memory_bytes(config, 64, 1024, bf16)
    fused = training_setup.training_memory_bytes(config, 64, 1024, bf16, fused_attention=True)
    assert fused < H200_BYTES < cpu  # the CPU keeps its (unfused attention) estimate


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_timing_steps_for_max_time_leaves_the_gpu_random_state_as_it_was():
    """--max-time alone times a few passes before the run; with dropout on a GPU they draw
    from the device's generator, which is put back, as the CPU's is."""
    import contextlib

    import numpy as np

    from gpt2kit.data.sampler import BlockSampler
    from gpt2kit.model import GPT2

    cuda = torch.device("cuda")
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=32, vocab_size=64))
    model.to(cuda).train()
    tokens = np.random.default_rng(0).integers(0, 64, 4096).astype(np.uint16)
    sampler = BlockSampler(tokens, 16, 4, seed=0)
    before = torch.cuda.get_rng_state(cuda)
    steps = training_setup.steps_for_budget(
        model, sampler, 1, contextlib.nullcontext(), cuda, seconds=60, eval_every=10,
        val_tokens=64,
    )  # fmt: skip
    assert steps >= 1
    assert torch.equal(torch.cuda.get_rng_state(cuda), before)


def test_fsdp2_is_found_where_torch_2_4_and_2_5_keep_it(monkeypatch):
    """The project supports torch 2.4+: `fully_shard` is public in `torch.distributed.fsdp`
    from 2.6 only, DTensor in `torch.distributed.tensor` from 2.5; before, both live in
    private modules, which the NCCL and gloo paths then use."""
    import torch.distributed.fsdp
    from torch.distributed._composable.fsdp import fully_shard

    from gpt2kit.training import distributed

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")  # as in torch 2.4 and 2.5
    assert distributed._fully_shard() is fully_shard
    dtensor, distribute = distributed._dtensor_api()
    assert dtensor.__name__ == "DTensor" and distribute.__name__ == "distribute_tensor"
