"""Training: fine-tune a GPT-2 or train one from scratch, with exact crash-safe resume.

`gpt2kit.train(TrainConfig(...))` is the whole job and `gpt2kit train` a thin layer over it. The loop
reads like the algorithm: the learning rate is a pure function of the step, a step is
`grad_accum` micro-batches, then clip, a finiteness check, step and `zero_grad`. The order of
the training blocks is a pure function of (seed, epoch), so a checkpoint only needs the step
and the data cursor to continue on exactly the same batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gpt2kit import checkpoint as ckpt_io
from gpt2kit.config import group, option, to_dict
from gpt2kit.data.options import DEFAULT_VAL_FRACTION, VAL_FRACTION_HELP, ReadOptions
from gpt2kit.errors import UserError, raise_if_problems
from gpt2kit.eval import evaluate_ids
from gpt2kit.formats.hf import load_model, resolve_model, save_model
from gpt2kit.fsutil import atomic_directory, write_text_atomic
from gpt2kit.model import GPT2, PRESETS, GPT2Config, preset_config
from gpt2kit.runtime import (
    device_problem,
    free_memory,
    precision_name,
    precision_problem,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer, is_trained_spec, trained_spec_problem

SAMPLE_CORPUS = Path(__file__).parent / "assets" / "tinyshakespeare.txt"
# Peak learning rates when --lr is not given: from scratch for a 128-wide model (scaled down as
# 1 / width for wider ones, as in muP), and for fine-tuning a pretrained GPT-2.
SCRATCH_LR, FINETUNE_LR = 5e-3, 5e-5


@dataclass
class TrainConfig:
    """Options of `gpt2kit train` (also the keys of its YAML config and of `config.yaml`)."""

    sources: list[str] = option(
        [],
        help="Text sources (files, folders, globs, .csv/.jsonl/...) or one prepared DATA_DIR. None: the bundled sample corpus (tiny Shakespeare).",
        positional=True,
        metavar="SOURCE",
    )
    out: str = option(
        "runs/gpt2kit",
        help="The run folder: checkpoints, final/ and best/ models, metrics, config.yaml.",
    )
    init: str = option(
        "gpt2",
        help="Start point: a hub id (gpt2, distilgpt2, ...), a model folder, a run folder, or 'scratch' for random weights.",
    )
    preset: str | None = option(
        None, help=f"Model size with --init scratch (default tiny): {', '.join(PRESETS)}."
    )
    n_layer: int | None = option(
        None, help="With --init scratch: number of layers (overrides the preset)."
    )
    n_head: int | None = option(
        None, help="With --init scratch: attention heads per layer (overrides the preset)."
    )
    n_embd: int | None = option(
        None, help="With --init scratch: embedding width (overrides the preset)."
    )
    n_positions: int | None = option(
        None,
        help="With --init scratch: context length (default: --block-size when given, else the preset's).",
    )
    dropout: float | None = option(
        None,
        help="Dropout for embeddings, attention and residuals (default: 0 from scratch; the model's own when fine-tuning, 0.1 for GPT-2).",
    )
    tokenizer: str | None = option(
        None,
        help="With --init scratch: auto (the default: a byte-level BPE trained on the sources, sized to the corpus), bpe:VOCAB_SIZE, char, gpt2, or a tokenizer.json or model folder. Fine-tuning always uses the model's tokenizer.",
    )
    val: list[str] = option(
        [], help="Explicit validation sources (default: a fraction of the training documents)."
    )
    val_fraction: float = option(DEFAULT_VAL_FRACTION, help=VAL_FRACTION_HELP)
    reading: ReadOptions = group(ReadOptions, "reading the sources")
    block_size: int | None = option(
        None, help="Tokens per training example (default: the model's context, capped by the data)."
    )
    batch_size: int | None = option(
        None, help="Examples per micro-batch (default: 16 from scratch, 8 fine-tuning)."
    )
    grad_accum: int = option(1, help="Micro-batches per optimizer step (gradient accumulation).")
    tokens_per_step: int | None = option(
        None, help="Target tokens per optimizer step; sets --grad-accum to reach it."
    )
    lr: float | None = option(
        None,
        help="Peak learning rate (default: 5e-3 x 128 / width from scratch, at most 5e-3; 5e-5 for fine-tuning).",
    )
    min_lr_ratio: float = option(0.1, help="Cosine decay floor, as a fraction of --lr.")
    warmup_steps: int | None = option(
        None, help="Linear warmup steps (default: 5%% of the steps, at most 200)."
    )
    weight_decay: float = option(
        0.1, help="AdamW weight decay, applied to matrices and embeddings only."
    )
    beta1: float = option(0.9, help="AdamW beta1.")
    beta2: float = option(0.95, help="AdamW beta2.")
    grad_clip: float = option(1.0, help="Clip the gradient norm to this (0 = no clipping).")
    max_steps: int | None = option(
        None, help="Stop after this many optimizer steps (default: --epochs worth)."
    )
    epochs: float | None = option(
        None,
        help="Passes over the training data (default 1 when neither --max-steps nor --max-time is given).",
    )
    max_time: float | None = option(
        None,
        help="A time budget in minutes for this invocation: stop cleanly with a checkpoint when it is spent. Alone (no --max-steps/--epochs) it is the length of the run: the step count is fitted to it and the learning rate decays over it.",
    )
    eval_every: int = option(
        200, help="Evaluate on the validation split every N steps (and at the end)."
    )
    eval_tokens: int | None = option(
        None, help="Evaluate on at most this many validation tokens (default: all)."
    )
    patience: int | None = option(
        None, help="Early stopping: stop after N evaluations without a better validation loss."
    )
    samples: int = option(2, help="Samples generated at each evaluation (0 = none).")
    sample_tokens: int = option(48, help="Length of each evaluation sample, in tokens.")
    save_every: int = option(
        500,
        help="Write a checkpoint every N steps (also at the end, on a new best, and on SIGINT/SIGTERM).",
    )
    keep_last: int = option(2, help="Keep the newest K checkpoints (the best one is always kept).")
    log_every: int = option(10, help="Write a line to metrics.jsonl every N steps.")
    seed: int = option(1337, help="Random seed: initialisation, data order, dropout.")
    device: str = option("auto", help="Where to train: auto, cpu, cuda, cuda:N, mps.")
    precision: str = option(
        "auto",
        help="auto (bf16 on GPUs that have it, else fp16 with a grad scaler; fp32 on CPU), fp32, bf16, fp16.",
    )
    compile: str = option("auto", help="torch.compile the model: auto (on CUDA only), on, off.")
    resume: str = option(
        "auto",
        help="auto: continue the latest complete checkpoint in --out; never: start fresh (refuses a non-empty --out unless --overwrite); or a checkpoint folder.",
    )
    overwrite: bool = option(
        False, help="With --resume never: delete an existing non-empty --out first."
    )
    progress: bool = option(True, help="Show a progress bar (only when writing to a terminal).")

    def __post_init__(self) -> None:
        p = []
        if self.preset is not None and self.preset not in PRESETS:
            p.append(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.init != "scratch":
            given = [f"--{n}" for n in ("preset", "tokenizer") if getattr(self, n) is not None]
            if given:
                p.append(
                    f"{' and '.join(given)} only apply with --init scratch (fine-tuning keeps the model's size and tokenizer); add --init scratch or leave {'them' if len(given) > 1 else 'it'} out"
                )
        if self.tokenizer is not None and trained_spec_problem(self.tokenizer):
            p.append(trained_spec_problem(self.tokenizer))
        for name in (
            "grad_accum",
            "eval_every",
            "save_every",
            "log_every",
            "sample_tokens",
        ):
            if getattr(self, name) < 1:
                p.append(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        for name in (
            "batch_size",
            "block_size",
            "max_steps",
            "tokens_per_step",
            "n_layer",
            "n_head",
            "n_embd",
            "n_positions",
            "eval_tokens",
            "patience",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        for name in ("epochs", "max_time", "lr"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                p.append(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            p.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.min_lr_ratio <= 1:
            p.append(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.val_fraction < 1:
            p.append(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.keep_last < 1:
            p.append(
                f"--keep-last must be at least 1 (the newest checkpoint is what resume uses), got {self.keep_last}"
            )
        if self.samples < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            p.append("--samples, --grad-clip and --weight-decay cannot be negative")
        if self.compile not in ("auto", "on", "off"):
            p.append(f"--compile must be auto, on or off, got {self.compile!r}")
        if self.init != "scratch" and any(
            getattr(self, n) is not None for n in ("n_layer", "n_head", "n_embd", "n_positions")
        ):
            p.append("--n-layer/--n-head/--n-embd/--n-positions only apply with --init scratch")
        p += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        p += self.reading.problems()
        raise_if_problems(p, "Invalid options for train:")

    def with_defaults(self) -> TrainConfig:
        """This config with every option left unset filled in: from scratch, the recipe that
        README "Training from scratch" documents (tiny preset, --tokenizer auto, batch 16,
        dropout 0, lr 5e-3 x 128 / width); when fine-tuning, batch 8 and lr 5e-5."""
        if self.init != "scratch":
            return replace(self, batch_size=self.batch_size or 8, lr=self.lr or FINETUNE_LR)
        preset = self.preset or "tiny"
        width = self.n_embd or PRESETS[preset]["n_embd"]
        return replace(
            self,
            preset=preset,
            tokenizer=self.tokenizer or "auto",
            batch_size=self.batch_size or 16,
            dropout=0.0 if self.dropout is None else self.dropout,
            lr=self.lr or SCRATCH_LR * min(1.0, 128 / width),
        )


@dataclass
class TrainSummary:
    """What a finished (or stopped) training run produced and measured."""

    run_dir: str
    steps: int
    tokens_seen: int
    stopped: str  # "completed", "max_time", "early_stopping", "SIGINT", "SIGTERM", "non_finite"
    final_model: str | None
    best_model: str | None
    best_val_loss: float | None
    best_val_bpc: float | None
    last_eval: dict | None
    train_seconds: float
    exit_code: int = 0
    evals: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# schedule and data order: pure functions of their arguments


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return peak * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class BlockSampler:
    """Training blocks in a shuffled order that is a pure function of (seed, epoch).

    Each epoch starts the blocks at a random offset (so block edges move between epochs) and
    visits every whole block once. The position is `(epoch, cursor)`; `next_batch` returns
    `(x, y)` of shape (batch, block) and moves the position, crossing epochs as needed.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        self.tokens, self.block, self.batch, self.seed = tokens, block_size, batch_size, seed
        self.epoch, self.cursor = 0, 0
        self._order_epoch: int | None = None
        self._starts = np.empty(0, dtype=np.int64)

    def blocks_in_epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        span = len(self.tokens) - 1  # the last token is only ever a target
        offset = (
            int(rng.integers(0, span - self.block + 1)) % self.block if span > self.block else 0
        )
        n = (span - offset) // self.block
        return offset + rng.permutation(n).astype(np.int64) * self.block

    def _order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._starts, self._order_epoch = self.blocks_in_epoch(self.epoch), self.epoch
        return self._starts

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = []
        while len(starts) < self.batch:
            order = self._order()
            take = order[self.cursor : self.cursor + self.batch - len(starts)]
            starts.extend(take.tolist())
            self.cursor += len(take)
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
        rows = np.stack([self.tokens[s : s + self.block + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.cursor / max(1, len(self._order()))


# --------------------------------------------------------------------------------------------
# the run


class _Signals:
    """Turn SIGINT/SIGTERM into a request to stop at the next step boundary.

    A second SIGINT exits at once (status 130), for when the user really means it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            sys.stderr.write("\nSecond interrupt: exiting now without a checkpoint.\n")
            os._exit(130)
        self.received = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step "
            "(press Ctrl-C again to exit at once).\n"
        )

    def __enter__(self) -> _Signals:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _is_prepared_dir(path: str) -> bool:
    from gpt2kit.data import is_prepared_dir

    return is_prepared_dir(path)


def _load_data(config: TrainConfig, run_dir: Path, tokenizer_spec: str, block_size: int | None):
    """Prepare (or reuse) the training data and return the `PreparedData`."""
    from gpt2kit.data import PrepareConfig, load_prepared, prepare
    from gpt2kit.data.report import format_report

    sources = list(config.sources)
    if len(sources) == 1 and _is_prepared_dir(sources[0]):
        if config.val:
            raise UserError(
                "--val cannot be combined with a prepared DATA_DIR (its split is fixed)."
            )
        return load_prepared(sources[0])
    if not sources:
        print(
            f"No SOURCE given: training on the bundled sample corpus (tiny Shakespeare, {SAMPLE_CORPUS.stat().st_size / 1e6:.1f} MB)."
        )
        sources = [str(SAMPLE_CORPUS)]
    prep = PrepareConfig(
        sources=sources,
        out=str(run_dir / "data"),
        tokenizer=tokenizer_spec,
        val=list(config.val),
        val_fraction=config.val_fraction,
        reading=config.reading,
        block_size=block_size,
        batch_size=config.batch_size,
    )
    data = prepare(prep, progress=config.progress)
    print(format_report(data.report, reused=data.reused))  # counts, duplicates, warnings
    return data


def _scratch_context(config: TrainConfig) -> int:
    """Context of a new model: --n-positions, else --block-size (a model only learns the
    positions it is trained on), else the preset's."""
    return (
        config.n_positions or config.block_size or PRESETS[config.preset].get("n_positions", 1024)
    )


def _scratch_config(config: TrainConfig, tokenizer: Tokenizer) -> GPT2Config:
    """The configuration of a new model: the preset, the size flags, the tokenizer's vocabulary."""
    overrides: dict[str, Any] = {
        k: getattr(config, k)
        for k in ("n_layer", "n_head", "n_embd")
        if getattr(config, k) is not None
    }
    overrides.update(
        n_positions=_scratch_context(config),
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id,
    )
    if config.dropout is not None:
        overrides.update(
            resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout
        )
    return preset_config(config.preset, **overrides)


def training_memory_bytes(
    config: GPT2Config, batch_size: int, block_size: int, dtype: torch.dtype
) -> int:
    """A conservative estimate of the memory one training step needs: fp32 weights, gradients
    and AdamW's two moments (16 bytes a parameter), the activations kept for the backward pass
    (Korthikanti et al. 2022: 34 + 5 x heads x T / width values per token and layer, doubled
    for the unfused attention of CPUs), and the logits with their gradient."""
    C, L, H, T, B, V = (
        config.n_embd,
        config.n_layer,
        config.n_head,
        block_size,
        batch_size,
        config.vocab_size,
    )
    params = V * C + config.n_positions * C + L * (12 * C * C + 13 * C) + 2 * C
    act = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    per_layer = B * T * C * (34 + 2 * 5 * H * T / C) * act
    logits = 3 * B * T * V * 4
    return int(16 * params + L * per_layer + logits)


def check_memory(
    config: GPT2Config, batch_size: int, block_size: int, device: torch.device, dtype: torch.dtype
) -> None:
    """Refuse a run whose estimated need (`training_memory_bytes`) exceeds the device's memory,
    before anything is built, naming the numbers and the flag to change."""
    # the whole GPU is this run's to use; on the CPU, what other programs leave free
    cuda = device.type == "cuda"
    available = torch.cuda.mem_get_info(device)[1] if cuda else free_memory(device)
    where = "GPU memory" if cuda else "free RAM"
    need = training_memory_bytes(config, batch_size, block_size, dtype)
    if available is None or need <= available:
        return
    fits_batch = next(
        (
            b
            for b in range(batch_size - 1, 0, -1)
            if training_memory_bytes(config, b, block_size, dtype) <= available
        ),
        None,
    )
    fits_block = next(
        (
            t
            for t in (2**k for k in range(20, 2, -1))
            if t < block_size and training_memory_bytes(config, 1, t, dtype) <= available
        ),
        None,
    )
    fixes = []
    if fits_batch:
        fixes.append(f"--batch-size {fits_batch} (with --grad-accum to keep the tokens per step)")
    if fits_block:
        fixes.append(f"--block-size {fits_block} or less")
    raise UserError(
        f"This run would need about {need / 2**30:,.1f} GiB ({config.n_layer} layers x "
        f"{config.n_embd} wide, vocabulary {config.vocab_size:,}, --batch-size {batch_size} x "
        f"--block-size {block_size}), but this machine has {available / 2**30:,.1f} GiB of "
        f"{where}. Try {' or '.join(fixes) or 'a smaller model (--preset)'}."
    )


def _steps_for_budget(
    step_model: torch.nn.Module,
    sampler: BlockSampler,
    grad_accum: int,
    autocast: contextlib.AbstractContextManager,
    device: torch.device,
    seconds: float,
    eval_every: int,
    val_tokens: int,
) -> int:
    """How many optimizer steps fit in `seconds`, timed on a few forward/backward passes of
    real batches (the weights and the random state are left as they were)."""
    rng = torch.get_rng_state()

    def one() -> None:
        for _ in range(grad_accum):
            x, y = sampler.next_batch()
            with autocast:
                loss = step_model(x.to(device), y.to(device)) / grad_accum
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one()  # the first pass allocates (and compiles); not timed
    t0, n = time.perf_counter(), 0
    while n < 3 or (time.perf_counter() - t0 < min(2.0, 0.02 * seconds) and n < 20):
        one()
        n += 1
    step = (time.perf_counter() - t0) / n * 1.1  # + the optimizer step and logging
    torch.set_rng_state(rng)
    tokens = sampler.batch * sampler.block * grad_accum
    eval_per_step = step / 3 * (val_tokens / tokens) / eval_every  # forward only, every N steps
    reserve = 2 * step / 3 * (val_tokens / tokens) + 2.0  # the last evaluation and the export
    return max(1, int((seconds - reserve) / (step + eval_per_step)))


def _set_dropout(model: GPT2, p: float) -> None:
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = p
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for block in model.transformer.h:
        block.attn.attn_dropout = p


def _make_optimizer(
    model: GPT2, config: TrainConfig, lr: float, device: torch.device
) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(config.beta1, config.beta2), **extra)


def _prepare_run_dir(
    config: TrainConfig,
) -> tuple[Path, ckpt_io.Checkpoint | None, dict[str, Any] | None]:
    """Apply --resume/--overwrite to the run folder.

    Returns the folder, the checkpoint to resume (or None) and, when --resume PATH abandons
    later checkpoints, the best validation figures among them (their best checkpoint is moved
    to `checkpoints/abandoned/`, never deleted).
    """
    run_dir = Path(config.out).expanduser()
    if config.resume not in ("auto", "never"):
        path = Path(config.resume).expanduser()
        m = ckpt_io._STEP_DIR.match(path.name)
        if not (path / ckpt_io.MARKER).is_file() or not m:
            raise UserError(
                f"--resume {path}: not a complete checkpoint folder (step-NNNNNN with a {ckpt_io.MARKER} marker)."
            )
        chosen = ckpt_io.Checkpoint(path, int(m.group(1)))
        later = [
            c
            for c in ckpt_io.list_checkpoints(run_dir)
            if c.step > chosen.step and c.path.resolve() != path.resolve()
        ]
        return run_dir, chosen, ckpt_io.abandon_checkpoints(run_dir, later)
    non_empty = run_dir.is_dir() and any(run_dir.iterdir())
    if config.resume == "never":
        if non_empty:
            if not config.overwrite:
                raise UserError(
                    f"{run_dir} is not empty and --resume never was given. Add --overwrite to delete it, or choose another --out."
                )
            if not is_run_folder(run_dir):
                raise UserError(
                    f"--overwrite refuses to delete {run_dir}: it is not a gpt2kit run folder (no config.yaml beside checkpoints/ or metrics.jsonl). Choose another --out, or empty it yourself."
                )
            shutil.rmtree(run_dir)
        return run_dir, None, None
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder.")
    return run_dir, ckpt_io.latest_checkpoint(run_dir), None


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a folder written by `gpt2kit train` (what --overwrite may delete)."""
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("checkpoints", "metrics.jsonl", "summary.json")
    )


def train(config: TrainConfig) -> TrainSummary:
    """Run training as configured and return its summary.

    Resumes from the latest complete checkpoint of `config.out` unless `resume="never"`.
    The run folder receives `config.yaml`, `metrics.jsonl`, `checkpoints/`, `final/`, `best/`
    and, when matplotlib is installed, `loss.png`.
    """
    t_start = time.time()
    config = config.with_defaults()
    run_dir, resume_from, abandoned_best = _prepare_run_dir(config)
    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device)
    if device.type == "cpu" and amp_dtype == torch.float16:
        raise UserError("--precision fp16 needs a GPU; on the CPU use fp32 or bf16.")

    # ---- model and tokenizer
    torch.manual_seed(config.seed)
    optimizer_state = rng_scaler = state = None
    if resume_from is not None:
        model, tokenizer, optimizer_state, rng_scaler, state = ckpt_io.load_checkpoint(
            resume_from, device
        )
        tokenizer_spec = state.get("tokenizer_spec") or str(resume_from.path)
        if not (
            tokenizer_spec == "gpt2"
            or is_trained_spec(tokenizer_spec)
            or Path(tokenizer_spec).exists()
        ):
            tokenizer_spec = str(resume_from.path)  # e.g. a hub snapshot since removed
        print(f"Resuming from {resume_from.path} (step {resume_from.step}).")
    elif config.init == "scratch":
        from gpt2kit.tokenizer import load_tokenizer

        tokenizer_spec = config.tokenizer
        tokenizer = None if is_trained_spec(tokenizer_spec) else load_tokenizer(tokenizer_spec)
        model = None  # built once the tokenizer (maybe trained on the data) is known
    else:
        folder = resolve_model(config.init)
        model, tokenizer, _ = load_model(folder, device=device)
        tokenizer_spec = str(folder)
    n_positions = model.config.n_positions if model is not None else _scratch_context(config)
    block_size = config.block_size or n_positions
    if block_size > n_positions:
        raise UserError(
            f"--block-size {block_size} is longer than the model's context of {n_positions} tokens."
        )

    # ---- data
    data = _load_data(config, run_dir, tokenizer_spec, block_size)
    if 2 <= len(data.train) <= block_size:
        print(
            f"Note: the training data has only {len(data.train):,} tokens, fewer than --block-size {block_size}; using blocks of {len(data.train) - 1} tokens."
        )
        block_size = len(data.train) - 1
    model_config = model.config if model is not None else _scratch_config(config, data.tokenizer)
    check_memory(model_config, config.batch_size, block_size, device, amp_dtype)
    if model is None:
        tokenizer = data.tokenizer
        model = GPT2(model_config).to(device)
    elif data.tokenizer.fingerprint != tokenizer.fingerprint:
        raise UserError(
            f"The data in {data.path} was tokenized with a different tokenizer than the model's. "
            "Prepare it again with --tokenizer pointing at the model folder, or pass the text sources."
        )
    if resume_from is None and config.dropout is not None:
        _set_dropout(model, config.dropout)
    model.train()
    train_tokens = data.train
    if len(train_tokens) < 2:
        raise UserError(
            "The training split has fewer than 2 tokens: there is nothing to learn from. Add more text."
        )
    sampler = BlockSampler(train_tokens, block_size, config.batch_size, config.seed)
    blocks_per_epoch = len(sampler.blocks_in_epoch(0))
    batch_size = config.batch_size
    if blocks_per_epoch < batch_size:
        print(
            f"Note: one epoch has only {blocks_per_epoch} blocks of {block_size} tokens, fewer than --batch-size {batch_size}; batches will repeat blocks across epochs."
        )
    grad_accum = config.grad_accum
    if config.tokens_per_step:
        grad_accum = max(1, round(config.tokens_per_step / (batch_size * block_size)))
    tokens_per_step = batch_size * grad_accum * block_size
    steps_per_epoch = max(1, blocks_per_epoch // (batch_size * grad_accum))
    peak_lr = config.lr

    # ---- optimizer, precision, compile
    optimizer = _make_optimizer(model, config, peak_lr, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    autocast = _autocast(device, amp_dtype)
    use_compile = config.compile == "on" or (config.compile == "auto" and device.type == "cuda")
    compile_note = (
        "on"
        if use_compile
        else (
            "off (--compile off)"
            if config.compile == "off"
            else f"off (auto: only on CUDA; this run is on {device.type})"
        )
    )
    step_model = torch.compile(model) if use_compile else model

    # ---- how long: steps, epochs, or steps fitted to the time budget (kept on resume)
    time_budgeted = config.max_time is not None and not config.max_steps and not config.epochs
    if config.max_steps or not time_budgeted:
        total_steps = config.max_steps or max(
            1, math.ceil((config.epochs or 1.0) * steps_per_epoch)
        )
    elif state is not None and state.get("total_steps"):
        total_steps = state["total_steps"]
    else:
        total_steps = _steps_for_budget(
            step_model,
            BlockSampler(train_tokens, block_size, batch_size, config.seed),
            grad_accum,
            autocast,
            device,
            seconds=config.max_time * 60 - (time.time() - t_start),
            eval_every=config.eval_every,
            val_tokens=min(len(data.val), config.eval_tokens or len(data.val)),
        )
        optimizer.zero_grad(set_to_none=True)
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else min(200, max(1, total_steps // 20))
    )

    # ---- restore position
    st: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "cursor": 0,
        "tokens_seen": 0,
        "best_val_loss": None,
        "best_val_bpc": None,
        "best_step": None,
        "bad_evals": 0,
        "train_seconds": 0.0,
        "tokenizer_spec": tokenizer_spec,  # how the data was tokenized, for the same cache on resume
        "total_steps": total_steps,  # fitted to --max-time alone: the schedule must not change
    }
    if resume_from is not None:
        st.update(state)
        if abandoned_best and (
            st["best_val_loss"] is None or abandoned_best["best_val_loss"] < st["best_val_loss"]
        ):  # best/ keeps the abandoned trajectory's best until this one beats it
            st.update(abandoned_best, best_step=None)
        optimizer.load_state_dict(optimizer_state)
        if scaler is not None and rng_scaler.get("scaler"):
            scaler.load_state_dict(rng_scaler["scaler"])
        sampler.epoch, sampler.cursor = st["epoch"], st["cursor"]
        _truncate_metrics(run_dir / "metrics.jsonl", st["step"])
        ckpt_io.restore_rng(rng_scaler["rng"])  # last, after everything that draws numbers
    else:  # a fresh start: nothing of an earlier, checkpoint-less attempt may look current
        _truncate_metrics(run_dir / "metrics.jsonl", 0)
        for stale in ("best", "final", "summary.json", "loss.png"):
            path = run_dir / stale
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = to_dict(config)
    resolved.update(
        resolved_block_size=block_size,
        resolved_grad_accum=grad_accum,
        resolved_lr=peak_lr,
        resolved_warmup_steps=warmup,
        resolved_total_steps=total_steps,
        data_dir=str(data.path),
    )
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    n_params = model.num_parameters()
    val_tokens = data.val
    val_block = min(block_size, max(2, len(val_tokens)))  # windows of the training block size
    print(
        f"Model: {n_params / 1e6:.2f}M parameters, {model.config.n_layer} layers x {model.config.n_embd} wide, context {model.config.n_positions}, vocab {model.config.vocab_size}.\n"
        f"Data: {len(train_tokens):,} training tokens, {len(val_tokens):,} validation tokens ({data.path}).\n"
        f"Steps: {total_steps:,} (from {st['step']}), {tokens_per_step:,} tokens per step ({batch_size} x {grad_accum} x {block_size}), {steps_per_epoch:,} steps per epoch; lr {peak_lr:g}, warmup {warmup}.\n"
        f"Device: {device.type}, precision {precision_name(amp_dtype)}, torch.compile {compile_note}."
    )
    if st["step"] >= total_steps:
        print(f"Training already reached step {st['step']} of {total_steps}; nothing to do.")

    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
    tb = _tensorboard(run_dir)
    evals: list[dict] = []
    stopped = "completed"
    exit_code = 0
    nonfinite_in_a_row = 0
    t_loop = time.time()
    seconds_before = st["train_seconds"]
    last_eval: dict | None = None

    def log(record: dict) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step",):
                    tb.add_scalar(f"{record['type']}/{k}", v, record["step"])

    def position() -> dict:
        return {
            **st,
            "epoch": sampler.epoch,
            "cursor": sampler.cursor,
            "train_seconds": seconds_before + time.time() - t_loop,
        }

    def save(step: int) -> None:
        ckpt_io.save_checkpoint(
            run_dir,
            step,
            model,
            tokenizer,
            optimizer,
            scaler.state_dict() if scaler else None,
            position(),
        )
        keep = {st["best_step"]} if st["best_step"] is not None else set()
        ckpt_io.prune_checkpoints(run_dir, config.keep_last, keep)

    def run_eval(step: int) -> dict:
        model.eval()
        with autocast:  # the scorer of `gpt2kit eval`, over disjoint windows of the block size
            scores = evaluate_ids(
                model,
                tokenizer,
                val_tokens,
                data.meta["val_chars"],
                stride=val_block,
                block_size=val_block,
                batch_size=batch_size,
                max_tokens=config.eval_tokens,
            )
        record = {
            "type": "eval",
            "step": step,
            "tokens_seen": st["tokens_seen"],
            "val_loss": scores["loss"],
            "val_ppl": math.exp(min(scores["loss"], 50.0)),
            "val_bpc": scores["bits_per_char"],
            "val_tokens": scores["tokens"],
            "val_stride": val_block,
        }
        if config.samples:
            record["samples"] = _samples(model, tokenizer, val_tokens, config, step)
        model.train()
        log(record)
        evals.append(record)
        return record

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=min(st["step"], total_steps),
        unit="step",
        dynamic_ncols=True,
        disable=not config.progress or None,
        file=sys.stderr,
    )
    try:
        with _Signals() as signals:
            t_window, tok_window = time.time(), 0
            while st["step"] < total_steps:
                step = st["step"]
                lr = lr_at(step, peak_lr, warmup, total_steps, config.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for _ in range(grad_accum):
                    x, y = sampler.next_batch()
                    if device.type == "cuda":
                        x, y = x.pin_memory(), y.pin_memory()
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with autocast:
                        loss = step_model(x, y) / grad_accum
                    (scaler.scale(loss) if scaler else loss).backward()
                    loss_sum += loss.detach()
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), config.grad_clip if config.grad_clip > 0 else float("inf")
                )
                loss_value, norm_value = loss_sum.item(), grad_norm.item()  # the one sync per step
                finite = math.isfinite(loss_value) and (
                    math.isfinite(norm_value) or scaler is not None
                )
                if scaler is not None:
                    # The scaler skips the update itself when the (unscaled) gradients are not
                    # finite, and must see step() + update() every step to stay consistent.
                    scaler.step(optimizer)
                    scaler.update()
                elif finite:
                    optimizer.step()
                if finite:
                    nonfinite_in_a_row = 0
                else:
                    nonfinite_in_a_row += 1
                    log(
                        {
                            "type": "skipped",
                            "step": step + 1,
                            "reason": "non-finite loss or gradient norm",
                            "loss": str(loss_value),
                            "grad_norm": str(norm_value),
                        }
                    )
                    bar.write(
                        f"step {step + 1}: non-finite loss ({loss_value}) or gradient norm ({norm_value}); the update was skipped."
                    )
                optimizer.zero_grad(set_to_none=True)
                st["step"] = step = step + 1
                st["tokens_seen"] += tokens_per_step
                tok_window += tokens_per_step
                bar.update(1)

                if step % config.log_every == 0 or step == total_steps:
                    now = time.time()
                    tps = tok_window / max(1e-9, now - t_window)
                    t_window, tok_window = now, 0
                    log(
                        {
                            "type": "train",
                            "step": step,
                            "tokens_seen": st["tokens_seen"],
                            "loss": loss_value,
                            "lr": lr,
                            "grad_norm": norm_value,
                            "tokens_per_s": tps,
                            "epoch": round(sampler.epoch_progress, 4),
                            "elapsed_s": round(seconds_before + now - t_loop, 3),
                        }
                    )
                    bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                if nonfinite_in_a_row >= 5:
                    stopped, exit_code = "non_finite", 1
                    bar.write(
                        f"Stopping: {nonfinite_in_a_row} steps in a row had a non-finite loss or gradient. Try a lower --lr (now {peak_lr:g}) or --precision fp32/bf16."
                    )
                    break

                out_of_time = (
                    config.max_time is not None
                    and (time.time() - t_loop) >= config.max_time * 60  # this invocation
                )
                is_last = step == total_steps
                due = step % config.eval_every == 0 or is_last or out_of_time
                if due and not signals.received:
                    last_eval = run_eval(step)
                    bar.write(
                        f"step {step}: val loss {last_eval['val_loss']:.4f}, ppl {last_eval['val_ppl']:.2f}, bpc {last_eval['val_bpc']:.3f}"
                    )
                    if st["best_val_loss"] is None or last_eval["val_loss"] < st["best_val_loss"]:
                        st.update(
                            best_val_loss=last_eval["val_loss"],
                            best_val_bpc=last_eval["val_bpc"],
                            best_step=step,
                            bad_evals=0,
                        )
                        _export(model, tokenizer, run_dir / "best")
                        save(step)
                    else:
                        st["bad_evals"] += 1
                if signals.received:
                    stopped = signal.Signals(signals.received).name
                    exit_code = 128 + signals.received
                    save(step)
                    break
                if step % config.save_every == 0 or is_last:
                    save(step)
                if out_of_time and not is_last:
                    stopped = "max_time"
                    save(step)
                    bar.write(f"--max-time {config.max_time:g} min reached at step {step}.")
                    break
                if config.patience is not None and st["bad_evals"] >= config.patience:
                    stopped = "early_stopping"
                    save(step)
                    bar.write(
                        f"Early stopping at step {step}: no better validation loss in {config.patience} evaluations."
                    )
                    break
    except torch.cuda.OutOfMemoryError:
        half = max(1, batch_size // 2)
        raise UserError(
            f"The GPU ran out of memory with --batch-size {batch_size} x --block-size {block_size}. "
            f"Try --batch-size {half} --grad-accum {grad_accum * 2} (same tokens per step), a smaller "
            "--block-size, or --precision bf16. The latest checkpoint is kept; rerun to resume."
        ) from None
    finally:
        bar.close()
        metrics.close()
        if tb is not None:
            tb.close()

    final_dir = None
    if stopped in ("completed", "max_time", "early_stopping"):
        final_dir = _export(model, tokenizer, run_dir / "final")
    _plot(run_dir)
    best_dir = run_dir / "best"
    summary = TrainSummary(
        run_dir=str(run_dir),
        steps=st["step"],
        tokens_seen=st["tokens_seen"],
        stopped=stopped,
        final_model=str(final_dir) if final_dir else None,
        best_model=str(best_dir) if best_dir.is_dir() else None,
        best_val_loss=st["best_val_loss"],
        best_val_bpc=st["best_val_bpc"],
        last_eval={k: v for k, v in last_eval.items() if k != "samples"} if last_eval else None,
        train_seconds=round(seconds_before + time.time() - t_loop, 2),
        exit_code=exit_code,
        evals=[{k: v for k, v in e.items() if k != "samples"} for e in evals],
    )
    write_text_atomic(run_dir / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
    _print_summary(summary, time.time() - t_start)
    return summary


def _export(model: GPT2, tokenizer: Tokenizer, target: Path) -> Path:
    with atomic_directory(target) as tmp:
        save_model(model, tokenizer, tmp)
    return target


@torch.no_grad()
def _samples(
    model: GPT2, tokenizer: Tokenizer, val_tokens: np.ndarray, config: TrainConfig, step: int
) -> list[str]:
    """A few short samples from fixed prompts: the start of a text, and the first val tokens."""
    from gpt2kit.generate import Generator

    gen = Generator(model, tokenizer, cuda_graph=False)
    prompts: list[list[int]] = [[]]
    if len(val_tokens) > 8:
        prompts.append([int(t) for t in val_tokens[:8]])
    prompts = (prompts * config.samples)[: config.samples]
    room = model.config.n_positions - max(len(p) for p in prompts)
    results = gen.generate_ids(
        prompts,
        max_new_tokens=max(1, min(config.sample_tokens, room)),
        temperature=0.8,
        seed=config.seed,
    )
    return [tokenizer.decode(p + ids) for p, (ids, _) in zip(prompts, results, strict=True)]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after `step` (work that the resumed run will redo)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _plot(run_dir: Path) -> Path | None:
    """Draw train and validation loss curves into `loss.png` (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train_pts, val_pts = [], []
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["type"] == "train":
            train_pts.append((r["step"], r["loss"]))
        elif r["type"] == "eval":
            val_pts.append((r["step"], r["val_loss"]))
    if not train_pts and not val_pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), label="train loss")
    if val_pts:
        ax.plot(*zip(*val_pts, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)
    return run_dir / "loss.png"


def _print_summary(s: TrainSummary, wall: float) -> None:
    lines = [
        f"Training {s.stopped} after {s.steps:,} steps ({s.tokens_seen:,} tokens) in {wall:.0f} s."
    ]
    if s.last_eval:
        lines.append(
            f"Last validation: loss {s.last_eval['val_loss']:.4f}, perplexity {s.last_eval['val_ppl']:.2f}, {s.last_eval['val_bpc']:.3f} bits per character."
        )
    if s.final_model:
        lines.append(f"Final model: {s.final_model}")
    if s.best_model:
        lines.append(f"Best model:  {s.best_model} (val loss {s.best_val_loss:.4f})")
    lines.append(
        f"Metrics: {Path(s.run_dir) / 'metrics.jsonl'}; checkpoints: {Path(s.run_dir) / 'checkpoints'}"
    )
    if s.stopped in ("SIGINT", "SIGTERM", "max_time"):
        lines.append(
            f"Continue with the same command (--resume auto picks up {Path(s.run_dir) / 'checkpoints'})."
        )
    print("\n".join(lines))


def run_train(config: TrainConfig) -> int:
    """Fine-tune a GPT-2 (--init gpt2, a folder, a run) or train one from scratch (--init scratch).

    SOURCE is text (files, folders, .csv, .jsonl, ...; prepared and cached in RUN_DIR/data) or a
    DATA_DIR from `gpt2kit prepare`; with no SOURCE, the bundled sample corpus. Running the same
    command again resumes from the latest complete checkpoint. Exit status: 0 when done, 130/143
    when stopped by SIGINT/SIGTERM (after saving a checkpoint), 1 after repeated non-finite losses.
    """
    return train(config).exit_code
