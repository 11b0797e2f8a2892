"""The options of `gpt2kit export` (`ExportConfig`): what to export, to which format, where, in
which number type; checked all at once before any model is loaded."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from gpt2kit.config import model_option, option
from gpt2kit.errors import UserError

TARGETS = ("gguf", "onnx", "hf")
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
HF_DTYPES = ("f32", "f16", "bf16")
# What `--dtype auto` means for each target: f16 is what llama.cpp's own converter writes by
# default; a Hugging Face folder keeps training's f32, as `final/` does.
AUTO_DTYPE = {"gguf": "f16", "hf": "f32"}
# Other spellings users write for the same types (PyTorch's and `gpt2kit generate --precision`'s).
_ALIASES = {
    "fp32": "f32",
    "float32": "f32",
    "fp16": "f16",
    "float16": "f16",
    "half": "f16",
    "bfloat16": "bf16",
    "q8": "q8_0",
}
# The packages each target's writer imports, all in the `export` extra.
REQUIRES = {"gguf": ("gguf",), "onnx": ("onnx", "onnxscript"), "hf": ()}
EXPORT_EXTRA = 'pip install "gpt2kit[export]"'
RUNTIMES_EXTRA = 'pip install "gpt2kit[runtimes]"'


def onnx_dtypes() -> tuple[str, ...]:
    """The `--dtype` values the ONNX writer accepts (its `DTYPES`; f32 where it names none)."""
    try:
        from gpt2kit.export import onnx as onnx_writer
    except ModuleNotFoundError as e:
        if e.name != "gpt2kit.export.onnx":
            raise
        return ("f32",)
    return tuple(getattr(onnx_writer, "DTYPES", ("f32",)))


def missing_packages(target: str) -> list[str]:
    """The packages `target`'s writer needs that are not installed."""
    return [name for name in REQUIRES.get(target, ()) if importlib.util.find_spec(name) is None]


def _looks_like_export(folder: Path) -> bool:
    """Whether `folder` is empty or holds a model (a Hugging Face folder or an ONNX export), so
    that `--overwrite` may replace it without deleting anything else of the user's."""
    names = {p.name for p in folder.iterdir()}
    return not names or "config.json" in names or any(n.endswith(".onnx") for n in names)


@dataclass
class ExportConfig:
    """Options of `gpt2kit export`."""

    model: str = model_option()
    to: str = option(
        help="The format to write: gguf (one file for llama.cpp), onnx (a folder for ONNX "
        "Runtime) or hf (a Hugging Face folder, as training's final/).",
        metavar="gguf|onnx|hf",
    )
    out: str = option(
        help="Where to write: a file for --to gguf (e.g. model.gguf), a folder for onnx and hf. "
        "It appears complete or not at all.",
        metavar="PATH",
    )
    dtype: str = option(
        "auto",
        help=f"Number type of the weights. gguf: {', '.join(GGUF_DTYPES)} (q8_0: 8-bit blocks, "
        "about half of f16's size; norms and biases stay f32 either way); hf: "
        f"{', '.join(HF_DTYPES)}; onnx: {', '.join(onnx_dtypes())}. auto: f16 for gguf, f32 "
        "otherwise. fp32/fp16/bfloat16 spellings are accepted.",
    )
    overwrite: bool = option(
        False,
        help="Replace --out if it exists (a folder only when it holds a model or nothing).",
    )

    def __post_init__(self) -> None:
        problems = []
        if self.to not in TARGETS:
            problems.append(f"--to must be one of {', '.join(TARGETS)}, got {self.to!r}")
        else:
            missing = missing_packages(self.to)
            if missing:
                problems.append(
                    f"--to {self.to} needs {', '.join(missing)}, which "
                    f"{'is' if len(missing) == 1 else 'are'} not installed: {EXPORT_EXTRA}"
                )
            else:
                problem = self._resolve_dtype()
                if problem:
                    problems.append(problem)
        out = Path(self.out).expanduser()
        if not self.out:
            problems.append("--out cannot be empty")
        elif out.exists():
            writes_file = self.to == "gguf"
            if not self.overwrite:
                problems.append(
                    f"--out {self.out} exists: pass --overwrite to replace it, or choose another "
                    "--out"
                )
            elif writes_file and out.is_dir():
                problems.append(
                    f"--out {self.out} is a folder; --to gguf writes one file: give a file name "
                    "such as model.gguf"
                )
            elif not writes_file and not out.is_dir():
                problems.append(
                    f"--out {self.out} is a file; --to {self.to} writes a folder: give a folder"
                )
            elif not writes_file and not _looks_like_export(out):
                problems.append(
                    f"--out {self.out} is a folder of other files (no config.json or .onnx "
                    "file); --overwrite replaces only a model folder: choose another --out"
                )
        if problems:
            raise UserError("Invalid options for export:", problems)

    def _resolve_dtype(self) -> str | None:
        """Set `dtype` to its canonical name for the target; return what is wrong, or None."""
        dtype = _ALIASES.get(self.dtype.lower(), self.dtype.lower())
        accepted = GGUF_DTYPES if self.to == "gguf" else HF_DTYPES
        if self.to == "onnx":
            accepted = onnx_dtypes()
        if dtype == "auto":
            dtype = AUTO_DTYPE.get(self.to, accepted[0])
        if dtype not in accepted:
            return f"--dtype for --to {self.to} must be one of {', '.join(accepted)}, got {self.dtype!r}"
        self.dtype = dtype
        return None
