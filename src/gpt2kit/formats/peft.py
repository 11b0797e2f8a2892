"""PEFT's LoRA adapter folder format, both ways, and applying an adapter to its base model.

An adapter folder holds `adapter_config.json` and `adapter_model.safetensors` exactly as PEFT
writes them for a `transformers` GPT-2 (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`,
A (r, in) and B (out, r) in `nn.Linear` orientation even though the base layers are `Conv1D`s:
PEFT transposes only the merged update, `fan_in_fan_out` true), so
`PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), folder)` loads what gpt2kit
wrote, and gpt2kit loads what PEFT wrote. Beside them gpt2kit writes `gpt2kit_base.json`, the
exact base the adapter belongs to (its folder, hub id and the SHA-256 of its weight files) and
the dropout it was trained with; PEFT never reads that file. No `transformers` or `peft`
import is needed here. Finding and checking the base is `gpt2kit.formats.hf`'s (`load_model`,
`base_ref`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gpt2kit.errors import UserError
from gpt2kit.fsutil import chmod_like_new_file
from gpt2kit.model import GPT2
from gpt2kit.model.lora import (
    LoraSpec,
    add_lora,
    lora_layers,
    lora_spec,
    lora_state_dict,
    merge_lora,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_REF = "gpt2kit_base.json"
_PREFIX = "base_model.model."  # PEFT's prefix for the wrapped model's own parameter names
_LORA_KEY = re.compile(r"^(?P<layer>.+)\.lora_(?P<ab>[AB])\.weight$")


@dataclass
class BaseRef:
    """The base model an adapter applies to: `sha256` of its weight files
    (`gpt2kit.formats.hf.weights_hash`), its local `folder`, and the `hub_id` it came from when
    it came from the hub."""

    sha256: str
    folder: str | None = None
    hub_id: str | None = None

    @property
    def name(self) -> str:
        """What PEFT's `base_model_name_or_path` gets: the hub id, else the folder."""
        return self.hub_id or self.folder or ""


def attach_base(model: GPT2, base: BaseRef) -> None:
    """Remember on `model` (which has adapters) the base it was built on, for `save_adapter`."""
    model.lora_base = base


