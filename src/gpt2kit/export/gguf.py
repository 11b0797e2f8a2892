"""GPT-2 as a GGUF file for llama.cpp, written with the `gguf` package llama.cpp publishes.

The file is what llama.cpp's own `convert_hf_to_gguf.py` writes for a `GPT2LMHeadModel`:
architecture `gpt2`, its hyper-parameters, llama.cpp's tensor names (`blk.N.attn_qkv`, ...),
weights in `nn.Linear`'s (out, in) layout (which is Hugging Face's Conv1D transposed, as the
converter does), and the whole byte-level BPE tokenizer (tokens, token types, merges, the
`gpt-2` pre-tokenizer, `<|endoftext|>` as BOS and EOS). As in the converter, norms, biases and
the position embeddings stay f32 whatever `dtype`, and a matrix whose rows do not split into
q8_0 blocks is written f16.

What llama.cpp's `gpt2` graph cannot compute the same way is refused (`gguf_problems`) rather
than written as a file that would quietly give other tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2kit.errors import UserError
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer

# llama.cpp's gpt2 graph applies GELU in its tanh form; these activations compute exactly that.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# llama.cpp's name for the pre-tokenizer regex of GPT-2, which `tokenizers`' ByteLevel uses.
PRE_TOKENIZER = "gpt-2"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise UserError(
            'Writing GGUF needs the gguf package: pip install "gpt2kit[export]"'
        ) from None
    return gguf


def gguf_problems(model: GPT2, tokenizer: Tokenizer) -> list[str]:
    """What keeps `model` with `tokenizer` from running in llama.cpp exactly as in gpt2kit: a
    computation its `gpt2` graph does not have, or a tokenizer its byte-level BPE with the
    `gpt-2` pre-tokenizer would split differently. Empty when the export is faithful."""
    config = model.config
    problems = []
    if config.activation_function not in _TANH_GELU:
        problems.append(
            f"activation_function={config.activation_function!r}: llama.cpp's gpt2 computes "
            f"tanh GELU ({', '.join(_TANH_GELU)})"
        )
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
        problems.append(
            "llama.cpp's gpt2 scales attention by 1/sqrt(head size) only; this model sets "
            "scale_attn_weights=false or scale_attn_by_inverse_layer_idx=true"
        )
    problems += _tokenizer_problems(tokenizer)
    return problems


def _tokenizer_problems(tokenizer: Tokenizer) -> list[str]:
    spec = json.loads(tokenizer.backend.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        kind = (  # gpt2kit's char tokenizer is a WordLevel model over single characters
            "a char tokenizer (one id per character)"
            if model.get("type") == "WordLevel"
            else f"a {model.get('type')} tokenizer"
        )
        return [
            f"the model has {kind}; GGUF's gpt2 tokenizer is a byte-level BPE, which would "
            "split text into bytes, not into this vocabulary's tokens (export it --to onnx or "
            "--to hf instead, or train with --tokenizer bpe:N)"
        ]
    problems = []
    pre = spec.get("pre_tokenizer") or {}
    if not (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", True)
    ):
        problems.append(
            "the tokenizer's pre-tokenizer is not GPT-2's (ByteLevel with its regex, no prefix "
            f"space), which llama.cpp's {PRE_TOKENIZER!r} pre-tokenizer reproduces"
        )
    if spec.get("normalizer") is not None:
        problems.append("the tokenizer normalizes text first; llama.cpp's gpt2 tokenizer does not")
    if (
        model.get("dropout")
        or model.get("continuing_subword_prefix")
        or (
            model.get("end_of_word_suffix")
            or model.get("byte_fallback")
            or model.get("ignore_merges")
        )
    ):
        problems.append(
            "the BPE uses dropout, a subword prefix/suffix, byte fallback or ignore_merges, "
            "which llama.cpp's gpt2 tokenizer does not"
        )
    for token in spec.get("added_tokens", []):
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            problems.append(
                f"the added token {token['content']!r} strips spaces or matches whole words "
                "only; llama.cpp matches it as plain text"
            )
    return problems


def _vocabulary(tokenizer: Tokenizer, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) as llama.cpp's converter writes them: one token per row of
    the embedding (rows the tokenizer never produces become unused `[PADi]` tokens)."""
    gguf = _gguf()
    spec = json.loads(tokenizer.backend.to_str())
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: token for token, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in added:
            special = added[i].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def _tensors(model: GPT2) -> list[tuple[str, torch.Tensor]]:
    """The weights under llama.cpp's GPT-2 names (`output` only when the head is untied)."""
    gguf = _gguf()
    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    tr = model.transformer
    out = [
        (names[T.TOKEN_EMBD] + ".weight", tr.wte.weight),
        (names[T.POS_EMBD] + ".weight", tr.wpe.weight),
    ]
    for i, block in enumerate(tr.h):
        for key, module in (
            (T.ATTN_NORM, block.ln_1),
            (T.ATTN_QKV, block.attn.c_attn),
            (T.ATTN_OUT, block.attn.c_proj),
            (T.FFN_NORM, block.ln_2),
            (T.FFN_UP, block.mlp.c_fc),
            (T.FFN_DOWN, block.mlp.c_proj),
        ):
            out.append((names[key].format(bid=i) + ".weight", module.weight))
            out.append((names[key].format(bid=i) + ".bias", module.bias))
    out.append((names[T.OUTPUT_NORM] + ".weight", tr.ln_f.weight))
    out.append((names[T.OUTPUT_NORM] + ".bias", tr.ln_f.bias))
    if not model.config.tie_word_embeddings:
        out.append((names[T.OUTPUT] + ".weight", model.lm_head.weight))
    return out


def _encode(name: str, tensor: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """The tensor's bytes in the file and their GGML type: f32 for vectors and the position
    embeddings (as the converter keeps them), else `dtype`; q8_0 falls back to f16 for rows
    that do not split into blocks of 32, as the converter does."""
    gguf = _gguf()
    Q = gguf.GGMLQuantizationType
    data = tensor.detach().to(torch.float32).cpu().numpy()
    qtype = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[dtype]
    if data.ndim <= 1 or name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]):
        qtype = Q.F32
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(data, Q.F16), Q.F16


def write_gguf(
    model: GPT2, tokenizer: Tokenizer, path: Path, dtype: str, name: str | None = None
) -> None:
    """Write `model` and `tokenizer` to the GGUF file `path` with weights in `dtype` (f32, f16,
    bf16 or q8_0). Raises `UserError` naming what llama.cpp could not run faithfully (see
    `gguf_problems`) before writing anything."""
    problems = gguf_problems(model, tokenizer)
    if problems:
        raise UserError("This model cannot be exported to GGUF faithfully:", problems)
    gguf = _gguf()
    config = model.config
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    writer = gguf.GGUFWriter(path, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        if name:
            writer.add_name(name)
        writer.add_context_length(config.n_positions)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.mlp_width)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokens, types, merges = _vocabulary(tokenizer, config.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokenizer.eos_id)  # GPT-2 has one token for both
        writer.add_eos_token_id(tokenizer.eos_id)
        writer.add_add_bos_token(False)

        for tensor_name, tensor in _tensors(model):
            data, qtype = _encode(tensor_name, tensor, dtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
