"""LoRA fine-tuning in a training run: the adapters added to the pretrained start model.

`add_adapters` wraps the layers --lora-targets names (`gpt2kit.model.lora`), freezes the rest
and records the base (folder, hub id, SHA-256 of its weights), so that every checkpoint, `best/`
and `final/` of the run is a small PEFT adapter folder (`gpt2kit.formats.peft`) and a resume
loads the same base under the saved adapters. The optimizer only sees what still trains.
"""

from __future__ import annotations

from pathlib import Path

from gpt2kit.errors import UserError
from gpt2kit.formats.hf import base_ref
from gpt2kit.formats.peft import attach_base
from gpt2kit.model import GPT2
from gpt2kit.model.lora import add_lora, lora_layers, lora_spec, trainable_parameters
from gpt2kit.training.config import LoraOptions


def add_adapters(model: GPT2, options: LoraOptions, init: str, folder: Path) -> None:
    """Add the adapters of `options` to `model`, loaded from `folder` (the `--init` MODEL
    `init` resolved), and print what trains."""
    spec = options.spec
    add_lora(model, spec)
    attach_base(model, base_ref(init, folder))
    trainable = sum(p.numel() for p in trainable_parameters(model).values())
    total = sum(p.numel() for p in model.parameters())
    print(
        f"LoRA: rank {spec.r}, alpha {spec.alpha:g} on {len(lora_layers(model))} layers "
        f"({', '.join(spec.targets)}{', biases' if spec.bias == 'all' else ''}): "
        f"{trainable:,} trainable parameters, {100 * trainable / total:.2f}% of {total:,}; "
        "the base weights are frozen."
    )


def check_resumed(model: GPT2, options: LoraOptions, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint whose kind (LoRA of some rank, or full fine-tuning) is not
    what --lora-r asks for: the checkpoint decides what trains, and the default learning rate
    depends on the flag, so a mismatch would silently change the run."""
    spec = lora_spec(model)
    if spec is None and options.lora_r is None:
        return
    if spec is not None and options.lora_r == spec.r:
        return
    saved = f"LoRA adapters of rank {spec.r}" if spec else "a full fine-tuning run"
    fix = f"pass --lora-r {spec.r}" if spec else "leave --lora-r out"
    raise UserError(
        f"The checkpoint {checkpoint} holds {saved}, but this command "
        f"{'has no --lora-r' if options.lora_r is None else f'asks for --lora-r {options.lora_r}'}."
        f" To continue it, {fix}; to start over, add --resume never --overwrite or choose "
        "another --out."
    )
