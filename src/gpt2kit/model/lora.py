"""LoRA adapters for `GPT2`, added from outside the model: low-rank updates beside frozen weights.

`add_lora` replaces chosen `nn.Linear` layers of the blocks (`c_attn`, `c_proj`, `c_fc`) by a
`LoraLinear` that keeps the original layer as `base_layer` and adds
`lora_B(lora_A(dropout(x))) * alpha / r`, with `lora_B` zero at the start so the model computes
exactly what it did (Hu et al. 2021). Parameter names are PEFT's (`...c_attn.lora_A.weight`,
`...c_attn.base_layer.weight`), and so is the layout: both matrices in `nn.Linear` orientation,
A (r, in) and B (out, r). `merge_lora` folds the updates into the base weights and gives back a
plain `GPT2`, which then runs exactly as fast as one that never had adapters. The tied embedding
and output head are never adapted. Pure PyTorch, no I/O: the PEFT folder format is
`gpt2kit.formats.peft`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gpt2kit.model.gpt2 import GPT2

# The block layers a LoRA target may name: a layer's own name matches it in every block, as in
# PEFT (`c_proj` adapts the attention's and the MLP's), a qualified name only that one.
LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
LORA_BIAS = ("none", "all")


@dataclass
class LoraSpec:
    """What `add_lora` adds: rank `r`, `alpha` (the update is scaled by alpha / r), dropout on
    the adapters' input, the `targets` (see `LORA_TARGETS`), and `bias`: "none" (biases stay
    frozen) or "all" (every bias of the model trains too, as PEFT's bias="all")."""

    r: int
    alpha: float
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    bias: str = "none"

    def problems(self) -> list[str]:
        """What is wrong with this spec, one message per problem (none: fine)."""
        p = []
        if self.r <= 0:
            p.append(f"the LoRA rank r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            p.append(f"the LoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            p.append(f"the LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown:
            p.append(
                f"LoRA target{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"do{'' if len(unknown) > 1 else 'es'} not exist in GPT-2; choose from "
                f"{', '.join(LORA_TARGETS)} (the tied embeddings and output head are never adapted)"
            )
        if not self.targets:
            p.append("no LoRA target given; choose from " + ", ".join(LORA_TARGETS))
        if self.bias not in LORA_BIAS:
            p.append(f"the LoRA bias must be one of {', '.join(LORA_BIAS)}, got {self.bias!r}")
        return p


class LoraLinear(nn.Module):
    """`base_layer(x) + lora_B(lora_A(dropout(x))) * scaling`, `scaling = alpha / r`.

    A is initialised as `nn.Linear` is (Kaiming-uniform, as PEFT does) and B with zeros.
    """

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        w = base_layer.weight
        self.base_layer = base_layer
        self.lora_A = nn.Linear(
            base_layer.in_features, r, bias=False, device=w.device, dtype=w.dtype
        )
        self.lora_B = nn.Linear(
            r, base_layer.out_features, bias=False, device=w.device, dtype=w.dtype
        )
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        # a plain float, not an nn.Dropout: setting the model's dropout leaves it alone
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(x, self.dropout, self.training) if self.dropout else x  # (B, T, in)
        return self.base_layer(x) + self.lora_B(self.lora_A(h)) * self.scaling  # (B, T, out)

    def delta_weight(self) -> torch.Tensor:
        """The update as a weight of the base layer's shape (out, in): `B @ A * scaling`."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def target_layers(model: GPT2, targets: list[str]) -> list[str]:
    """The names of the block layers that `targets` name (see `LORA_TARGETS`), in model order."""
    return [
        name
        for name, module in model.named_modules()
        if name.startswith("transformer.h.")
        and isinstance(module, nn.Linear)
        and any(_matches(name, t) for t in targets)
    ]


def add_lora(model: GPT2, spec: LoraSpec, layers: dict[str, int] | None = None) -> GPT2:
    """Add LoRA adapters to `model` in place and freeze everything else; returns `model`.

    The adapted layers are those `spec.targets` name, or exactly the names in `layers` (each
    with its own rank, as a PEFT file may hold). Only the adapter matrices (and, with bias "all",
    the biases) keep `requires_grad`. Raises ValueError for a spec with problems.
    """
    problems = spec.problems() if layers is None else []
    if problems:
        raise ValueError("; ".join(problems))
    if layers is None:
        layers = dict.fromkeys(target_layers(model, spec.targets), spec.r)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, r in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"{name} is not a linear layer of the model")
        setattr(parent, child, LoraLinear(base, r, spec.alpha, spec.dropout))
    if spec.bias == "all":
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.requires_grad_(True)
    model.lora_spec = spec  # what a save writes to the adapter's config
    return model


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """The model's `LoraLinear` layers by name (empty for a model without adapters)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def lora_spec(model: nn.Module) -> LoraSpec | None:
    """The spec `add_lora` added to `model`, or None when it has no adapters."""
    return getattr(model, "lora_spec", None) if lora_layers(model) else None


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train (`requires_grad`), by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter file holds, under the model's parameter names: every `lora_A`/`lora_B`
    weight, and with bias "all" every bias (`...c_attn.base_layer.bias`, `...ln_1.bias`)."""
    spec = lora_spec(model)
    keep_bias = spec is not None and spec.bias == "all"
    return {
        n: t.detach()
        for n, t in model.state_dict().items()
        if ".lora_A." in n or ".lora_B." in n or (keep_bias and n.endswith(".bias"))
    }


@torch.no_grad()
def merge_lora(model: GPT2) -> GPT2:
    """Fold every adapter into its base weight (`W += B @ A * alpha / r`), put the plain layers
    back, and return `model`: a `GPT2` without adapters, every parameter trainable again."""
    for name, layer in lora_layers(model).items():
        base = layer.base_layer
        base.weight += layer.delta_weight().to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, base)
    for p in model.parameters():
        p.requires_grad_(True)
    if "lora_spec" in model.__dict__:
        del model.lora_spec
    return model
