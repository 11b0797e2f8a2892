"""The decoding controls of one request: `GenerationParams`, every control with its default.

The fields are declared with `option(default, help)`, so they are also the sampling flags of
`gpt2kit generate` (a `group` of its options): each default is written once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt2kit.config import option
from gpt2kit.errors import raise_if_problems

# Logits divided by a smaller temperature overflow float32 (3.4e38) and sample garbage.
MIN_TEMPERATURE = 1e-6


@dataclass(frozen=True)
class GenerationParams:
    """Every decoding control with its default, validated on creation.

    Greedy when `temperature` is 0 (then top-k/top-p/min-p do nothing, as in Hugging Face;
    the repetition penalty and the n-gram ban still apply). `top_k` 0, `top_p` 1, `min_p` 0,
    `repetition_penalty` 1 and `no_repeat_ngram_size` 0 switch a control off. `stop` strings end
    a sample, whose text is cut before the stop string; EOS ends it unless `ignore_eos`.
    """

    max_new_tokens: int = option(100, help="How many tokens to generate at most.")
    temperature: float = option(
        1.0, help="Sampling temperature; 0 means greedy decoding (always the most likely token)."
    )
    top_k: int = option(0, help="Sample only among the K most likely tokens (0 = off).")
    top_p: float = option(
        1.0,
        help="Nucleus sampling: keep the most likely tokens whose probabilities sum to P (1 = off).",
    )
    min_p: float = option(
        0.0,
        help="Drop tokens less likely than MIN_P times the most likely token's probability (0 = off).",
    )
    repetition_penalty: float = option(
        1.0,
        help="Penalize every token already in the prompt or the output, as in Hugging Face "
        "(1 = off; 1.1-1.3 is typical).",
    )
    no_repeat_ngram_size: int = option(
        0, help="Never repeat an n-gram of this many tokens (prompt included; 0 = off)."
    )
    # Held as a tuple (so params stay immutable and hashable); `list[str]` is the type the
    # flag parser reads (a repeatable flag).
    stop: list[str] = option(
        [],
        help="Stop when the output contains STRING and cut the text before it; repeatable. "
        "\\n and \\t are understood.",
        metavar="STRING",
    )
    ignore_eos: bool = option(
        False, help="Go on generating past <|endoftext|> instead of stopping there."
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        raise_if_problems(self.problems(), "Invalid generation options:")

    def problems(self) -> list[str]:
        """Every invalid value, each named by its command-line flag."""
        p = []
        if self.max_new_tokens < 1:
            p.append(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            p.append(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        elif self.temperature != 0 and not MIN_TEMPERATURE <= self.temperature < math.inf:
            p.append(
                f"--temperature must be 0 (greedy) or from {MIN_TEMPERATURE:g} to a finite "
                f"number, got {self.temperature} (a smaller one overflows the logits; 0 "
                "always takes the most likely token)"
            )
        if self.top_k < 0:
            p.append(f"--top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            p.append(f"--top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            p.append(f"--min-p must be in [0, 1] (0 = off), got {self.min_p}")
        if not 0 < self.repetition_penalty < math.inf:
            p.append(
                f"--repetition-penalty must be > 0 (1 = off, >1 discourages repeats), "
                f"got {self.repetition_penalty}"
            )
        if self.no_repeat_ngram_size < 0:
            p.append(
                f"--no-repeat-ngram-size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}"
            )
        if any(s == "" for s in self.stop):
            p.append("--stop strings must not be empty")
        return p

    @property
    def greedy(self) -> bool:
        """Whether decoding takes the most likely token (temperature 0) instead of sampling."""
        return self.temperature == 0

    @property
    def logits_controls(self) -> tuple[float, int, float, float, float, int]:
        """The controls that act on the logits: requests that share them are processed as one
        batch (EOS, stop strings and the token budget are checked per request)."""
        return (
            self.temperature,
            self.top_k,
            self.top_p,
            self.min_p,
            self.repetition_penalty,
            self.no_repeat_ngram_size,
        )
