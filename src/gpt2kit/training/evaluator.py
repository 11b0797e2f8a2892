"""Validation during training, on its cadence: the scorer of `gpt2kit eval`, a few samples, the
best validation loss so far and early stopping; and, before the first step of a fresh
fine-tuning run, the starting model's figures and samples (what the run report sets beside the
tuned model's)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gpt2kit.eval import evaluate_ids
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer
from gpt2kit.training.checkpoint import TrainState
from gpt2kit.training.config import EvalOptions
from gpt2kit.training.metrics import Metrics, Record


class Evaluator:
    """Scores the model on the validation tokens every `eval_every` steps and at the end.

    The scorer is `gpt2kit eval`'s, over disjoint windows of the training block size, so the
    figures equal what `gpt2kit eval RUN_DIR DATA_DIR` reports. Each evaluation is written to
    `metrics`, said with `say`, kept in `history`, and noted in `state` (the best loss so far,
    and how many evaluations in a row did not beat it, for `out_of_patience`).
    """

    def __init__(
        self,
        model: GPT2,
        tokenizer: Tokenizer,
        val_tokens: np.ndarray,
        val_chars: int,
        block_size: int,
        batch_size: int,
        autocast: contextlib.AbstractContextManager,
        options: EvalOptions,
        seed: int,
        state: TrainState,
        metrics: Metrics,
        say: Callable[[str], None],
    ) -> None:
        self.model, self.tokenizer, self.autocast = model, tokenizer, autocast
        self.val_tokens, self.val_chars, self.batch_size = val_tokens, val_chars, batch_size
        self.window = min(block_size, max(2, len(val_tokens)))  # the training block size
        self.options, self.seed, self.state = options, seed, state
        self.metrics, self.say = metrics, say
        self.history: list[Record] = []  # the evaluations of trained weights, this invocation
        self.base: Record | None = None  # the starting model's evaluation (`run_base`)

    @property
    def last(self) -> Record | None:
        """The latest evaluation of this invocation, or None."""
        return self.history[-1] if self.history else None

    def should_run(self, step: int, final: bool = False) -> bool:
        """Whether `step` is on the cadence (every `eval_every` steps), or `final` (the last
        step of the run or of its time budget)."""
        return step % self.options.eval_every == 0 or final

    def maybe_run(self, step: int, final: bool = False) -> bool:
        """Evaluate when `should_run`; True when that evaluation is a new best."""
        if not self.should_run(step, final):
            return False
        record = self.run(step)
        return self.state.note_evaluation(step, record["val_loss"], record["val_bpc"])

    def run_base(self, init: str) -> Record | None:
        """Evaluate the starting model of a fresh fine-tuning run (`init` is not `scratch`, no
        step taken yet: not on resume), so that the report can show what training bought.

        The record is an `eval` at step 0 marked `"base": true`, with the samples of the same
        prompts and seed as every later evaluation. It is not a candidate for the best model
        (nothing is exported to `best/`), and early stopping's patience does not count it.
        Returns the record, or None when there is no starting model to evaluate."""
        if init == "scratch" or self.state.step > 0:
            return None
        self.base = self.run(0, base=True)
        return self.base

    def run(self, step: int, base: bool = False) -> Record:
        """Evaluate now: the record (loss, perplexity, bits per character, samples), which is
        also written to the metrics and said; `base`: the starting model's (see `run_base`),
        kept out of `history`."""
        self.model.eval()
        with self.autocast:
            scores = evaluate_ids(
                self.model,
                self.tokenizer,
                self.val_tokens,
                self.val_chars,
                stride=self.window,
                block_size=self.window,
                batch_size=self.batch_size,
                max_tokens=self.options.eval_tokens,
            )
        record: Record = {
            "type": "eval",
            "step": step,
            "tokens_seen": self.state.tokens_seen,
            "val_loss": scores["loss"],
            "val_ppl": math.exp(min(scores["loss"], 50.0)),
            "val_bpc": scores["bits_per_char"],
            "val_tokens": scores["tokens"],
            "val_stride": self.window,
        }
        if base:
            record["base"] = True
        if self.options.samples:
            record["sample_prompts"], record["samples"] = self._samples()
            record["sample_seed"] = self.seed
        self.model.train()
        self.metrics.write(record)
        if not base:
            self.history.append(record)
        self.say(
            f"{'starting model' if base else f'step {step}'}: val loss {record['val_loss']:.4f}, ppl {record['val_ppl']:.2f}, bpc {record['val_bpc']:.3f}"
        )
        return record

    def out_of_patience(self) -> bool:
        """Whether early stopping is due: `patience` evaluations in a row without a better loss."""
        patience = self.options.patience
        return patience is not None and self.state.bad_evals >= patience

    @torch.no_grad()
    def _samples(self) -> tuple[list[str], list[str]]:
        """A few short samples from fixed prompts (the start of a text, and the first val
        tokens) and the same seed at every evaluation: the prompts' texts and the samples'
        (each prompt included)."""
        from gpt2kit.generate import Generator

        gen = Generator(self.model, self.tokenizer, cuda_graph=False)
        prompts: list[list[int]] = [[]]
        if len(self.val_tokens) > 8:
            prompts.append([int(t) for t in self.val_tokens[:8]])
        n = self.options.samples
        prompts = (prompts * n)[:n]
        room = self.model.config.n_positions - max(len(p) for p in prompts)
        results = gen.generate_ids(
            prompts,
            max_new_tokens=max(1, min(self.options.sample_tokens, room)),
            temperature=0.8,
            seed=self.seed,
        )
        texts = [
            self.tokenizer.decode(p + ids) for p, (ids, _) in zip(prompts, results, strict=True)
        ]
        return [self.tokenizer.decode(p) for p in prompts], texts


SAMPLE_KEYS = ("samples", "sample_prompts", "sample_seed")


def without_samples(record: Record | None) -> dict[str, Any] | None:
    """`record` without its samples, their prompts and seed (what the summary keeps of an
    evaluation)."""
    return {k: v for k, v in record.items() if k not in SAMPLE_KEYS} if record else None
