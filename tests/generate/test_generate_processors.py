"""The logits processors equal Hugging Face's, and sampling draws like torch.multinomial."""

from __future__ import annotations

import pytest
import torch

from gpt2kit.generate.processors import (
    SamplingNoise,
    apply_repetition_penalty,
    ngram_bans,
    sample_token,
    warp_logits,
)

lp = pytest.importorskip("transformers.generation.logits_process")


def test_warpers_equal_hf_warpers_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=g) * 3
    logits[0, :10] = 2.0  # ties at the top-k boundary
    cases = [
        dict(temperature=0.7),
        dict(top_k=7),
        dict(top_p=0.6),
        dict(min_p=0.15),
        dict(temperature=1.3, top_k=50, top_p=0.9, min_p=0.02),
    ]
    for c in cases:
        hf = lp.LogitsProcessorList()
        if "temperature" in c:
            hf.append(lp.TemperatureLogitsWarper(c["temperature"]))
        if "top_k" in c:
            hf.append(lp.TopKLogitsWarper(c["top_k"]))
        if "top_p" in c:
            hf.append(lp.TopPLogitsWarper(c["top_p"]))
        if "min_p" in c:
            hf.append(lp.MinPLogitsWarper(c["min_p"]))
        ours = warp_logits(logits, **c)
        assert torch.equal(ours, hf(None, logits.clone())), c
        assert not torch.equal(ours, logits), c  # the control changed something


def test_repetition_penalty_equals_hf():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, generator=g)
    ids = torch.randint(0, 50, (3, 12), generator=g)
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, ids, True)
    ref = lp.RepetitionPenaltyLogitsProcessor(1.7)(ids, logits.clone())
    ours = apply_repetition_penalty(logits, seen, 1.7)
    assert torch.equal(ours, ref) and not torch.equal(ours, logits)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_bans_equal_hf(n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 6, (4, 30), generator=g)  # a small vocabulary repeats n-grams
    scores = torch.zeros(4, 6)
    ref = lp.NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()) == float("-inf")
    ours = ngram_bans(ids, 30, n, torch.zeros(4, dtype=torch.long), 6)
    assert torch.equal(ours, ref) and ours.any()


def test_ngram_bans_ignore_padding():
    ids = torch.tensor([[5, 1, 2, 1]])  # "5" is padding: (5, 1) must not ban 1 after the last 1
    assert ngram_bans(ids, 4, 2, torch.tensor([0]), 6)[0, 2]  # (1, 2) occurred: 2 is banned
    assert ngram_bans(ids, 4, 2, torch.tensor([1]), 6)[0].tolist() == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    ids = torch.tensor([[1, 1, 2, 1]])
    assert ngram_bans(ids, 4, 2, torch.tensor([0]), 6)[0, 1]  # (1, 1) occurred: 1 is banned
    assert not ngram_bans(ids, 4, 2, torch.tensor([1]), 6)[0, 1]  # ... but only with padding


def test_sample_token_draws_like_torch_multinomial():
    probs = torch.softmax(torch.randn(5, 1000) * 2, dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=torch.Generator().manual_seed(3))
    a = sample_token(probs, noise)
    b = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    assert torch.equal(a, b)


def test_noise_drawn_in_blocks_of_steps_equals_one_step_at_a_time():
    """Off the CPU each row draws 8 steps of noise per call; on the CPU a block of draws is
    the same numbers, so the block bookkeeping (refill, step index) is checked here."""
    one = SamplingNoise([5, 6, 7], 50, torch.device("cpu"), steps=1)
    eight = SamplingNoise([5, 6, 7], 50, torch.device("cpu"), steps=8)
    rows = [one.next().clone() for _ in range(20)]
    assert all(torch.equal(a, eight.next()) for a in rows)
    alone = SamplingNoise([6], 50, torch.device("cpu"), steps=8)  # row 1 drawn without the others
    assert all(torch.equal(a[1], alone.next()[0]) for a in rows)


def test_noise_of_rows_seeded_at_different_steps_depends_only_on_each_seed():
    """Rows (re)seeded at different steps draw their blocks out of step; each row's noise is
    still what it draws alone from its seed, and an unseeded row draws nothing."""
    noise = SamplingNoise([5, None, 7], 50, torch.device("cpu"), steps=8)
    for _ in range(3):
        noise.next()
    noise.seed(1, 6)  # joins three steps later, its blocks three steps out of step
    noise.seed(2, 7)  # starts over
    alone = [SamplingNoise([s], 50, torch.device("cpu"), steps=8) for s in (5, 6, 7)]
    for _ in range(3):
        alone[0].next()
    for _ in range(20):
        step = noise.next()
        assert all(torch.equal(step[i], a.next()[0]) for i, a in enumerate(alone))
    noise.clear(0)
    noise.next()
    assert noise.drawn == [23, 21, 21]  # a cleared row draws no more
