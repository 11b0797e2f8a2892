"""The static-shape decode step (what CUDA graphs capture) gives the eager step's tokens."""

from __future__ import annotations

import pytest
import torch

from gpt2kit.generate import Generator


def test_static_cache_path_gives_the_eager_tokens(peaky):
    """The static-shape step (what CUDA graphs capture) computes what the eager step does."""
    _, gen, _ = peaky
    static = Generator(gen.model, gen.tokenizer, static_cache=True)
    prompts = [gen.tokenizer.encode(p) for p in ("Hi", "A much longer prompt", "Three words")]
    for kw in (dict(temperature=0), dict(temperature=1.0, top_k=10, seed=5)):
        a = gen.generate_ids(prompts, 20, stop_at_eos=False, **kw)
        b = static.generate_ids(prompts, 20, stop_at_eos=False, **kw)
        assert a == b


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_decode_matches_eager_on_gpu(peaky):
    _, cpu_gen, _ = peaky
    model = cpu_gen.model.to("cuda")
    try:
        prompts = [cpu_gen.tokenizer.encode(p) for p in ("Hi", "A longer prompt here")]
        graph = Generator(model, cpu_gen.tokenizer, cuda_graph=True)
        eager = Generator(model, cpu_gen.tokenizer, cuda_graph=False, static_cache=False)
        assert graph.cuda_graph
        a = graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
        b = eager.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
        assert a == b
        assert graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False) == a  # replay
    finally:
        cpu_gen.model.to("cpu")