def is_adapter_folder(path: str | Path) -> bool:
    """Whether `path` is a PEFT adapter folder (it has an `adapter_config.json`)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def save_adapter(model: GPT2, folder: str | Path) -> Path:
    """Write the adapters of `model` (see `gpt2kit.model.lora`) as a PEFT adapter folder, with
    the base reference `attach_base` gave it; returns the folder. The base weights are not
    written: the folder is a few MB at most."""
    spec = lora_spec(model)
    if spec is None:
        raise ValueError("the model has no LoRA adapters to save")
    base: BaseRef | None = getattr(model, "lora_base", None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.name if base else None,
        "revision": None,
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": list(spec.targets),
        "fan_in_fan_out": True,  # GPT-2's layers are Conv1D in transformers
        "bias": spec.bias,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    state = {_PREFIX + k: t.contiguous().cpu() for k, t in lora_state_dict(model).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    chmod_like_new_file(folder / ADAPTER_WEIGHTS)
    if base is not None:
        c = model.config  # the dropout training set, for an exact resume
        dropout = dict(resid_pdrop=c.resid_pdrop, embd_pdrop=c.embd_pdrop, attn_pdrop=c.attn_pdrop)
        ref = {**asdict(base), "dropout": dropout}
        (folder / BASE_REF).write_text(json.dumps(ref, indent=2) + "\n")
    return folder


@dataclass
class Adapter:
    """An adapter folder read back: the `spec`, the rank of each adapted layer (`layers`, by
    our module name), the tensors by our parameter names, the base it belongs to (`base` from
    gpt2kit's reference, `base_name` PEFT's base_model_name_or_path), whether PEFT's
    rank-stabilised scaling is on, and the dropout rates of the model it was trained in."""

    spec: LoraSpec
    layers: dict[str, int]
    state: dict[str, torch.Tensor]
    base: BaseRef | None
    base_name: str | None
    rslora: bool
    dropout: dict[str, float] | None


def read_adapter(folder: str | Path) -> Adapter:
    """Read a PEFT LoRA adapter folder (ours or PEFT's), refusing what gpt2kit cannot apply."""
    folder = Path(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"Could not read {folder / ADAPTER_CONFIG}: {e}") from None
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; gpt2kit applies LoRA adapters")
    for key in ("use_dora", "lora_bias"):
        if config.get(key):
            problems.append(f"{key}=true is not supported")
    if config.get("alpha_pattern"):
        problems.append("a per-layer alpha_pattern is not supported")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save ({config['modules_to_save']}) is not supported")
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        problems.append(f"{ADAPTER_WEIGHTS} is missing")
    if problems:
        raise UserError(f"{folder} is not an adapter gpt2kit can apply:", problems)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in load_file(str(weights)).items():
        name = key.removeprefix(_PREFIX).replace(".default.", ".")
        if not name.startswith("transformer."):
            name = "transformer." + name  # an adapter trained on GPT2Model, not GPT2LMHeadModel
        state[name] = tensor
    layers = {}
    for name, tensor in state.items():
        m = _LORA_KEY.match(name)
        if m and m["ab"] == "A":
            layers[m["layer"]] = tensor.shape[0]  # r of this layer (PEFT's rank_pattern included)
    targets = config.get("target_modules") or []
    spec = LoraSpec(
        r=int(config.get("r", 8)),
        alpha=float(config.get("lora_alpha", 8)),
        dropout=float(config.get("lora_dropout") or 0.0),
        targets=[targets] if isinstance(targets, str) else list(targets),
        bias="all" if config.get("bias") == "all" else "none",
    )
    base, dropout = None, None
    if (folder / BASE_REF).is_file():
        try:
            raw = json.loads((folder / BASE_REF).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"Could not read {folder / BASE_REF}: {e}") from None
        base = BaseRef(**{f.name: raw.get(f.name) for f in fields(BaseRef)})
        dropout = raw.get("dropout")
    return Adapter(
        spec,
        layers,
        state,
        base,
        config.get("base_model_name_or_path"),
        bool(config.get("use_rslora")),
        dropout,
    )


def apply_adapter(
    model: GPT2, adapter: Adapter, folder: Path, base_folder: Path, merge: bool = True
) -> GPT2:
    """Apply `adapter` (read from `folder`) to `model`, its base loaded from `base_folder`, and
    return `model` in eval mode.

    With `merge` (for generation, evaluation, serving and export) the adapters are folded into
    the weights: a plain `GPT2` as fast as the base. Without, the model keeps its `LoraLinear`
    layers with only the adapters trainable (resuming a LoRA run). Loading an adapter folder as a
    MODEL (base resolved, its SHA-256 checked) is `gpt2kit.formats.hf.load_model`.
    """
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(adapter.layers) - names)
    add_lora(model, adapter.spec, layers={n: r for n, r in adapter.layers.items() if n in names})
    if adapter.rslora:  # PEFT's rank-stabilised scaling, alpha / sqrt(r)
        for layer in lora_layers(model).values():
            layer.scaling = layer.alpha / math.sqrt(layer.r)
    # a bias is `...c_attn.base_layer.bias` in an adapted layer, `...ln_1.bias` elsewhere
    params = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()}
    problems = [f"no such layer: {n}" for n in unknown]
    if not adapter.layers:
        problems.append("it holds no lora_A/lora_B weights")
    with torch.no_grad():
        for name, tensor in adapter.state.items():
            p = params.get(name.replace(".base_layer.", "."))
            if p is None or not (_LORA_KEY.match(name) or name.endswith(".bias")):
                problems.append(f"unexpected tensor: {name}")
            elif p.shape != tensor.shape:
                problems.append(
                    f"{name} has shape {tuple(tensor.shape)}, the model {tuple(p.shape)}"
                )
            else:
                p.copy_(tensor)  # into the fresh allocation: exact bits, a new model's layout
    if problems:
        raise UserError(
            f"The adapter in {folder} does not fit the GPT-2 model at {base_folder}:", problems[:8]
        )
    if adapter.dropout:
        _set_dropout(model, adapter.dropout)
    attach_base(model, adapter.base or BaseRef("", str(base_folder), adapter.base_name))
    if merge:
        merge_lora(model)
    return model.eval()


def _set_dropout(model: GPT2, rates: dict[str, float]) -> None:
    """Give `model` the dropout rates training used (only training runs see them)."""
    c = model.config
    c.resid_pdrop = rates.get("resid_pdrop", c.resid_pdrop)
    c.embd_pdrop = rates.get("embd_pdrop", c.embd_pdrop)
    c.attn_pdrop = rates.get("attn_pdrop", c.attn_pdrop)
    model.transformer.drop.p = c.embd_pdrop
    for block in model.transformer.h:
        block.attn.attn_dropout = c.attn_pdrop
        block.attn.resid_dropout.p = block.mlp.dropout.p = c.resid_pdrop
