"""Everything the step loop needs, resolved before its first step (`setup`).

In order: the run folder (--resume, --overwrite), the device and precision, the start point
(a checkpoint to resume, a pretrained model, or a new model), the data (prepared through
`gpt2kit.data`, or a DATA_DIR), a memory check, the batches, the optimizer, how many steps
(fitted to --max-time alone by timing a few passes), then the resume state put back (or an
earlier attempt's results cleared), and the resolved options saved as `config.yaml`. The order
is part of exact resume: everything that draws random numbers comes in the same order on every
run, and the saved random state is restored last.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from gpt2kit.config import to_dict
from gpt2kit.data import (
    PrepareConfig,
    PreparedData,
    format_report,
    is_prepared_dir,
    load_prepared,
    prepare,
)
from gpt2kit.data.sampler import BlockSampler
from gpt2kit.errors import UserError
from gpt2kit.formats.hf import load_model, resolve_model
from gpt2kit.fsutil import write_text_atomic
from gpt2kit.model import GPT2, PRESETS, GPT2Config, preset_config
from gpt2kit.runs import RunDir
from gpt2kit.runtime import (
    auto_cpu_precision,
    free_memory,
    keep_freed_memory,
    precision_name,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer, TokenizerSpec, load_tokenizer
from gpt2kit.training.checkpoint import (
    MARKER,
    Checkpoint,
    LoadedCheckpoint,
    TrainState,
    abandon_checkpoints,
    checkpoint_at,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
)
from gpt2kit.training.config import OptimOptions, TrainConfig
from gpt2kit.training.distributed import Parallel
from gpt2kit.training.lora import add_adapters, check_resumed
from gpt2kit.training.metrics import truncate_metrics
from gpt2kit.training.schedule import warmup_steps

SAMPLE_CORPUS = Path(__file__).parents[1] / "assets" / "tinyshakespeare.txt"


@dataclass
class Plan:
    """The resolved shape of the run: batches, learning rate and length (`resolved_*` in
    `config.yaml`)."""

    block_size: int
    batch_size: int
    grad_accum: int
    steps_per_epoch: int
    peak_lr: float
    total_steps: int
    warmup: int
    world_size: int = 1  # processes, each reading `batch_size` examples per micro-batch

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum * self.block_size


@dataclass
class Session:
    """A run ready for its first (or next) step: what `setup` returns and the loop uses."""

    config: TrainConfig
    run: RunDir
    device: torch.device
    model: GPT2
    step_model: torch.nn.Module  # the model, or its torch.compile'd wrapper
    tokenizer: Tokenizer
    data: PreparedData
    sampler: BlockSampler
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: contextlib.AbstractContextManager
    plan: Plan
    state: TrainState
    parallel: Parallel = field(default_factory=Parallel)  # one process, or this rank's place


@dataclass
class Start:
    """Where training starts: a checkpoint (`resumed`), a pretrained model, or nothing yet
    (`model` None: built from scratch once the tokenizer, maybe trained on the data, is known).
    `tokenizer_spec` is the --tokenizer that prepares the data."""

    model: GPT2 | None
    tokenizer: Tokenizer | None
    tokenizer_spec: str
    resumed: LoadedCheckpoint | None = None


# --------------------------------------------------------------------------------------------
# the run folder and the start point


def open_run(config: TrainConfig) -> tuple[RunDir, Checkpoint | None, TrainState | None]:
    """Apply --resume/--overwrite to the run folder.

    Returns the folder, the checkpoint to resume (or None) and, when --resume PATH abandons
    later checkpoints, the newest one's state, whose best validation figures are those of the
    checkpoint moved to `checkpoints/abandoned/` (never deleted).
    """
    run = RunDir(Path(config.out).expanduser())
    if config.resume not in ("auto", "never"):
        path = Path(config.resume).expanduser()
        chosen = checkpoint_at(path)
        if chosen is None:
            raise UserError(
                f"--resume {path}: not a complete checkpoint folder (step-NNNNNN with a {MARKER} marker)."
            )
        later = [
            c
            for c in list_checkpoints(run.path)
            if c.step > chosen.step and c.path.resolve() != path.resolve()
        ]
        return run, chosen, abandon_checkpoints(run.path, later)
    non_empty = run.path.is_dir() and any(run.path.iterdir())
    if config.resume == "never":
        if non_empty:
            if not config.overwrite:
                raise UserError(
                    f"{run.path} is not empty and --resume never was given. Add --overwrite to delete it, or choose another --out."
                )
            if not run.is_run_folder():
                raise UserError(
                    f"--overwrite refuses to delete {run.path}: it is not a gpt2kit run folder (no config.yaml beside checkpoints/ or metrics.jsonl). Choose another --out, or empty it yourself."
                )
            shutil.rmtree(run.path)
        return run, None, None
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--out {run.path} is a file, not a folder.")
    return run, latest_checkpoint(run.path), None


def _still_usable(spec: str) -> bool:
    """Whether the tokenizer `spec` can still be loaded or trained (a folder may be gone)."""
    return TokenizerSpec.parse(spec).kind != "path" or Path(spec).expanduser().exists()


def load_start(config: TrainConfig, resume_from: Checkpoint | None, device: torch.device) -> Start:
    """Read the start point: the checkpoint to resume, else a new model's tokenizer (--init
    scratch), else the pretrained model --init names (with LoRA adapters for --lora-r)."""
    if resume_from is not None:
        loaded = load_checkpoint(resume_from, device)
        check_resumed(loaded.model, config.lora, resume_from.path)
        spec = loaded.state.tokenizer_spec or str(resume_from.path)
        if not _still_usable(spec):
            spec = str(resume_from.path)  # e.g. a hub snapshot since removed
        print(f"Resuming from {resume_from.path} (step {resume_from.step}).")
        return Start(loaded.model, loaded.tokenizer, spec, loaded)
    if config.init == "scratch":
        spec = config.model.tokenizer
        return Start(
            None, None if TokenizerSpec.parse(spec).is_trained else load_tokenizer(spec), spec
        )
    folder = resolve_model(config.init)
    model, tokenizer, _ = load_model(folder, device=device)
    if config.lora.lora_r is not None:
        add_adapters(model, config.lora, config.init, folder)
    return Start(model, tokenizer, str(folder))


# --------------------------------------------------------------------------------------------
# data and model


def load_data(
    config: TrainConfig, run: RunDir, tokenizer_spec: str, block_size: int | None
) -> PreparedData:
    """Prepare (or reuse) the training data in the run folder, or open a given DATA_DIR."""
    sources = list(config.sources)
    if len(sources) == 1 and is_prepared_dir(sources[0]):
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
        out=str(run.data),
        tokenizer=tokenizer_spec,
        val=list(config.val),
        val_fraction=config.val_fraction,
        reading=config.reading,
        block_size=block_size,
        batch_size=config.optim.batch_size,
    )
    data = prepare(prep, progress=config.progress)
    print(format_report(data.report, reused=data.reused))  # counts, duplicates, warnings
    return data


def scratch_context(config: TrainConfig) -> int:
    """Context of a new model: --n-positions, else --block-size (a model only learns the
    positions it is trained on), else the preset's."""
    m = config.model
    return m.n_positions or config.optim.block_size or PRESETS[m.preset].get("n_positions", 1024)


