"""`gpt2kit eval MODEL SOURCE...`: its options (`EvalConfig`) and the command, which reads the
sources (or a DATA_DIR's validation split) and scores them with `gpt2kit.eval.scorer`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpt2kit.config import flat_names, group, model_option, option
from gpt2kit.data.options import ReadOptions
from gpt2kit.errors import UserError
from gpt2kit.eval.scorer import default_stride, evaluate_ids, summarize
from gpt2kit.formats.hf import load_model, weights_hash
from gpt2kit.runtime import (
    PRECISIONS,
    device_option,
    device_problem,
    keep_freed_memory,
    precision_name,
    precision_problem,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer


@flat_names
@dataclass
class EvalConfig:
    """Options of `gpt2kit eval`."""

    model: str = model_option()
    sources: list[str] = option(
        [],
        help="Text to score: files, folders, globs or hf:NAME (as for gpt2kit prepare; "
        "joined with blank lines), or a prepared DATA_DIR (its validation split).",
        positional=True,
        metavar="SOURCE|DATA_DIR",
    )
    stride: int | None = option(
        None,
        help="Tokens between the starts of two windows; each window scores only its last "
        "STRIDE tokens (equal to --block-size: disjoint blocks). Default: half the window, "
        "at most 512.",
    )
    block_size: int | None = option(
        None, help="Window length in tokens; none: the model's context (1,024 for GPT-2)."
    )
    batch_size: int = option(4, help="Windows scored per forward pass.")
    max_tokens: int | None = option(
        None, help="Score only the first N tokens of the text (a quick estimate)."
    )
    json: bool = option(False, help="Print the results as one JSON object.")
    device: str = device_option()
    precision: str = option(
        "fp32",
        help=f"Numeric precision: {', '.join(PRECISIONS)}. fp32 (the default) gives figures "
        "comparable with published ones; auto is bf16 on GPUs.",
    )
    reading: ReadOptions = group(ReadOptions, "reading the sources")

    def __post_init__(self) -> None:
        problems = []
        if not self.sources:
            problems.append("give at least one SOURCE (a text file, ...) or a prepared DATA_DIR")
        if self.stride is not None and self.stride < 1:
            problems.append(f"--stride must be at least 1, got {self.stride}")
        if self.block_size is not None and self.block_size < 2:
            problems.append(f"--block-size must be at least 2, got {self.block_size}")
        if (
            self.block_size is not None
            and self.stride is not None
            and self.stride > self.block_size
        ):
            problems.append(
                f"--stride ({self.stride}) cannot exceed --block-size ({self.block_size}): "
                "tokens between windows would never be scored"
            )
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < 2:
            problems.append(f"--max-tokens must be at least 2, got {self.max_tokens}")
        problems += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        problems += self.reading.problems()
        if problems:
            raise UserError("Invalid options for eval:", problems)


# --------------------------------------------------------------------------- the library


def _segments(
    config: EvalConfig, tokenizer: Tokenizer
) -> list[tuple[str, np.ndarray | list[int], int]]:
    """What to score: `(description, token ids, chars)` for the joined text sources and for
    each prepared DATA_DIR."""
    from gpt2kit.data import is_prepared_dir, iter_documents, load_prepared

    text_sources, segments = [], []
    for source in config.sources:
        if is_prepared_dir(source):
            data = load_prepared(source)
            if data.tokenizer.fingerprint != tokenizer.fingerprint:
                raise UserError(
                    f"{source} was prepared with the tokenizer {data.tokenizer.name!r}, not the "
                    "model's own; score its raw text instead, or prepare it with "
                    "--tokenizer MODEL_FOLDER."
                )
            segments.append((f"{source} (validation split)", data.val, int(data.meta["val_chars"])))
        else:
            text_sources.append(source)
    if text_sources:
        documents = list(iter_documents(text_sources, config.reading))
        text = "\n\n".join(documents)
        ids = tokenizer.encode(text)
        if not ids:
            raise UserError(f"{', '.join(text_sources)}: no text to score.")
        segments.insert(0, (", ".join(text_sources), ids, len(text)))
    return segments


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Score a model on text: loss, perplexity and bits per character, sliding-window style.

    The windows are those of Hugging Face's perplexity guide (--block-size tokens, a new window
    every --stride tokens, each token scored once), so the figures compare with published
    GPT-2 perplexities. Prints a short table, or one JSON object with --json; returns the dict.
    """
    dev = resolve_device(config.device)
    if dev.type == "cpu":
        keep_freed_memory()  # each batch's logits reuse the last one's pages (15% faster)
    model, tokenizer, folder = load_model(
        config.model, device=dev, dtype=resolve_precision(config.precision, dev)
    )
    block = config.block_size or model.config.n_positions
    if block > model.config.n_positions:
        raise UserError(
            f"--block-size {block} exceeds the model's context of {model.config.n_positions}."
        )
    stride = config.stride or default_stride(block)
    if stride > block:
        raise UserError(
            f"--stride ({stride}) cannot exceed the window of {block} tokens; "
            f"use --stride {default_stride(block)} or leave it out."
        )
    segments = _segments(config, tokenizer)
    nats, scored, chars = 0.0, 0, 0
    progress = sys.stderr.isatty()
    for _, ids, n_chars in segments:
        part = evaluate_ids(
            model,
            tokenizer,
            ids,
            n_chars,
            stride,
            block,
            config.batch_size,
            config.max_tokens,
            progress,
        )
        nats += part["nats"]
        scored += part["tokens"]
        chars += part["chars"]
    result: dict[str, Any] = {
        **(summarize(nats, scored, chars) if len(segments) > 1 else part),
        "stride": stride,
        "block_size": block,
        "sources": [name for name, _, _ in segments],
        "model": {
            "spec": config.model,
            "path": str(folder.resolve()),
            "weights_sha256": weights_hash(folder),
        },
        "device": str(dev),
        "precision": precision_name(model.lm_head.weight.dtype),
    }
    if config.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"model       {result['model']['path']}\n"
            f"text        {'; '.join(result['sources'])}\n"
            f"scored      {scored:,} tokens, {chars:,} characters "
            f"(window {block}, stride {stride})\n"
            f"loss        {result['loss']:.4f} nats/token\n"
            f"perplexity  {result['perplexity']:.3f}\n"
            f"bits/char   {result['bits_per_char']:.4f}\n"
        )
    sys.stdout.flush()
    return result
