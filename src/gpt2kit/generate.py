"""Text generation with a preallocated KV cache: the `Generator` API and `gpt2kit generate`.

A batch of prompts (left-padded, masked) is processed in one forward pass; then each step feeds
one token per row through the cached model. The controls (repetition penalty, no-repeat n-grams,
temperature, top-k, top-p, min-p) are tensor operations on the whole batch's logits, applied in
Hugging Face's order with Hugging Face's semantics. Python looks at the tokens only at check
points (every step on the CPU, every few steps on a GPU) to notice EOS, stop strings and to
stream text. On CUDA the one-token step runs with static shapes captured in a CUDA graph.

Past the model's context window the window slides: when the cache is full, the last
`n_positions // 2` tokens are re-encoded in one forward pass (positions restart at 0) and
decoding goes on. Keeping half the window means a re-encode every `n_positions // 2` tokens
while every token still sees at least half a window of context.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import json
import math
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from collections.abc import Generator as PyGenerator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from gpt2kit.config import option
from gpt2kit.errors import UserError
from gpt2kit.formats.hf import load_model, weights_hash
from gpt2kit.model import GPT2, KVCache
from gpt2kit.runtime import (
    DEVICES,
    PRECISIONS,
    device_problem,
    free_memory,
    precision_name,
    precision_problem,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer

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

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        problems = self.problems()
        if problems:
            raise UserError("Invalid generation options:", problems)

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
        return self.temperature == 0


_P = GenerationParams  # the single source of the defaults below


@dataclass
class GenerateConfig:
    """Options of `gpt2kit generate`."""

    model: str = option(
        help="A Hugging Face-format model folder, a hub id (e.g. gpt2) or a run folder from `gpt2kit train`.",
        positional=True,
        metavar="MODEL",
    )
    prompt: str = option(
        "",
        help="The text to continue ('-' reads it from stdin; empty starts from <|endoftext|>).",
        positional=True,
        metavar="PROMPT",
    )
    max_new_tokens: int = option(_P.max_new_tokens, help="How many tokens to generate at most.")
    temperature: float = option(
        _P.temperature,
        help="Sampling temperature; 0 means greedy decoding (always the most likely token).",
    )
    top_k: int = option(_P.top_k, help="Sample only among the K most likely tokens (0 = off).")
    top_p: float = option(
        _P.top_p,
        help="Nucleus sampling: keep the most likely tokens whose probabilities sum to P (1 = off).",
    )
    min_p: float = option(
        _P.min_p,
        help="Drop tokens less likely than MIN_P times the most likely token's probability (0 = off).",
    )
    repetition_penalty: float = option(
        _P.repetition_penalty,
        help="Penalize every token already in the prompt or the output, as in Hugging Face "
        "(1 = off; 1.1-1.3 is typical).",
    )
    no_repeat_ngram_size: int = option(
        _P.no_repeat_ngram_size,
        help="Never repeat an n-gram of this many tokens (prompt included; 0 = off).",
    )
    stop: list[str] = option(
        [],
        help="Stop when the output contains STRING and cut the text before it; repeatable. "
        "\\n and \\t are understood.",
        metavar="STRING",
    )
    ignore_eos: bool = option(
        _P.ignore_eos, help="Go on generating past <|endoftext|> instead of stopping there."
    )
    seed: int | None = option(
        None,
        help="Random seed: the same seed and options give the same text (none: a fresh random "
        "seed, recorded in --output).",
    )
    num_samples: int = option(
        1, help="How many samples to draw per prompt, each with its own seed derived from --seed."
    )
    prompts_file: str | None = option(
        None,
        help="Read prompts from a file: one prompt a line, or JSONL (.jsonl/.json: a JSON "
        'string or an object with a "prompt" key per line).',
        metavar="FILE",
    )
    output: str | None = option(
        None,
        help="Write one JSON line per sample (text, prompt, every sampling parameter, seed, "
        "model path and weights hash, token count, finish reason) to this file.",
        metavar="FILE.jsonl",
    )
    stream: bool | None = option(
        None,
        help="Print tokens as they are produced; none: when stdout is a terminal and there is "
        "one sample to show (--no-stream never streams).",
    )
    batch_size: int = option(
        16,
        help="Rows (samples of any prompt) decoded together; it changes the speed and memory "
        "use, not the samples a --seed gives.",
    )
    device: str = option("auto", help=f"Where to run: {', '.join(DEVICES)}.")
    precision: str = option(
        "auto",
        help=f"Numeric precision: {', '.join(PRECISIONS)} (auto: bf16 on GPUs, fp32 on CPU).",
    )
    cuda_graph: bool = option(
        True,
        help="On CUDA, capture the one-token decode step in a CUDA graph (--no-cuda-graph: run it eagerly).",
    )
    quantize: str = option(
        "none",
        help="CPU only: 'int8' stores the linear layers' weights as int8 (dynamic quantization), "
        "reading 4x fewer bytes per token: about 3x faster decoding (2.7-3.2x measured at "
        "batch 1), tokens may differ slightly from fp32. 'none' keeps full precision.",
    )

    def __post_init__(self) -> None:
        problems = []
        try:
            self.params()
        except UserError as e:
            problems += e.problems
        if self.num_samples < 1:
            problems.append(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        prompts = None if self.prompts_file is None else Path(self.prompts_file).expanduser()
        if prompts is not None:
            if self.prompt:
                problems.append("give either PROMPT or --prompts-file, not both")
            if prompts.is_dir():
                problems.append(
                    f"--prompts-file {self.prompts_file} is a folder; give a file with one "
                    "prompt a line (or a .jsonl file)"
                )
            elif not prompts.exists():
                problems.append(f"--prompts-file {self.prompts_file} does not exist")
        output = None if self.output is None else Path(self.output).expanduser()
        if output is not None:
            if not output.parent.is_dir():
                problems.append(
                    f"--output {self.output}: its folder does not exist; create it first"
                )
            elif prompts is not None and _same_file(prompts, output):
                problems.append(
                    f"--output {self.output} is the --prompts-file: writing the samples would "
                    "overwrite the prompts; write them to another file"
                )
        if self.stream and (self.num_samples > 1 or self.prompts_file is not None):
            problems.append(
                "--stream shows one sample as it is produced; it cannot be combined with "
                "--num-samples > 1 or --prompts-file (drop --stream, or use --output)"
            )
        if self.quantize not in QUANTIZE:
            problems.append(
                f"--quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )
        problems += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        if problems:
            raise UserError("Invalid options for generate:", problems)

    def params(self) -> GenerationParams:
        """The decoding controls of this config (`--stop` escapes \\n, \\t, \\\\ resolved)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationParams)}
        values["stop"] = tuple(_unescape(s) for s in self.stop)
        return GenerationParams(**values)


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one existing regular file."""
    try:
        return a.is_file() and b.is_file() and os.path.samefile(a, b)
    except OSError:
        return False


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass
class Completion:
    """One generated sample: its text, token ids and why it ended (`stop`, `eos` or `length`).

    `text` is cut before a stop string; `token_ids` then run up to and including the token
    that completed it, so `len(token_ids)` is always the number of tokens generated.
    `prompt_index` and `sample_index` place it among the prompts and samples of the call.
    """

    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_index: int = 0
    sample_index: int = 0
    prompt_tokens: int = 0
    seed: int | None = None


# --------------------------------------------------------------------------- logits controls


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


class _Noise:
    """The Exponential(1) noise of sampling: one generator, and so one stream, per row.

    Each row draws `steps` steps of noise at once with one call (B calls every `steps` steps);
    on the CPU a block of draws equals the same draws made one step at a time, and one step
    per call keeps the buffer small. On other devices 8 steps at once keep the per-row calls
    out of most steps. Either way a row's noise depends only on its seed and the step.
    """

    def __init__(
        self, seeds: list[int], vocab: int, device: torch.device, steps: int | None = None
    ) -> None:
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.steps = steps or (1 if device.type == "cpu" else 8)
        self.block = torch.empty((len(seeds), self.steps, vocab), device=device)  # (B, K, V)
        self.t = 0

    def next(self) -> torch.Tensor:
        """The noise of the next step (B, V)."""
        k = self.t % self.steps
        if k == 0:
            for row, gen in zip(self.block, self.gens, strict=True):
                row.exponential_(1, generator=gen)
        self.t += 1
        return self.block[:, k]


# --------------------------------------------------------------------------- decoding engine


class _Stepper:
    """Runs the model over a KV cache: a prefill of many tokens, then one-token steps.

    Eager mode writes the cache in slices and attends to the filled part. Static mode (used on
    CUDA) writes at a device-side index and attends over every slot with a preallocated mask, so
    each step has the same shapes and can be captured once in a CUDA graph and replayed.
    """

    def __init__(self, model: GPT2, batch: int, capacity: int, static: bool, graph: bool) -> None:
        dev, dtype = model.transformer.wte.weight.device, model.transformer.wte.weight.dtype
        self.model, self.static, self.graph_wanted = model, static, graph and static
        self.cache = KVCache(model.config, batch, capacity, device=dev, dtype=dtype)
        self.capacity = capacity
        self.valid = torch.zeros((batch, capacity), dtype=torch.bool, device=dev)  # real slots
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=dev)  # next position ids
        self.tok = torch.zeros((batch, 1), dtype=torch.long, device=dev)
        self.index = torch.zeros(1, dtype=torch.long, device=dev)
        self.padded = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_out: torch.Tensor | None = None

    @property
    def full(self) -> bool:
        return self.cache.length >= self.capacity

    def prefill(self, idx: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Reset the cache and encode `idx` (B, T) whose real tokens are `real` (B, T);
        returns the next-token logits (B, V)."""
        self.cache.index = None
        self.cache.reset()
        T = idx.size(1)
        self.padded = not bool(real.all())
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        logits = self.model(
            idx,
            attention_mask=real.long() if self.padded else None,
            position_ids=positions,
            cache=self.cache,
            last_only=True,
        )[:, -1, :]
        self.valid.zero_()
        self.valid[:, :T] = real
        self.pos.copy_(positions[:, -1:] + 1)
        return logits

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); returns the next-token logits (B, V)."""
        slot = self.cache.length
        self.valid[:, slot] = True
        if self.static:
            self.tok.copy_(token.unsqueeze(1))
            self.index.fill_(slot)
            if self.graph_wanted:
                if self.graph is None:
                    self._capture()
                self.graph.replay()
                logits = self.graph_out
            else:
                logits = self._static_forward()
            self.cache.length = slot + 1
        else:
            mask = self.valid[:, None, None, : slot + 1] if self.padded else None  # (B,1,1,S)
            logits = self.model(
                token.unsqueeze(1), attention_mask=mask, position_ids=self.pos, cache=self.cache
            )[:, -1, :]
        self.pos += 1
        return logits

    def _static_forward(self) -> torch.Tensor:
        self.cache.index = self.index
        length = self.cache.length
        try:
            return self.model(
                self.tok,
                attention_mask=self.valid[:, None, None, :],  # (B, 1, 1, capacity)
                position_ids=self.pos,
                cache=self.cache,
            )[:, -1, :]
        finally:
            self.cache.index = None
            self.cache.length = length

    def _capture(self) -> None:
        # Warm up on a side stream (as PyTorch asks before capture), then record one step. The
        # warm-up writes this step's slot, which the replay right after writes again.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._static_forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_out = self._static_forward()


class _Row:
    """The Python side of one row: its tokens, EOS and stop-string checks, streamed text.

    Text is decoded only when stop strings or streaming need it, and incrementally: a tail of
    recent tokens is re-decoded and folded into a fixed prefix once it ends on a whole
    character (byte-level BPE decodes piecewise exactly at such boundaries).
    """

    def __init__(self, tokenizer: Tokenizer, params: GenerationParams, track_text: bool) -> None:
        self.tokenizer = tokenizer
        self.eos = None if params.ignore_eos else tokenizer.eos_id
        self.stops = params.stop
        self.max_stop = max((len(s) for s in self.stops), default=0)
        self.track_text = track_text or bool(self.stops)
        self.ids: list[int] = []
        self.finish: str | None = None
        self.cut: int | None = None
        self._fixed, self._tail = "", 0
        self._searched = 0
        self.emitted = 0

    def text_so_far(self) -> str:
        tail = self.tokenizer.decode(self.ids[self._tail :])
        if len(self.ids) - self._tail >= 32 and not tail.endswith("\ufffd"):
            self._fixed, self._tail, tail = self._fixed + tail, len(self.ids), ""
        return self._fixed + tail

    def feed(self, new: list[int]) -> None:
        """Take this row's tokens since the last check, stopping at EOS or a stop string."""
        for tok in new:
            if tok == self.eos:
                self.finish = "eos"
                return
            self.ids.append(tok)
            if self.stops:
                text = self.text_so_far()
                begin = max(0, self._searched - self.max_stop + 1)
                hits = [i for i in (text.find(s, begin) for s in self.stops) if i >= 0]
                if hits:
                    self.cut, self.finish = min(hits), "stop"
                    return
                self._searched = len(text.rstrip("\ufffd"))

    def final_text(self) -> str:
        text = self.text_so_far() if self.track_text else self.tokenizer.decode(self.ids)
        return text[: self.cut] if self.cut is not None else text

    def new_text(self) -> str:
        """Text not shown yet, holding back an unfinished character or a possible stop start."""
        if self.finish is not None:
            text, safe = self.final_text(), None
        else:
            text = self.text_so_far()
            safe = len(text.rstrip("\ufffd"))
            for s in self.stops:
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:k]):
                        safe -= k
                        break
        end = len(text) if safe is None else safe
        if end <= self.emitted:
            return ""
        piece, self.emitted = text[self.emitted : end], end
        return piece


