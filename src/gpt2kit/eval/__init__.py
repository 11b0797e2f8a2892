"""Evaluation: the one scorer (`scorer.py`: sliding windows, loss, perplexity, bits per
character), used by `gpt2kit eval` (`command.py`) and by validation during training."""

from gpt2kit.eval.scorer import (
    default_stride,
    evaluate_ids,
    evaluate_text,
    score_tokens,
    sliding_windows,
    summarize,
)

__all__ = [
    "default_stride",
    "evaluate_ids",
    "evaluate_text",
    "score_tokens",
    "sliding_windows",
    "summarize",
]
