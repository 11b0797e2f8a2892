"""The `Generator` API: a loaded model that continues prompts, built on the decoding engine.

`Generator.from_pretrained(MODEL)` loads a model folder, hub id or run folder (optionally with
int8 weights on the CPU); `generate` returns `Completion`s for one or many prompts with
`num_samples` each, `iter_generate` yields them batch by batch, `stream` yields the text of
one sample as it is produced and `generate_ids` works on token ids. Each call decodes its rows
as the slots of a `DecodeEngine`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from collections.abc import Generator as PyGenerator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from gpt2kit.errors import UserError
from gpt2kit.formats.hf import load_model, weights_hash
from gpt2kit.generate.engine import DecodeEngine, Request
from gpt2kit.generate.output import SampleOutput
from gpt2kit.generate.params import GenerationParams
from gpt2kit.generate.processors import new_seed, sample_seed
from gpt2kit.model import GPT2
from gpt2kit.runtime import (
    auto_cpu_precision,
    free_memory,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer

QUANTIZE = ("none", "int8")


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
        self._engine: DecodeEngine | None = None  # kept between calls when it holds a CUDA graph
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

        `precision="auto"` on the CPU keeps fp32 unless this machine decodes a model of this
        width faster in bf16 (measured once per machine: `runtime.auto_cpu_precision`).
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
        if dev.type == "cpu":
            keep_freed_memory()  # prompts' logits and caches are allocated again per request
        model, tokenizer, folder = load_model(spec, device=dev, dtype=dtype)
        if precision == "auto" and dev.type == "cpu" and quantize == "none":
            model = model.to(auto_cpu_precision("decode", model.config.n_embd))
        if quantize == "int8":
            model = quantize_int8(model)
        generator = cls(model, tokenizer, folder, cuda_graph=cuda_graph)
        generator.quantize = quantize
        return generator

    @property
    def device(self) -> torch.device:
        """The device the model is on."""
        return self.model.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point type."""
        return self.model.transformer.wte.weight.dtype

    @cached_property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weight files the model was loaded from (None if built in memory)."""
        return weights_hash(self.folder) if self.folder is not None else None

    # -- public API

    def generate_ids(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = GenerationParams.max_new_tokens,
        temperature: float = GenerationParams.temperature,
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
        if free is not None and self.device.type == "cuda":
            # PyTorch keeps freed blocks (an earlier call's cache and logits) for reuse: free
            # to this process, though not to the driver's count
            free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(
                self.device
            )
            if self._engine is not None:  # a kept engine that will not fit is dropped first
                free += self._engine.runner.cache.k.nbytes * 2
        if free is not None and need > free:
            fits = max(1, int(free // (cache + logits)) // 2)
            raise UserError(
                f"--batch-size {batch} needs at least {need / 2**30:,.1f} GiB on {self.device} "
                f"for the KV cache and the logits, and {free / 2**30:,.1f} GiB is free: use "
                f"--batch-size {fits} or less."
            )

    def _engine_for(self, batch: int, capacity: int) -> DecodeEngine:
        """An idle engine of `batch` slots and `capacity` columns (a kept one when it fits)."""
        e = self._engine
        if (
            e is not None
            and e.slots == batch
            and e.capacity == capacity
            and e.runner.cache.k.device == self.device
            and e.runner.cache.k.dtype == self.dtype
        ):
            e.reset()  # a run left unfinished (a stream closed early) leaves busy slots
            return e
        self._engine = None  # its cache and graph are freed before the new one is made
        e = DecodeEngine(
            self.model,
            self.tokenizer,
            batch,
            capacity,
            static=self.static_cache,
            cuda_graph=self.cuda_graph,
        )
        self._engine = e if self.cuda_graph else None  # a captured graph is worth keeping
        return e

    @torch.inference_mode()
    def _run(
        self,
        prompts: list[list[int]],
        params: GenerationParams,
        seeds: list[int],
        want_text: bool,
    ) -> PyGenerator[tuple[int, str], None, list[SampleOutput]]:
        """Decode one batch, row i sampling with `seeds[i]`. Yields `(row, new_text)` when
        `want_text`; returns the rows' outputs."""
        n_ctx = self.model.config.n_positions
        P = max(len(p) or 1 for p in prompts)  # an empty prompt starts from EOS
        capacity = min(P + params.max_new_tokens, n_ctx)
        self._check_memory(len(prompts), capacity)
        engine = self._engine_for(len(prompts), capacity)
        slots = engine.admit_many(
            [Request(p, params, s, want_text) for p, s in zip(prompts, seeds, strict=True)]
        )
        row_of = {slot: i for i, slot in enumerate(slots)}
        outputs: list[SampleOutput | None] = [None] * len(prompts)
        while engine.busy:
            step = engine.step()
            for slot, piece in step.text.items():
                yield row_of[slot], piece
            for done in step.finished:
                outputs[row_of[done.slot]] = done.output
        return outputs


def _drain(
    run: PyGenerator[tuple[int, str], None, list[SampleOutput]],
    on_text: Callable[[int, str], None] | None,
) -> list[SampleOutput]:
    """Run a decoding generator to its end, passing streamed pieces on; returns its outputs."""
    while True:
        try:
            i, piece = next(run)
        except StopIteration as done:
            return done.value
        if on_text is not None:
            on_text(i, piece)
