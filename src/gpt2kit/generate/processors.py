"""From logits to the next token: the logits processors and seeded sampling.

The controls (repetition penalty, no-repeat n-grams, temperature, top-k, top-p, min-p) are
tensor operations on a whole batch's logits, applied in Hugging Face's order with Hugging
Face's semantics (`choose_tokens`). Sampling draws `argmax(p / noise)` with Exponential(1)
noise, which is how `torch.multinomial` draws, without its host sync; each sample draws its
noise from its own generator (`SamplingNoise`, seeded by `sample_seed`), so what it draws does
not depend on the other rows of its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from gpt2kit.generate.params import GenerationParams


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Hugging Face's repetition penalty: for tokens marked in `seen` (B, V), divide positive
    logits by `penalty` and multiply negative ones by it; returns new logits (B, V)."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def ngram_bans(
    history: torch.Tensor, length: int, n: int, pad: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """Tokens that would repeat an n-gram: a (B, vocab_size) boolean mask, True = banned.

    `history` (B, >= length) holds each row's tokens, left-padded; `pad` (B,) counts the padding
    columns, which never form n-grams. A token is banned when the last n-1 tokens followed by it
    already occur in the row, as Hugging Face's `NoRepeatNGramLogitsProcessor` decides.
    """
    B = history.size(0)
    counts = torch.zeros((B, vocab_size), device=history.device)
    if length < n:
        return counts > 0
    hist = history[:, :length]
    windows = hist.unfold(1, n, 1)  # (B, W, n): every n-gram so far
    prefix = hist[:, length - n + 1 :]  # (B, n-1): the n-gram being started
    match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(-1)  # (B, W)
    start = torch.arange(windows.size(1), device=hist.device)
    match &= start.unsqueeze(0) >= pad.unsqueeze(1)  # n-grams touching padding do not count
    return counts.scatter_add_(1, windows[:, :, -1], match.float()) > 0


def warp_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p filtering (removed tokens get -inf), exactly as
    Hugging Face's warpers in that order; returns new logits (B, V)."""
    if temperature != 1.0:
        logits = logits / temperature
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum <= 1 - top_p
        drop_sorted[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    if min_p > 0.0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))
    return logits


def sample_token(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row from `probs` (B, V) given Exponential(1) `noise` (B, V): the argmax of
    p / noise, which is how `torch.multinomial(probs, 1)` draws (its noise drawn from its
    generator), without its host sync."""
    return (probs / noise).argmax(dim=-1)


def choose_tokens(
    logits: torch.Tensor,
    params: GenerationParams,
    *,
    seen: torch.Tensor | None = None,
    history: torch.Tensor | None = None,
    length: int = 0,
    pad: torch.Tensor | None = None,
    unused: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next token of each row (B,) from its logits (B, V), under one set of controls.

    In Hugging Face's order: the repetition penalty (`seen` (B, V) marks each row's tokens so
    far), the n-gram ban (over `history` (B, >= length), whose first `pad` (B,) columns are
    padding), the ids of a padded vocabulary that are no token (`unused` (V,)), then the
    argmax when greedy, else temperature, top-k, top-p, min-p and a draw with `noise` (B, V).
    """
    scores = logits.float()
    if params.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
    n, V = params.no_repeat_ngram_size, scores.size(-1)
    if n > 0:
        scores = scores.masked_fill(ngram_bans(history, length, n, pad, V), float("-inf"))
    if unused is not None:
        scores = scores.masked_fill(unused, float("-inf"))
    if params.greedy:
        return scores.argmax(dim=-1)
    scores = warp_logits(scores, params.temperature, params.top_k, params.top_p, params.min_p)
    return sample_token(scores.softmax(dim=-1), noise)


def new_seed() -> int:
    """A fresh random seed (recorded, so a sample drawn with it can be drawn again)."""
    return secrets.randbelow(2**31)


# Odd 64-bit constants (their low 32 bits, all a CPU generator uses, are odd too), so the
# samples of one prompt never share a seed.
_PROMPT_STRIDE = 0xD1B54A32D192ED03
_SAMPLE_STRIDE = 0x9E3779B97F4A7C15


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one sample: `seed` itself for the first sample of the first prompt, else
    `seed` shifted by fixed odd multiples of the indices (modulo 2**64).

    Each sample draws its noise from its own generator seeded this way, so what it draws does
    not depend on which rows share its batch, and prompt `p` generated alone with
    `seed=sample_seed(seed, p, s)` gives sample `s` again.
    """
    return (seed + prompt_index * _PROMPT_STRIDE + sample_index * _SAMPLE_STRIDE) % 2**64


class SamplingNoise:
    """The Exponential(1) noise of sampling: one generator, and so one stream, per row.

    Each row draws `steps` steps of noise at once with one call (a call per row every `steps`
    of its steps); on the CPU a block of draws equals the same draws made one step at a time,
    and one step per call keeps the buffer small. On other devices 8 steps at once keep the
    per-row calls out of most steps. Rows can be (re)seeded at any step, each keeping its own
    count, so a row's noise depends only on its seed and its step. A row without a seed
    (`None`, greedy or empty) draws nothing and gives stale noise.
    """

    def __init__(
        self,
        seeds: Sequence[int | None],
        vocab: int,
        device: torch.device,
        steps: int | None = None,
    ) -> None:
        self.device = device
        self.steps = steps or (1 if device.type == "cpu" else 8)
        self.block = torch.ones((len(seeds), self.steps, vocab), device=device)  # (B, K, V)
        self.gens: list[torch.Generator | None] = [None] * len(seeds)
        self.drawn = [0] * len(seeds)  # steps of noise each row has used
        self.calls = 0  # steps drawn so far (calls to `next`)
        # Per row, `calls` when it was seeded, on the device: rows out of step find their
        # noise with device arithmetic, not a host-to-device copy (a sync) every step.
        self.seeded_at = torch.zeros(len(seeds), dtype=torch.long, device=device)
        self.rows = torch.arange(len(seeds), device=device)
        for row, seed in enumerate(seeds):
            if seed is not None:
                self.seed(row, seed)

    def seed(self, row: int, seed: int) -> None:
        """Start row `row` over with a generator seeded with `seed`."""
        self.gens[row] = torch.Generator(device=self.device).manual_seed(seed)
        self.drawn[row] = 0
        self.seeded_at[row] = self.calls

    def clear(self, row: int) -> None:
        """Stop drawing noise for row `row`."""
        self.gens[row] = None

    def next(self) -> torch.Tensor:
        """The noise of the next step of every seeded row (B, V)."""
        phases = [0] * len(self.gens)  # where in its block each row's noise of this step is
        for row, gen in enumerate(self.gens):
            if gen is not None:
                phases[row] = k = self.drawn[row] % self.steps
                if k == 0:
                    self.block[row].exponential_(1, generator=gen)
                self.drawn[row] += 1
        self.calls += 1
        seeded = {phases[row] for row, gen in enumerate(self.gens) if gen is not None}
        if len(seeded) <= 1:  # the seeded rows are in step (always on the CPU): a view
            return self.block[:, seeded.pop() if seeded else 0]
        # A seeded row's phase, drawn % steps, is (calls before this one - seeded_at) % steps.
        index = (self.calls - 1 - self.seeded_at).remainder(self.steps)  # (B,)
        return self.block[self.rows, index]  # (B, V)