def scratch_config(config: TrainConfig, tokenizer: Tokenizer) -> GPT2Config:
    """The configuration of a new model: the preset, the size flags, the tokenizer's vocabulary."""
    m = config.model
    overrides: dict[str, Any] = {
        k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd") if getattr(m, k) is not None
    }
    overrides.update(
        n_positions=scratch_context(config),
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id,
    )
    if m.dropout is not None:
        overrides.update(resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout)
    return preset_config(m.preset, **overrides)


def set_dropout(model: GPT2, p: float) -> None:
    """Set every dropout of `model` (embeddings, attention, residuals) to `p`."""
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = p
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for block in model.transformer.h:
        block.attn.attn_dropout = p


def model_and_data(
    config: TrainConfig,
    run: RunDir,
    start: Start,
    device: torch.device,
    dtype: torch.dtype,
    shards: int = 1,
) -> tuple[GPT2, Tokenizer, PreparedData, int]:
    """The model in training mode, its tokenizer, the data, and the block size (the model's
    context unless --block-size, cut to the data when that is shorter). A new model is built
    only once the data (and so a tokenizer trained on it) is there and the memory suffices
    (its weights and optimizer state split in `shards` when FSDP may shard them)."""
    n_positions = start.model.config.n_positions if start.model else scratch_context(config)
    block_size = config.optim.block_size or n_positions
    if block_size > n_positions:
        raise UserError(
            f"--block-size {block_size} is longer than the model's context of {n_positions} tokens."
        )
    data = load_data(config, run, start.tokenizer_spec, block_size)
    if 2 <= len(data.train) <= block_size:
        print(
            f"Note: the training data has only {len(data.train):,} tokens, fewer than --block-size {block_size}; using blocks of {len(data.train) - 1} tokens."
        )
        block_size = len(data.train) - 1
    model, tokenizer = start.model, start.tokenizer
    model_config = model.config if model is not None else scratch_config(config, data.tokenizer)
    if model is None and config.model.n_positions is None and block_size < n_positions:
        # cut to the data: a new model only learns the positions it trains on
        model_config = replace(model_config, n_positions=block_size)
    lora = config.lora.lora_r is not None  # the base is frozen: no gradients, no AdamW state
    check_memory(model_config, config.optim.batch_size, block_size, device, dtype, shards, lora)
    if model is None:
        tokenizer = data.tokenizer
        model = GPT2(model_config).to(device)
    elif data.tokenizer.fingerprint != tokenizer.fingerprint:
        raise UserError(
            f"The data in {data.path} was tokenized with a different tokenizer than the model's. "
            "Prepare it again with --tokenizer pointing at the model folder, or pass the text sources."
        )
    if start.resumed is None and config.model.dropout is not None:
        set_dropout(model, config.model.dropout)
    model.train()
    if len(data.train) < 2:
        raise UserError(
            "The training split has fewer than 2 tokens: there is nothing to learn from. Add more text."
        )
    return model, tokenizer, data, block_size


