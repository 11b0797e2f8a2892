"""ONNX export: a decoder with a KV cache, in the layout ONNX Runtime's GPT-2 tooling expects.

`write_onnx` writes `model.onnx` with the inputs `input_ids` (B, T), `attention_mask` (B, P + T),
`position_ids` (B, T) and `past_key_values.N.key` / `.value` (B, n_head, P, head_dim) for every
layer N, and the outputs `logits` (B, T, vocab) and `present.N.key` / `.value`
(B, n_head, P + T, head_dim): the names and shapes of Hugging Face Optimum's GPT-2 export, so
`ORTModelForCausalLM` and hand-written ONNX Runtime loops both drive it. Batch (B), sequence (T)
and past (P) lengths are dynamic; the first step passes a past of length 0. Beside it go
`config.json`, `generation_config.json` and the tokenizer files, as in our Hugging Face folders.

The graph comes from `torch.onnx.export(..., dynamo=True)`, PyTorch's recommended exporter, over
`DecoderWithPast`, a wrapper that takes the flat inputs and runs the model's own modules.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gpt2kit.errors import UserError
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer

DTYPES = ("f32", "f16")
_TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16}
# ai.onnx opset of the graph: onnxruntime>=1.18 (our `runtimes` extra) runs up to opset 21, and
# 18 is the oldest the dynamo exporter writes natively (no version conversion pass).
OPSET = 18
# A protobuf message is capped at 2 GiB: past ~1.8 GB of weights they go to `model.onnx.data`.
_EXTERNAL_DATA_BYTES = 1_800_000_000


class DecoderWithPast(nn.Module):
    """GPT-2 over explicit past keys and values, for export: the model's modules, flat tensors in
    and out (no `KVCache` object, whose in-place writes and Python `length` do not export).

    `forward(input_ids, attention_mask, position_ids, past)` takes `past` as one
    `(key, value)` pair per layer, each (B, n_head, P, head_dim), and returns
    `(logits, presents)`: the logits (B, T, vocab) and per layer the past concatenated with
    this step's keys and values, (B, n_head, P + T, head_dim). `attention_mask` (B, P + T)
    marks real (1) and padding (0) positions; attention is causal over those columns and a
    padding position sees itself, exactly as `GPT2.forward` masks, so the logits match it.
    """

    def __init__(self, model: GPT2) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        tf = self.model.transformer
        B, T = input_ids.shape
        S = attention_mask.size(1)  # P + T: every column a new token may attend to
        q_pos = torch.arange(S - T, S, device=input_ids.device).unsqueeze(1)  # (T, 1)
        k_pos = torch.arange(S, device=input_ids.device).unsqueeze(0)  # (1, S)
        valid = attention_mask.bool().view(B, 1, 1, S)  # (B, 1, 1, S)
        mask = ((k_pos <= q_pos) & valid) | (k_pos == q_pos)  # (B, 1, T, S)

        x = tf.wte(input_ids) + tf.wpe(position_ids)  # (B, T, C)
        presents = []
        for block, (past_k, past_v) in zip(tf.h, past, strict=True):
            attn = block.attn
            C, nh = attn.n_embd, attn.n_head
            q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q = q.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)
            k = torch.cat(
                [past_k, k.view(B, T, nh, C // nh).transpose(1, 2)], dim=2
            )  # (B, nh, S, hs)
            v = torch.cat(
                [past_v, v.view(B, T, nh, C // nh).transpose(1, 2)], dim=2
            )  # (B, nh, S, hs)
            presents.append((k, v))
            dtype = q.dtype
            if attn.upcast:  # reorder_and_upcast_attn: attention scores in fp32
                q, k, v = q.float(), k.float(), v.float()
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
            y = y.to(dtype).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
            x = x + attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        return self.model.lm_head(tf.ln_f(x)), presents


def input_names(n_layer: int) -> list[str]:
    """The graph's input names, in order."""
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past]


def output_names(n_layer: int) -> list[str]:
    """The graph's output names, in order."""
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["logits", *present]


