"""The learning-rate schedule: a pure function of the step, so a resumed run continues on it."""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return peak * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def warmup_steps(total: int, given: int | None) -> int:
    """The warmup length: `given` (--warmup-steps) when set, else 5% of the steps, at most 200."""
    return given if given is not None else min(200, max(1, total // 20))
