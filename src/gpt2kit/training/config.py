"""The options of `gpt2kit train` (`TrainConfig`), in groups of related options.

Each group is a dataclass declared with `gpt2kit.config.group`: in `--help` its options are
listed under its title, while flags, YAML keys and the saved `config.yaml` stay flat. In Python
an option lives in its group (`config.optim.lr`); `TrainConfig` also takes and exposes every
option by its flat name (`TrainConfig(lr=1e-3)`, `config.lr`), as the Python API always has.
Each group reports its own problems; `TrainConfig` adds those that involve several groups.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from gpt2kit.config import flat_names, group, option
from gpt2kit.data.options import DEFAULT_VAL_FRACTION, VAL_FRACTION_HELP, ReadOptions
from gpt2kit.errors import raise_if_problems
from gpt2kit.model import PRESETS
from gpt2kit.model.lora import LORA_TARGETS, LoraSpec
from gpt2kit.runtime import device_option, device_problem, precision_problem
from gpt2kit.tokenizer import trained_spec_problem

# Peak learning rates when --lr is not given: from scratch for a 128-wide model (scaled down as
# 1 / width for wider ones, as in muP), for fine-tuning a pretrained GPT-2, and for its LoRA
# adapters: they start at zero and need larger steps; 1e-3 x alpha / r (2 at the default alpha 16,
# r 8) is about the LoRA paper's GPT-2 step (2e-4 x 32 / 4), and beat 2e-4 in bench_lora.py.
SCRATCH_LR, FINETUNE_LR, LORA_LR = 5e-3, 5e-5, 1e-3


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _at_least_one(options: Any, names: tuple[str, ...]) -> list[str]:
    """A problem for each of `names` (options of `options`) that is set and below 1."""
    values = [(n, getattr(options, n)) for n in names]
    return [f"{_flag(n)} must be at least 1, got {v}" for n, v in values if v is not None and v < 1]


def _positive(options: Any, names: tuple[str, ...]) -> list[str]:
    """A problem for each of `names` (options of `options`) that is set and not above 0."""
    values = [(n, getattr(options, n)) for n in names]
    return [f"{_flag(n)} must be positive, got {v}" for n, v in values if v is not None and v <= 0]


@dataclass
class ModelOptions:
    """The model that `--init scratch` builds (its size, its tokenizer) and its dropout."""

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

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = []
        if self.preset is not None and self.preset not in PRESETS:
            p.append(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.tokenizer is not None and trained_spec_problem(self.tokenizer):
            p.append(trained_spec_problem(self.tokenizer))
        p += _at_least_one(self, ("n_layer", "n_head", "n_embd", "n_positions"))
        if self.dropout is not None and not 0 <= self.dropout < 1:
            p.append(f"--dropout must be in [0, 1), got {self.dropout}")
        return p


@dataclass
class LoraOptions:
    """LoRA: train small low-rank adapters beside the frozen pretrained weights."""

    lora_r: int | None = option(
        None,
        help="Fine-tune LoRA adapters of this rank instead of every weight: the base model stays frozen, the optimizer and checkpoints hold only the adapters, and best/ and final/ are PEFT adapter folders (a MODEL for generate, eval, serve and export).",
    )
    lora_alpha: float = option(
        16.0, help="The adapters' update is scaled by alpha / r (x2 at --lora-r 8)."
    )
    lora_dropout: float = option(
        0.0, help="Dropout on the adapters' input (the model's own dropout applies as well)."
    )
    lora_targets: str = option(
        "c_attn,c_proj,c_fc",
        help=f"Comma-separated layers to adapt in every block: {', '.join(LORA_TARGETS)} (c_proj is the attention's and the MLP's).",
    )
    lora_bias: Literal["none", "all"] = option(
        "none",
        help="none: biases stay frozen; all: every bias trains too and is saved with the adapters.",
    )

    @property
    def spec(self) -> LoraSpec | None:
        """The adapters to add (`gpt2kit.model.lora`), or None without --lora-r."""
        if self.lora_r is None:
            return None
        return LoraSpec(
            self.lora_r, self.lora_alpha, self.lora_dropout, self.targets, self.lora_bias
        )

    @property
    def targets(self) -> list[str]:
        """--lora-targets as a list."""
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = _at_least_one(self, ("lora_r",)) + _positive(self, ("lora_alpha",))
        if not 0 <= self.lora_dropout < 1:
            p.append(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            p.append(
                f"--lora-targets: {', '.join(unknown) or 'none given'} {'is' if len(unknown) == 1 else 'are'} not a layer of GPT-2's blocks; choose from {', '.join(LORA_TARGETS)} (the tied embeddings and output head are never adapted)"
            )
        return p


@dataclass
class OptimOptions:
    """Batches, the AdamW optimizer and the learning-rate schedule."""

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
        help="Peak learning rate (default: 5e-3 x 128 / width from scratch, at most 5e-3; 5e-5 for fine-tuning; 1e-3 with --lora-r).",
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

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = _at_least_one(self, ("grad_accum", "batch_size", "block_size", "tokens_per_step"))
        p += _positive(self, ("lr",))
        if not 0 <= self.min_lr_ratio <= 1:
            p.append(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            p.append("--grad-clip and --weight-decay cannot be negative")
        return p


@dataclass
class LengthOptions:
    """How long to train: steps, epochs or a time budget."""

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

    @property
    def time_budgeted(self) -> bool:
        """Whether --max-time alone sets the length of the run (no --max-steps, no --epochs)."""
        return self.max_time is not None and not self.max_steps and not self.epochs

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        return _at_least_one(self, ("max_steps",)) + _positive(self, ("epochs", "max_time"))


@dataclass
class EvalOptions:
    """Validation, samples and early stopping."""

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

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = _at_least_one(self, ("eval_every", "sample_tokens", "eval_tokens", "patience"))
        if self.samples < 0:
            p.append("--samples cannot be negative")
        return p


@dataclass
class OutputOptions:
    """Checkpoints, their retention, and the metrics log."""

    save_every: int = option(
        500,
        help="Write a checkpoint every N steps (also at the end, on a new best, and on SIGINT/SIGTERM).",
    )
    keep_last: int = option(2, help="Keep the newest K checkpoints (the best one is always kept).")
    log_every: int = option(10, help="Write a line to metrics.jsonl every N steps.")

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = _at_least_one(self, ("save_every", "log_every"))
        if self.keep_last < 1:
            p.append(
                f"--keep-last must be at least 1 (the newest checkpoint is what resume uses), got {self.keep_last}"
            )
        return p


@dataclass
class RuntimeOptions:
    """The random seed, and where and how the numbers are computed."""

    seed: int = option(1337, help="Random seed: initialisation, data order, dropout.")
    device: str = device_option("train")
    precision: str = option(
        "auto",
        help="auto (bf16 on GPUs that have it, else fp16 with a grad scaler; on the CPU bf16 "
        "autocast only where this machine measures it faster for the model, else fp32), fp32, "
        "bf16, fp16.",
    )
    compile: str = option("auto", help="torch.compile the model: auto (on CUDA only), on, off.")
    parallel: str = option(
        "auto",
        help="With several processes (torchrun, --nproc): ddp (a whole replica per process), fsdp (FSDP2: weights, gradients and AdamW state sharded over the processes), or auto (ddp when a replica fits a device, else fsdp).",
    )
    nproc: int | None = option(
        None,
        help="Train on N processes of this machine (one per GPU; gloo on the CPU): runs this command under torchrun --standalone --nproc-per-node N. For several machines, start torchrun yourself.",
    )

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        p = _at_least_one(self, ("nproc",))
        if self.compile not in ("auto", "on", "off"):
            p.append(f"--compile must be auto, on or off, got {self.compile!r}")
        if self.parallel not in ("auto", "ddp", "fsdp"):
            p.append(f"--parallel must be auto, ddp or fsdp, got {self.parallel!r}")
        return p + [
            q for q in (device_problem(self.device), precision_problem(self.precision)) if q
        ]


@flat_names
@dataclass
class TrainConfig:
    """Options of `gpt2kit train` (also the keys of its YAML config and of `config.yaml`)."""

    # What a run's config.yaml records beside the options (the values derived from them), so
    # that `--config RUN_DIR/config.yaml` reads it back: these keys are accepted and ignored.
    DERIVED_KEYS: ClassVar[tuple[str, ...]] = (
        "resolved_block_size", "resolved_grad_accum", "resolved_lr", "resolved_warmup_steps",
        "resolved_total_steps", "data_dir",
    )  # fmt: skip

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
    model: ModelOptions = group(ModelOptions, "the model (with --init scratch)")
    val: list[str] = option(
        [], help="Explicit validation sources (default: a fraction of the training documents)."
    )
    val_fraction: float = option(DEFAULT_VAL_FRACTION, help=VAL_FRACTION_HELP)
    reading: ReadOptions = group(ReadOptions, "reading the sources")
    lora: LoraOptions = group(LoraOptions, "LoRA adapters (fine-tuning only)")
    optim: OptimOptions = group(OptimOptions, "batches, optimizer and learning rate")
    length: LengthOptions = group(LengthOptions, "how long to train")
    evaluation: EvalOptions = group(EvalOptions, "evaluation, samples and early stopping")
    output: OutputOptions = group(OutputOptions, "checkpoints and metrics")
    runtime: RuntimeOptions = group(RuntimeOptions, "seed, device and precision")
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
        if self.init != "scratch":
            given = [
                f"--{n}" for n in ("preset", "tokenizer") if getattr(self.model, n) is not None
            ]
            if given:
                p.append(
                    f"{' and '.join(given)} only apply with --init scratch (fine-tuning keeps the model's size and tokenizer); add --init scratch or leave {'them' if len(given) > 1 else 'it'} out"
                )
            sizes = ("n_layer", "n_head", "n_embd", "n_positions")
            if any(getattr(self.model, n) is not None for n in sizes):
                p.append("--n-layer/--n-head/--n-embd/--n-positions only apply with --init scratch")
        elif self.lora.lora_r is not None:
            p.append(
                "--lora-r adapts a pretrained model, and --init scratch has none: give --init a model (gpt2, a folder, a run) or leave --lora-r out"
            )
        if not 0 < self.val_fraction < 1:
            p.append(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.lora.lora_r is not None and self.runtime.parallel == "fsdp":
            p.append(
                "--parallel fsdp does not shard a model with LoRA adapters (--lora-r): use --parallel ddp (or auto), which all-reduces only the adapters' gradients"
            )
        groups = (self.model, self.lora, self.optim, self.length, self.evaluation, self.output)
        for options in groups:
            p += options.problems()
        p += self.runtime.problems() + self.reading.problems()
        raise_if_problems(p, "Invalid options for train:")

    def with_defaults(self) -> TrainConfig:
        """This config with every option left unset filled in: from scratch, the recipe that
        README "Training from scratch" documents (tiny preset, --tokenizer auto, batch 8,
        dropout 0, lr 5e-3 x 128 / width); when fine-tuning, batch 8 and lr 5e-5 (1e-3 with
        --lora-r)."""
        m, o = self.model, self.optim
        if self.init != "scratch":
            lr = o.lr or (FINETUNE_LR if self.lora.lora_r is None else LORA_LR)
            return replace(self, optim=replace(o, batch_size=o.batch_size or 8, lr=lr))
        preset = m.preset or "tiny"
        width = m.n_embd or PRESETS[preset]["n_embd"]
        return replace(
            self,
            model=replace(
                m,
                preset=preset,
                tokenizer=m.tokenizer or "auto",
                dropout=0.0 if m.dropout is None else m.dropout,
            ),
            optim=replace(
                o, batch_size=o.batch_size or 8, lr=o.lr or SCRATCH_LR * min(1.0, 128 / width)
            ),
        )
