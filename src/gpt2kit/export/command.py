"""`gpt2kit export`: load MODEL, write it as GGUF, ONNX or a Hugging Face folder beside --out,
and move it into place only once it is complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch

from gpt2kit import runs
from gpt2kit.errors import UserError
from gpt2kit.export.config import RUNTIMES_EXTRA, ExportConfig
from gpt2kit.formats.hf import load_model, save_model
from gpt2kit.fsutil import atomic_directory, fsync_dir
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer

_TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; once the block succeeds it replaces `target` in
    one rename. If the block raises (or is interrupted), the temporary file is removed and
    `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _load(spec: str) -> tuple[GPT2, Tokenizer, Path]:
    """The model, its tokenizer and folder; a folder whose files do not load is the user's to
    fix (exit 2), not a bug."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    try:
        return load_model(spec)
    except (SafetensorError, UnpicklingError, RuntimeError, ValueError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"Could not load the model {spec}: {first}. Point MODEL at a folder saved by "
            "gpt2kit or save_pretrained, a run folder, or a hub id."
        ) from None


def _model_name(folder: Path) -> str:
    """The model's name for the file's metadata: the run's name for a run's best/ or final/."""
    return folder.parent.name if folder.name in (runs.BEST, runs.FINAL) else folder.name


def _size(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return f"{sum(p.stat().st_size for p in files) / 1e6:.1f} MB"


def _how_to_run(config: ExportConfig, out: Path) -> str:
    if config.to == "gguf":
        return (
            f"Run it with llama.cpp: llama-completion -m {out} -p 'Once upon a time' -n 50 "
            f"-no-cnv (llama-cli in older builds), or serve it with llama-server -m {out}\n"
            f"or from Python ({RUNTIMES_EXTRA}): "
            f"llama_cpp.Llama(model_path={str(out)!r})('Once upon a time', max_tokens=50)"
        )
    if config.to == "hf":
        return (
            f"Run it with gpt2kit generate {out} 'Once upon a time', or load it with "
            f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})"
        )
    return (
        f"Run it with ONNX Runtime ({RUNTIMES_EXTRA}): "
        f"onnxruntime.InferenceSession({str(out / 'model.onnx')!r}), inputs input_ids, "
        "attention_mask, position_ids and past_key_values.N.key/.value (a past of length 0 on "
        "the first step), outputs logits and present.N.key/.value"
    )


def run_export(config: ExportConfig) -> None:
    """Write MODEL as a GGUF file (llama.cpp), an ONNX folder (ONNX Runtime) or a Hugging Face
    folder, with weights in --dtype.

    The model is loaded as `gpt2kit generate` loads it. The output is written beside --out and
    renamed into place when complete, so a failed or interrupted export leaves nothing behind
    (and an --overwrite'd --out as it was). What can't be represented faithfully in the
    target format (a character-level tokenizer in GGUF, say) is refused before anything is
    written.
    """
    model, tokenizer, folder = _load(config.model)
    out = Path(config.out).expanduser()
    if config.to == "gguf":
        from gpt2kit.export.gguf import gguf_problems, write_gguf

        problems = gguf_problems(model, tokenizer)
        if problems:
            raise UserError(f"{config.model} cannot be exported to GGUF faithfully:", problems)
        with atomic_file(out) as tmp:
            write_gguf(model, tokenizer, tmp, config.dtype, name=_model_name(folder))
    elif config.to == "hf":
        with atomic_directory(out) as tmp:
            save_model(model.to(_TORCH_DTYPES[config.dtype]), tokenizer, tmp)
    else:
        from gpt2kit.export.onnx import write_onnx

        with atomic_directory(out) as tmp:
            write_onnx(model, tokenizer, tmp, config.dtype)
    print(f"Wrote {out} ({config.to}, {config.dtype}, {_size(out)}) from {folder}")
    print(_how_to_run(config, out))