# --------------------------------------------------------------------------- the generator


def new_seed() -> int:
    """A fresh random seed (recorded, so a sample drawn with it can be drawn again)."""
    return secrets.randbelow(2**31)


QUANTIZE = ("none", "int8")


def quantize_int8(model: GPT2) -> GPT2:
    """A copy of `model` whose `nn.Linear` layers hold int8 weights (PyTorch dynamic quantization).

    Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth;
    int8 weights are a quarter of fp32's bytes. Activations are quantized on the fly per
    batch, so the logits differ slightly from fp32 (greedy tokens can diverge). CPU only.
    """
    import warnings

    with warnings.catch_warnings():  # eager-mode quantization is marked for migration to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


class Generator:
    """A loaded model ready to generate many times: `Generator.from_pretrained(MODEL)`.

    `generate` returns `Completion`s for one or many prompts (with `num_samples` each),
    `stream` yields the text of one sample as it is produced, `generate_ids` works on token
    ids. On CUDA the decode step uses a static cache and, with `cuda_graph`, a CUDA graph.
    """

    def __init__(
        self,
        model: GPT2,
        tokenizer: Tokenizer,
        folder: Path | None = None,
        *,
        cuda_graph: bool = True,
        static_cache: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.folder = folder
        is_cuda = self.device.type == "cuda"
        self.static_cache = is_cuda if static_cache is None else static_cache
        self.cuda_graph = cuda_graph and is_cuda and self.static_cache
        self._stepper: _Stepper | None = None  # kept between calls when it holds a CUDA graph
        self.quantize = "none"  # set by from_pretrained

    @classmethod
    def from_pretrained(
        cls,
        spec: str | Path,
        device: str = "auto",
        precision: str = "auto",
        cuda_graph: bool = True,
        quantize: str = "none",
    ) -> Generator:
        """Load MODEL (folder, hub id or run folder) onto `device` in `precision`.

        `quantize="int8"` (CPU only) stores the linear layers' weights in int8; see
        `quantize_int8`.
        """
        dev = resolve_device(device)
        if quantize == "int8" and dev.type != "cpu":
            raise UserError(
                f"--quantize int8 runs on the CPU only; this run is on {dev.type}. "
                "Drop --quantize (GPUs decode in bf16), or add --device cpu."
            )
        dtype = torch.float32 if quantize == "int8" else resolve_precision(precision, dev)
        model, tokenizer, folder = load_model(spec, device=dev, dtype=dtype)
        if quantize == "int8":
            model = quantize_int8(model)
        generator = cls(model, tokenizer, folder, cuda_graph=cuda_graph)
        generator.quantize = quantize
        return generator

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer.wte.weight.dtype

    @cached_property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weight files the model was loaded from (None if built in memory)."""
        return weights_hash(self.folder) if self.folder is not None else None

    # -- public API

    def generate_ids(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = _P.max_new_tokens,
        temperature: float = _P.temperature,
        seed: int | None = None,
        stop_at_eos: bool = True,
        **controls,
    ) -> list[tuple[list[int], str]]:
        """Continue each prompt (a list of token ids); returns `(new_ids, finish_reason)` each.

        Prompts of different lengths are left-padded and masked, so each row gives the tokens
        it would give alone. `controls` are other `GenerationParams` fields (top_k, stop, ...).
        """
        params = GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            ignore_eos=not stop_at_eos,
            **controls,
        )
        if not prompts:
            return []
        seed = new_seed() if seed is None else seed
        seeds = [sample_seed(seed, i, 0) for i in range(len(prompts))]
        rows = _drain(self._run(prompts, params, seeds, False), None)
        return [(r.ids, r.finish) for r in rows]

    def iter_generate(
        self,
        prompts: str | list[str],
        params: GenerationParams | None = None,
        *,
        seed: int | None = None,
        num_samples: int = 1,
        batch_size: int | None = None,
        on_text: Callable[[int, str], None] | None = None,
        **controls,
    ) -> Iterator[Completion]:
        """Like `generate`, but yields each batch's `Completion`s as soon as it is done."""
        params = dataclasses.replace(params or GenerationParams(), **controls)
        if num_samples < 1:
            raise UserError(f"num_samples must be at least 1, got {num_samples}")
        if batch_size is not None and batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        seed = new_seed() if seed is None else seed
        n_rows = len(texts) * num_samples  # row r: prompt r // num_samples, sample r % ...
        per_batch = batch_size or max(1, n_rows)
        for first in range(0, n_rows, per_batch):  # rows and ids are made a batch at a time
            chunk = [divmod(r, num_samples) for r in range(first, min(n_rows, first + per_batch))]
            needed = sorted({p for p, _ in chunk})
            ids = dict(
                zip(needed, self.tokenizer.encode_batch([texts[p] for p in needed]), strict=True)
            )
            callback = None if on_text is None else (lambda i, t, o=first: on_text(o + i, t))
            seeds = [sample_seed(seed, p, s) for p, s in chunk]
            done = _drain(
                self._run([ids[p] for p, _ in chunk], params, seeds, on_text is not None),
                callback,
            )
            for (p, s), row in zip(chunk, done, strict=True):
                yield Completion(
                    prompt=texts[p],
                    text=row.final_text(),
                    token_ids=row.ids,
                    finish_reason=row.finish,
                    prompt_index=p,
                    sample_index=s,
                    prompt_tokens=len(ids[p]),
                    seed=seed,
                )

    def generate(
        self,
        prompts: str | list[str],
        params: GenerationParams | None = None,
        *,
        seed: int | None = None,
        num_samples: int = 1,
        batch_size: int | None = None,
        on_text: Callable[[int, str], None] | None = None,
        **controls,
    ) -> list[Completion]:
        """Continue each prompt text; returns `num_samples` `Completion`s per prompt, in order.

        Controls come from `params` and/or keyword arguments named as `GenerationParams`
        fields (`max_new_tokens=50, temperature=0.8, top_p=0.9, stop=["\\n\\n"]`). All rows are
        one batch unless `batch_size` is given. The same `seed` gives the same completions
        however the rows are batched (each sample has its own generator, see `sample_seed`);
        `on_text(index, piece)` receives each completion's text as it is produced.
        """
        return list(
            self.iter_generate(
                prompts,
                params,
                seed=seed,
                num_samples=num_samples,
                batch_size=batch_size,
                on_text=on_text,
                **controls,
            )
        )

    def stream(
        self,
        prompt: str,
        params: GenerationParams | None = None,
        *,
        seed: int | None = None,
        **controls,
    ) -> Iterator[str]:
        """Yield the continuation of `prompt` piece by piece as it is generated."""
        params = dataclasses.replace(params or GenerationParams(), **controls)
        seed = new_seed() if seed is None else seed
        run = self._run([self.tokenizer.encode(prompt)], params, [sample_seed(seed, 0, 0)], True)
        for _, piece in run:
            yield piece

    # -- internals

    def _check_memory(self, batch: int, capacity: int) -> None:
        """Refuse a batch whose KV cache and logits alone exceed the device's free memory.

        A lower bound (activations and the prefill's attention come on top), so it refuses
        only what cannot work, before anything is allocated.
        """
        cfg, itemsize = self.model.config, self.dtype.itemsize
        cache = 2 * cfg.n_layer * capacity * cfg.n_embd * itemsize  # keys and values
        logits = cfg.vocab_size * (itemsize + 3 * 4)  # the logits, float32 scores, probs, noise
        need = batch * (cache + logits)
        free = free_memory(self.device)
        if free is not None and need > free:
            fits = max(1, int(free // (cache + logits)) // 2)
            raise UserError(
                f"--batch-size {batch} needs at least {need / 2**30:,.1f} GiB on {self.device} "
                f"for the KV cache and the logits, and {free / 2**30:,.1f} GiB is free: use "
                f"--batch-size {fits} or less."
            )

    def _get_stepper(self, batch: int, capacity: int) -> _Stepper:
        s = self._stepper
        if (
            s is not None
            and s.cache.k.size(1) == batch
            and s.capacity == capacity
            and s.cache.k.device == self.device
            and s.cache.k.dtype == self.dtype
        ):
            return s
        s = _Stepper(self.model, batch, capacity, self.static_cache, self.cuda_graph)
        self._stepper = s if self.cuda_graph else None  # a captured graph is worth keeping
        return s

    @torch.inference_mode()
    def _run(
        self,
        prompts: list[list[int]],
        params: GenerationParams,
        seeds: list[int],
        want_text: bool,
    ) -> PyGenerator[tuple[int, str], None, list[_Row]]:
        """Decode one batch, row i sampling with `seeds[i]`. Yields `(row, new_text)` when
        `want_text`; returns the rows."""
        dev, eos = self.device, self.tokenizer.eos_id
        n_ctx = self.model.config.n_positions
        prompts = [p if p else [eos] for p in prompts]
        B, P, N = len(prompts), max(len(p) for p in prompts), params.max_new_tokens
        capacity = min(P + N, n_ctx)
        self._check_memory(B, capacity)
        # Every row's history, left-padded; the generated part grows as tokens come (a huge
        # max_new_tokens costs only what is generated).
        width = P + min(N, 256)
        seq = torch.full((B, width), eos, dtype=torch.long)
        real = torch.ones((B, width), dtype=torch.bool)  # False on padding
        for i, p in enumerate(prompts):
            seq[i, P - len(p) : P] = torch.tensor(p)
            real[i, : P - len(p)] = False
        seq, real = seq.to(dev), real.to(dev)
        pad = torch.tensor([P - len(p) for p in prompts], device=dev)

        stepper = self._get_stepper(B, capacity)
        keep = max(1, n_ctx // 2)  # tokens re-encoded when the window slides
        start = max(0, P - n_ctx)
        logits = stepper.prefill(seq[:, start:P], real[:, start:P])  # (B, V)
        V = logits.size(-1)
        noise = None if params.greedy else _Noise(seeds, V, dev)

        seen = None
        if params.repetition_penalty != 1.0:  # (B, V+1): column V collects the padding
            seen = torch.zeros((B, V + 1), dtype=torch.bool, device=dev)
            seen.scatter_(1, seq[:, :P].masked_fill(~real[:, :P], V), True)
            seen = seen[:, :V]
        n = params.no_repeat_ngram_size
        unused = None  # a padded vocabulary's extra ids (no token) are never produced
        if self.tokenizer.vocab_size < V:
            unused = torch.arange(V, device=dev) >= self.tokenizer.vocab_size

        rows = [_Row(self.tokenizer, params, want_text) for _ in range(B)]
        # Stop strings and streaming need each row's text at every check; otherwise only
        # "has every row produced EOS?" is asked, on the device, and rows are read at the end.
        per_row = want_text or bool(params.stop)
        at_eos = (
            None if per_row or params.ignore_eos else torch.zeros(B, dtype=torch.bool, device=dev)
        )
        every = 1 if (want_text or dev.type != "cuda") else 8  # host checks (each one syncs)
        checked = steps = 0
        for t in range(N):
            scores = logits.float()
            if seen is not None:
                scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
            if n > 0:
                scores = scores.masked_fill(ngram_bans(seq, P + t, n, pad, V), float("-inf"))
            if unused is not None:
                scores = scores.masked_fill(unused, float("-inf"))
            if params.greedy:
                token = scores.argmax(dim=-1)  # (B,)
            else:
                scores = warp_logits(
                    scores, params.temperature, params.top_k, params.top_p, params.min_p
                )
                token = sample_token(scores.softmax(dim=-1), noise.next())
            if P + t == seq.size(1):  # double the history (a Python int test, no sync)
                more = min(seq.size(1), N - t)
                seq = torch.cat([seq, seq.new_full((B, more), eos)], dim=1)
                real = torch.cat([real, real.new_ones((B, more))], dim=1)
            seq[:, P + t] = token
            steps = t + 1
            if seen is not None:
                seen.scatter_(1, token.unsqueeze(1), True)
            if at_eos is not None:
                at_eos |= token == eos

            last = t == N - 1
            if last or t + 1 - checked >= every:
                if per_row:
                    new = seq[:, P + checked : P + t + 1].tolist()
                    checked = t + 1
                    for i, row in enumerate(rows):
                        if row.finish is None:
                            row.feed(new[i])
                            if want_text and (piece := row.new_text()):
                                yield i, piece
                    if all(r.finish is not None for r in rows):
                        break
                else:
                    checked = t + 1
                    if at_eos is not None and bool(at_eos.all()):
                        break
            if last:
                break
            if stepper.full:  # slide the window: re-encode the last `keep` tokens
                end = P + t + 1
                logits = stepper.prefill(seq[:, end - keep : end], real[:, end - keep : end])
            else:
                logits = stepper.step(token)

        if not per_row:
            for row, new in zip(rows, seq[:, P : P + steps].tolist(), strict=True):
                row.feed(new)
        for i, row in enumerate(rows):
            if row.finish is None:
                row.finish = "length"
                if want_text and (piece := row.new_text()):
                    yield i, piece
        return rows


def _drain(
    run: PyGenerator[tuple[int, str], None, list[_Row]],
    on_text: Callable[[int, str], None] | None,
) -> list[_Row]:
    """Run a decoding generator to its end, passing streamed pieces on; returns its rows."""
    while True:
        try:
            i, piece = next(run)
        except StopIteration as done:
            return done.value
        if on_text is not None:
            on_text(i, piece)


# --------------------------------------------------------------------------- the command


# What generate reads of --prompts-file or stdin at most, so that endless input (a pipe from
# `yes`, /dev/zero) stops with a message instead of filling memory.
MAX_PROMPT_BYTES = 64 << 20
MAX_PROMPTS = 1_000_000
_SPLIT_PROMPTS = (
    f"split it into files of at most {MAX_PROMPT_BYTES >> 20} MB and {MAX_PROMPTS:,} prompts"
)


def _text_blocks(stream: BinaryIO, what: str) -> Iterator[str]:
    """The UTF-8 text of `stream`, block by block, read once (so pipes work like files).

    Raises `UserError` for binary data (a NUL byte), bytes that are not UTF-8, and input
    longer than `MAX_PROMPT_BYTES`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while True:
        block = stream.read(1 << 20)
        if b"\x00" in block:
            raise UserError(
                f"{what} is not text (a NUL byte at byte offset {offset + block.index(0)}); "
                "give a text file with one prompt a line."
            )
        if offset + len(block) > MAX_PROMPT_BYTES:
            raise UserError(
                f"{what} holds more than {MAX_PROMPT_BYTES >> 20} MB of prompts; {_SPLIT_PROMPTS}."
            )
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise UserError(
                f"{what} is not UTF-8 text: byte offset {offset - pending + e.start} cannot be "
                "decoded; save the prompts as UTF-8."
            ) from None
        offset += len(block)
        if text:
            yield text
        if not block:
            return


def _prompt_lines(stream: BinaryIO, what: str) -> Iterator[tuple[int, str]]:
    """`(line number, line)` of every non-blank line of `stream` ('\\r\\n' ends a line too)."""
    rest, number = "", 0
    for block in _text_blocks(stream, what):
        lines = (rest + block).split("\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            if line.strip():
                yield number, line.removesuffix("\r")
    if rest.strip():
        yield number + 1, rest.removesuffix("\r")


def read_prompts(config: GenerateConfig) -> list[str]:
    """The prompts of a `generate` command: PROMPT, stdin (`-`) or the lines of --prompts-file.

    Stdin and --prompts-file are read once and may be pipes; at most `MAX_PROMPT_BYTES` and
    `MAX_PROMPTS` prompts are read. Every bad line is reported at once (the first ten).
    """
    if config.prompts_file is None:
        if config.prompt == "-":
            text = "".join(_text_blocks(sys.stdin.buffer, "stdin"))
            return [text[:-1] if text.endswith("\n") else text]
        return [config.prompt]
    path = Path(config.prompts_file).expanduser()
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    prompts: list[str] = []
    problems: list[str] = []
    try:
        with open(path, "rb") as f:
            for number, line in _prompt_lines(f, str(path)):
                if len(prompts) == MAX_PROMPTS:
                    raise UserError(
                        f"{path} holds more than {MAX_PROMPTS:,} prompts; {_SPLIT_PROMPTS}."
                    )
                if not jsonl:
                    prompts.append(line)
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(f"line {number}: not valid JSON ({e.msg})")
                    continue
                if isinstance(item, dict) and isinstance(item.get("prompt"), str):
                    prompts.append(item["prompt"])
                elif isinstance(item, str):
                    prompts.append(item)
                else:
                    problems.append(
                        f'line {number}: expected a JSON string or an object with a "prompt"'
                    )
    except OSError as e:
        raise UserError(f"Could not read --prompts-file {path}: {e.strerror or e}.") from None
    if problems:
        raise UserError(f"Could not read the prompts in {path}:", problems[:10])
    if not prompts:
        raise UserError(f"{path} holds no prompts (blank lines are skipped).")
    return prompts


def provenance(generator: Generator, config: GenerateConfig, params: GenerationParams) -> dict:
    """The fields shared by every JSONL record of a run: parameters, model identity, device."""
    from gpt2kit import __version__

    return {
        "parameters": {
            **asdict(params),
            "stop": list(params.stop),
            "num_samples": config.num_samples,
            "batch_size": config.batch_size,
        },
        "model": {
            "spec": config.model,
            "path": str(generator.folder.resolve()) if generator.folder else None,
            "weights_sha256": generator.weights_sha256,
        },
        "device": str(generator.device),
        "precision": precision_name(generator.dtype),
        "quantize": generator.quantize,
        "gpt2kit_version": __version__,
    }


def run_generate(config: GenerateConfig) -> None:
    """Continue a prompt (or every prompt of --prompts-file) and print or record the samples.

    Greedy with --temperature 0, else sampled with the given controls. Text streams to the
    terminal as it is produced; with --output each sample becomes one JSON line recording the
    prompt, the text, every sampling parameter, the seed, the model's path and weights hash,
    the number of tokens and the finish reason (stop, eos or length).
    """
    prompts = read_prompts(config)
    params = config.params()
    n_rows = len(prompts) * config.num_samples
    stream = config.stream if config.stream is not None else sys.stdout.isatty() and n_rows == 1
    generator = Generator.from_pretrained(
        config.model,
        config.device,
        config.precision,
        cuda_graph=config.cuda_graph,
        quantize=config.quantize,
    )
    seed = config.seed if config.seed is not None else new_seed()
    record_base = provenance(generator, config, params) if config.output else None
    show = config.output is None or stream

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    written = 0
    with contextlib.ExitStack() as stack:
        out = None
        if config.output is not None:
            path = Path(config.output).expanduser()
            out = stack.enter_context(open(path, "w", encoding="utf-8"))
        if stream:
            write(prompts[0])
        for c in generator.iter_generate(
            prompts,
            params,
            seed=seed,
            num_samples=config.num_samples,
            batch_size=config.batch_size,
            on_text=(lambda _, piece: write(piece)) if stream else None,
        ):
            written += 1
            if stream:
                write("\n")
            elif show:
                if n_rows > 1:
                    sys.stdout.write(
                        f"--- prompt {c.prompt_index + 1}, sample {c.sample_index + 1} "
                        f"({c.finish_reason}) ---\n"
                    )
                sys.stdout.write(c.prompt + c.text + "\n")
            if out is not None:
                record = {
                    "prompt": c.prompt,
                    "text": c.text,
                    "prompt_index": c.prompt_index,
                    "sample_index": c.sample_index,
                    "finish_reason": c.finish_reason,
                    "num_tokens": len(c.token_ids),
                    "prompt_tokens": c.prompt_tokens,
                    "seed": c.seed,
                    **record_base,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
        sys.stdout.flush()
    if config.output is not None:
        sys.stderr.write(f"Wrote {written} samples to {config.output}\n")