# --------------------------------------------------------------------------------------------
# memory


def training_memory_bytes(
    config: GPT2Config,
    batch_size: int,
    block_size: int,
    dtype: torch.dtype,
    shards: int = 1,
    frozen_base: bool = False,
    fused_attention: bool = False,
) -> int:
    """A conservative estimate of the memory one training step needs: fp32 weights, gradients
    and AdamW's two moments (16 bytes a parameter, split in `shards` under FSDP; 4 bytes for a
    `frozen_base` under LoRA adapters, whose own few parameters are left out), the
    activations kept for the backward pass (Korthikanti et al. 2022: 34 + 5 x heads x T / width
    values per token and layer, the second term doubled for the unfused attention of CPUs and
    dropped with `fused_attention`: CUDA's flash and memory-efficient SDPA kernels keep no
    T x T scores), and the logits with their gradient."""
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
    scores = 0 if fused_attention else 2 * 5 * H * T / C  # (B, H, T, T) kept per layer
    per_layer = B * T * C * (34 + scores) * act
    logits = 3 * B * T * V * 4
    per_param = 4 if frozen_base else 16
    return int(per_param * params / shards + L * per_layer + logits)


def check_memory(
    config: GPT2Config,
    batch_size: int,
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    shards: int = 1,
    frozen_base: bool = False,
) -> None:
    """Refuse a run whose estimated need (`training_memory_bytes`) exceeds the device's memory,
    before anything is built, naming the numbers and the flag to change."""
    # the whole GPU is this run's to use; on the CPU, what other programs leave free
    cuda = device.type == "cuda"
    available = torch.cuda.mem_get_info(device)[1] if cuda else free_memory(device)
    where = "GPU memory" if cuda else "free RAM"

    def need_at(batch: int, block: int) -> int:
        return training_memory_bytes(config, batch, block, dtype, shards, frozen_base, cuda)

    need = need_at(batch_size, block_size)
    if available is None or need <= available:
        return
    fits_batch = next(
        (b for b in range(batch_size - 1, 0, -1) if need_at(b, block_size) <= available),
        None,
    )
    fits_block = next(
        (
            t
            for t in (2**k for k in range(20, 2, -1))
            if t < block_size and need_at(1, t) <= available
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


# --------------------------------------------------------------------------------------------
# optimizer, precision, compile, length


def make_optimizer(model: GPT2, optim: OptimOptions, device: torch.device) -> torch.optim.AdamW:
    """AdamW at --lr over the parameters that train (with LoRA, only the adapters), with
    weight decay on matrices and embeddings only (fused on CUDA and the CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused: one kernel over all parameters instead of a few per tensor (1.23x the whole
    # step of GPT-2 124M on a 2-core CPU; benchmarks/bench_train.py).
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), fused=fused or None
    )


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on `device`, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def compiled(model: GPT2, mode: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The model to step (`torch.compile`d for --compile on, or auto on CUDA) and a note on
    the choice for the banner."""
    if mode == "on" or (mode == "auto" and device.type == "cuda"):
        return torch.compile(model), "on"
    if mode == "off":
        return model, "off (--compile off)"
    return model, f"off (auto: only on CUDA; this run is on {device.type})"


def steps_for_budget(
    step_model: torch.nn.Module,
    sampler: BlockSampler,
    grad_accum: int,
    autocast: contextlib.AbstractContextManager,
    device: torch.device,
    seconds: float,
    eval_every: int,
    val_tokens: int,
    parallel: Parallel | None = None,
) -> int:
    """How many optimizer steps fit in `seconds`, timed on a few forward/backward passes of
    real batches (the weights and the random state are left as they were). In a distributed
    run rank 0's clock decides, so that every rank runs as many passes and gets its count."""
    parallel = parallel or Parallel()
    rng = torch.get_rng_state()
    # dropout on a GPU draws from the device's generator, which must be left as it was too
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

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

    def keep_timing(n: int) -> bool:
        return n < 3 or (time.perf_counter() - t0 < min(2.0, 0.02 * seconds) and n < 20)

    while parallel.from_main(keep_timing, n):
        one()
        n += 1
    step = parallel.from_main(lambda: (time.perf_counter() - t0) / n * 1.1)  # + optimizer, logs
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    tokens = sampler.batch * sampler.block * grad_accum
    eval_per_step = step / 3 * (val_tokens / tokens) / eval_every  # forward only, every N steps
    reserve = 2 * step / 3 * (val_tokens / tokens) + 2.0  # the last evaluation and the export
    return max(1, int((seconds - reserve) / (step + eval_per_step)))


def total_steps(
    config: TrainConfig, start: Start, steps_per_epoch: int, fit_to_budget: Callable[[], int]
) -> int:
    """The length of the run: --max-steps, else --epochs (default 1) worth of steps; with
    --max-time alone, what the budget holds (`fit_to_budget()`), kept on resume so that the
    schedule does not change."""
    length = config.length
    if length.max_steps or not length.time_budgeted:
        return length.max_steps or max(1, math.ceil((length.epochs or 1.0) * steps_per_epoch))
    if start.resumed is not None and start.resumed.state.total_steps:
        return start.resumed.state.total_steps
    return fit_to_budget()


# --------------------------------------------------------------------------------------------
# the state, the saved config, the banner


def restore_state(
    run: RunDir,
    start: Start,
    fresh: TrainState,
    abandoned: TrainState | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    sampler: BlockSampler,
    writes: bool = True,
) -> TrainState:
    """The state to continue from: the resumed checkpoint's, with optimizer, grad scaler,
    data position and random state put back (the random state last, after everything that
    draws numbers), and the metrics of redone steps dropped; else `fresh`, with what an earlier
    checkpoint-less attempt left removed so that nothing of it looks current. Files are only
    changed when `writes` (rank 0 of a distributed run)."""
    if start.resumed is None:
        if writes:
            truncate_metrics(run.metrics, 0)
            for stale in run.results():
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
        return fresh
    resumed = start.resumed
    state = resumed.state  # an older checkpoint may lack what `fresh` resolved
    state.tokenizer_spec = state.tokenizer_spec or fresh.tokenizer_spec
    state.total_steps = state.total_steps or fresh.total_steps
    if abandoned and (state.best_val_loss is None or abandoned.best_val_loss < state.best_val_loss):
        # best/ keeps the abandoned trajectory's best until this one beats it
        state.best_val_loss, state.best_val_bpc = abandoned.best_val_loss, abandoned.best_val_bpc
        state.best_step = None
    optimizer.load_state_dict(resumed.optimizer_state)
    if scaler is not None and resumed.rng_scaler.get("scaler"):
        scaler.load_state_dict(resumed.rng_scaler["scaler"])
    sampler.epoch, sampler.cursor = state.epoch, state.cursor
    if writes:
        truncate_metrics(run.metrics, state.step)
    restore_rng(resumed.rng_scaler["rng"])
    return state


def write_config(run: RunDir, config: TrainConfig, plan: Plan, data: PreparedData) -> None:
    """Save the resolved options, with what was derived from them, as `config.yaml`."""
    resolved = to_dict(config)
    resolved.update(
        resolved_block_size=plan.block_size,
        resolved_grad_accum=plan.grad_accum,
        resolved_lr=plan.peak_lr,
        resolved_warmup_steps=plan.warmup,
        resolved_total_steps=plan.total_steps,
        data_dir=str(data.path),
    )
    write_text_atomic(run.config, yaml.safe_dump(resolved, sort_keys=False))


def describe(s: Session, dtype: torch.dtype, compile_note: str) -> str:
    """The banner printed before the first step: model, data, steps, device."""
    mc, p, data = s.model.config, s.plan, s.data
    procs = f"{p.world_size} processes x " if p.world_size > 1 else ""
    return (
        f"Model: {s.model.num_parameters() / 1e6:.2f}M parameters, {mc.n_layer} layers x {mc.n_embd} wide, context {mc.n_positions}, vocab {mc.vocab_size}.\n"
        f"Data: {len(data.train):,} training tokens, {len(data.val):,} validation tokens ({data.path}).\n"
        f"Steps: {p.total_steps:,} (from {s.state.step}), {p.tokens_per_step:,} tokens per step ({procs}{p.batch_size} x {p.grad_accum} x {p.block_size}), {p.steps_per_epoch:,} steps per epoch; lr {p.peak_lr:g}, warmup {p.warmup}.\n"
        f"Device: {s.device.type}, precision {precision_name(dtype)}, torch.compile {compile_note}."
    )


# --------------------------------------------------------------------------------------------
# setup


def setup(config: TrainConfig, t_start: float, parallel: Parallel | None = None) -> Session:
    """Resolve everything before the first step (see the module's docstring) and print the
    banner; `config` has its defaults filled in, `t_start` is when the invocation began (the
    --max-time budget counts from it). `parallel`: this rank's place in a torchrun job (rank 0
    changes the run folder and prepares the data first; see `distributed`)."""
    parallel = parallel or Parallel()
    run, resume_from, abandoned = parallel.from_main(open_run, config)
    device = parallel.device(resolve_device(config.runtime.device))
    dtype = resolve_precision(config.runtime.precision, device)
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError("--precision fp16 needs a GPU; on the CPU use fp32 or bf16.")
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the buffers every step allocates again
    seed, optim = config.runtime.seed, config.optim
    torch.manual_seed(seed)
    with parallel.main_first():
        start = load_start(config, resume_from, device)
        # --parallel auto or fsdp may shard the weights and AdamW state over the processes
        shards = parallel.world_size if config.runtime.parallel != "ddp" else 1
        model, tokenizer, data, block_size = model_and_data(
            config, run, start, device, dtype, shards
        )
    if config.runtime.precision == "auto" and device.type == "cpu":
        # bf16 autocast where this CPU runs it faster (AMX, AVX512-BF16), measured once per
        # machine; rank 0 decides for every process
        dtype = parallel.from_main(auto_cpu_precision, "train", model.config.n_embd)

    batch_size, rank, world = optim.batch_size, parallel.rank, parallel.world_size
    sampler = BlockSampler(data.train, block_size, batch_size, seed, rank, world)
    blocks_per_epoch = len(sampler.blocks_in_epoch(0))
    if blocks_per_epoch < batch_size * world:
        print(
            f"Note: one epoch has only {blocks_per_epoch} blocks of {block_size} tokens, fewer than --batch-size {batch_size}; batches will repeat blocks across epochs."
        )
    grad_accum = optim.grad_accum
    if optim.tokens_per_step:
        grad_accum = max(1, round(optim.tokens_per_step / (batch_size * world * block_size)))
    steps_per_epoch = max(1, blocks_per_epoch // (batch_size * world * grad_accum))

    frozen = config.lora.lora_r is not None
    replica = training_memory_bytes(
        model.config, batch_size, block_size, dtype, 1, frozen, device.type == "cuda"
    )
    parallel_note = parallel.distribute(model, config.runtime.parallel, replica, device, seed)
    optimizer = make_optimizer(model, optim, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    autocast = autocast_for(device, dtype)
    step_model, compile_note = compiled(model, config.runtime.compile, device)
    step_model = parallel.wrap(step_model, device)

    def fit_to_budget() -> int:
        steps = steps_for_budget(
            step_model,
            BlockSampler(data.train, block_size, batch_size, seed, rank, world),
            grad_accum,
            autocast,
            device,
            seconds=config.length.max_time * 60 - (time.time() - t_start),
            eval_every=config.evaluation.eval_every,
            val_tokens=min(len(data.val), config.evaluation.eval_tokens or len(data.val)),
            parallel=parallel,
        )
        optimizer.zero_grad(set_to_none=True)
        return steps

    steps = total_steps(config, start, steps_per_epoch, fit_to_budget)
    plan = Plan(
        block_size, batch_size, grad_accum, steps_per_epoch, optim.lr, steps,
        warmup_steps(steps, optim.warmup_steps), world,
    )  # fmt: skip
    fresh = TrainState(tokenizer_spec=start.tokenizer_spec, total_steps=steps)
    if start.resumed is not None:
        parallel.adapt_resumed(start.resumed, optimizer, seed)
    state = restore_state(
        run, start, fresh, abandoned, optimizer, scaler, sampler, writes=parallel.is_main
    )
    if parallel.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        write_config(run, config, plan, data)
    session = Session(
        config, run, device, model, step_model, tokenizer, data, sampler, optimizer, scaler,
        autocast, plan, state, parallel,
    )  # fmt: skip
    print(describe(session, dtype, compile_note))
    if parallel.distributed:
        print(f"Processes: {parallel_note}.")
    if state.step >= steps:
        print(f"Training already reached step {state.step} of {steps}; nothing to do.")
    return session