def write_onnx(model: GPT2, tokenizer: Tokenizer, folder: Path, dtype: str) -> None:
    """Write `model` as `model.onnx` (a decoder with a KV cache, weights in `dtype`, one of
    `DTYPES`) into `folder`, with `config.json`, `generation_config.json` and the tokenizer
    files beside it. `model` itself is left as it was.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs both; fail here with the fix)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"Exporting to ONNX needs the `{e.name}` package: "
            'pip install "gpt2kit[export]" (onnx and onnxscript).'
        ) from None
    if dtype not in DTYPES:
        raise UserError(f"ONNX export supports the dtypes {', '.join(DTYPES)}, not {dtype!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _export_copy(model, _TORCH_DTYPES[dtype])
    program = _export(model)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(folder / "model.onnx", external_data=weight_bytes > _EXTERNAL_DATA_BYTES)
    _write_hf_files(model, tokenizer, folder)


def _export_copy(model: GPT2, dtype: torch.dtype) -> GPT2:
    """`model` on the CPU in `dtype`, in eval mode; a copy unless it already is all that."""
    weight = model.transformer.wte.weight
    if weight.dtype != dtype or weight.device.type != "cpu" or model.training:
        model = copy.deepcopy(model).to(device="cpu", dtype=dtype)
    return model.eval()


def _export(model: GPT2) -> torch.onnx.ONNXProgram:
    """Trace `DecoderWithPast(model)` with torch.export and translate it to ONNX.

    Zero-length past (the first step, as Optimum runs it): torch.export specializes a
    dimension whose example size is 0 or 1 to that constant, so an empty example past would
    give a graph for the first step only. The example inputs therefore use sizes of 2 and
    more (batch 2, 3 new tokens, 4 past ones) and the past length is declared `Dim(min=0)`;
    the graph keeps no guard on it, and a past of 0 runs as a concatenation with an empty
    tensor, which ONNX Runtime handles (the tests run it, at other batch sizes and lengths).
    The mask's length (P + T) is a dimension of its own to torch.export (a sum of two dims
    cannot be declared), renamed in the ONNX graph to the name Optimum's export gives it.
    """
    config = model.config
    B, T, P = 2, 3, 4
    dt = model.transformer.wte.weight.dtype
    past_shape = (B, config.n_head, P, config.head_dim)
    # Distinct tensors: inputs that alias one another would be traced as one graph input.
    past = [
        (torch.zeros(past_shape, dtype=dt), torch.zeros(past_shape, dtype=dt))
        for _ in range(config.n_layer)
    ]
    args = (
        torch.zeros((B, T), dtype=torch.long),
        torch.ones((B, P + T), dtype=torch.long),
        torch.arange(P, P + T).expand(B, T),
        past,
    )
    batch = torch.export.Dim("batch_size")
    seq = torch.export.Dim("sequence_length")
    past_len = torch.export.Dim("past_sequence_length", min=0)
    total = torch.export.Dim("total_sequence_length")
    kv = {0: batch, 2: past_len}
    dynamic_shapes = {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past": [(kv, kv)] * config.n_layer,
    }
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            DecoderWithPast(model).eval(),
            args,
            input_names=input_names(config.n_layer),
            output_names=output_names(config.n_layer),
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    program.model.graph.inputs[1].shape[1] = "past_sequence_length + sequence_length"
    return program


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that say nothing about this model: torchvision's ops it
    skips, a deprecation inside torch, and that one name given to several axes is used once."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="# The axis name")
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _write_hf_files(model: GPT2, tokenizer: Tokenizer, folder: Path) -> None:
    """`config.json`, `generation_config.json` and the tokenizer files of a Hugging Face folder
    (as `gpt2kit.formats.hf.save_model` writes them, without the weights), with
    `torch_dtype` set to the exported weights' dtype."""
    config = model.config.to_hf_dict()
    config["bos_token_id"] = config["eos_token_id"] = tokenizer.eos_id
    config["torch_dtype"] = str(model.transformer.wte.weight.dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": tokenizer.eos_id, "eos_token_id": tokenizer.eos_id}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tokenizer.save(folder, model_max_length=model.config.n_positions)
