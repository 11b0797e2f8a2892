"""Choosing the device and the numeric precision, the same way for every command."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

from gpt2kit.config import option
from gpt2kit.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_option(verb: str = "run") -> Any:
    """The --device option of every command that runs a model, declared once."""
    return option("auto", help=f"Where to {verb}: {', '.join(DEVICES)} or cuda:N.")


def decode_precision_option() -> Any:
    """The --precision option of the commands that decode (generate, serve), declared once."""
    return option(
        "auto",
        help=f"Numeric precision: {', '.join(PRECISIONS)} (auto: bf16 on GPUs; on the CPU bf16 "
        "only where this machine measures it faster for the model, else fp32).",
    )


def device_problem(name: str) -> str | None:
    """Why `name` is not a valid --device value, or None when it is (`cuda:N` is accepted)."""
    if name in DEVICES or re.fullmatch(r"cuda:\d+", name):
        return None
    return f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}"


def precision_problem(name: str) -> str | None:
    """Why `name` is not a valid --precision value, or None when it is."""
    return (
        None
        if name in PRECISIONS
        else f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}"
    )


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for, but PyTorch sees no CUDA GPU. Use --device cpu or auto."
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UserError(
            "--device mps was asked for, but Apple's MPS backend is not available. Use --device cpu or auto."
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device {name!r}; use one of {', '.join(DEVICES)}.") from None


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU (where
    commands that know the model's width then ask `auto_cpu_precision` whether bf16 pays)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in _DTYPES:
        raise UserError(f"Unknown precision {name!r}; use one of {', '.join(PRECISIONS)}.")
    return _DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """The short name (`fp32`, `bf16`, `fp16`) of a dtype."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


def free_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: free GPU memory on CUDA, Linux's
    MemAvailable (else the available physical pages) on the CPU; None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------
# CPU memory reuse
#
# PyTorch has no caching allocator on the CPU: every tensor comes from malloc and goes back to
# it. glibc serves blocks over its mmap threshold (at most 32 MB) with a fresh mmap and unmaps
# them on free, so each training step pays page faults, and the kernel's zeroing, for every
# activation, logit and gradient buffer it allocates again: measured on GPT-2 124M (batch
# 4 x 128, fp32, 2 cores), 0.24 s of a 1.74 s step, a quarter of it in the kernel.

_MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_MMAP_MAX": -4}


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process and hand it out again instead of
    unmapping it (no mmap for large blocks; the heap is trimmed only above 2 GiB free), for a
    long-running CPU job that allocates the same large buffers every step. The resident size
    then stays near the peak (7% above it measured on 124M). Returns whether it applies: on
    Linux with glibc, unless $GPT2KIT_MALLOC=system or the user tunes malloc already
    ($GLIBC_TUNABLES, $MALLOC_MMAP_MAX_, ...). Done once per process."""
    tuned = any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
    applies = (
        platform.system() == "Linux"
        and platform.libc_ver()[0] == "glibc"
        and os.environ.get("GPT2KIT_MALLOC", "keep") != "system"
        and not tuned
    )
    if applies:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        applies = bool(
            mallopt(_MALLOPT["M_TRIM_THRESHOLD"], 2**31 - 1) and mallopt(_MALLOPT["M_MMAP_MAX"], 0)
        )
    return applies


# --------------------------------------------------------------------------------------------
# CPU precision, chosen by measurement
#
# Whether bf16 pays on a CPU depends on the chip: with AVX512-BF16 or AMX a bf16 matmul runs
# several times faster than fp32; without them PyTorch emulates it and GPT-2 training under bf16
# autocast runs 2.6x slower than fp32. So `--precision auto` on the CPU times one transformer
# block of the model's width in both precisions, once per machine, and keeps the faster.

CPU_BF16_MIN_SPEEDUP = 1.15  # below this, fp32's exactness is worth more than the time
CPU_MEASURE_MIN_WIDTH = 256  # narrower models: per-op overhead dominates and fp32 always wins
_CACHE_FILE = "cpu-precision.json"


def cache_dir() -> Path:
    """gpt2kit's per-user cache folder: $GPT2KIT_CACHE, else $XDG_CACHE_HOME/gpt2kit, else
    ~/.cache/gpt2kit (created on first write, not here)."""
    if os.environ.get("GPT2KIT_CACHE"):
        return Path(os.environ["GPT2KIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gpt2kit"


def _cpu_identity() -> str:
    """What a CPU precision measurement depends on: the chip, its bf16 features, the threads
    PyTorch uses and PyTorch's version."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    features = ",".join(sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}))
    return f"{model} [{features}] threads={torch.get_num_threads()} torch={torch.__version__}"


def _block_seconds(width: int, task: str, repeats: int = 3) -> tuple[float, float]:
    """Best-of-`repeats` seconds (fp32, bf16) for one GPT-2 block of `width`: a forward and
    backward of 4 x 128 tokens under autocast for "train", eight one-token forwards with
    weights in the dtype for "decode" (decoding at batch 1 reads every weight once per token).
    The two precisions alternate, so a busy machine slows both alike."""
    from gpt2kit.model import GPT2Config
    from gpt2kit.model.gpt2 import Block

    config = GPT2Config(
        n_embd=width, n_head=max(1, width // 64), n_layer=1, vocab_size=8,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    runs = []
    for dtype in (torch.float32, torch.bfloat16):
        block = Block(config, 0)
        if task == "decode":
            block = block.to(dtype).eval()
            x = torch.randn(1, 1, width).to(dtype)
        else:
            x = torch.randn(4, 128, width, requires_grad=True)
        runs.append(_block_run(block, x, task, dtype))
    best = [float("inf"), float("inf")]
    for round_ in range(repeats + 1):  # round 0 warms up: allocations, oneDNN's kernels
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            run()
            if round_:
                best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def _block_run(block: torch.nn.Module, x: torch.Tensor, task: str, dtype: torch.dtype):
    """One timed unit of `task` on `block` (see `_block_seconds`)."""

    def decode() -> None:
        with torch.no_grad():
            for _ in range(8):
                block(x, None, False, None)

    def train() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            y = block(x, None, True, None)
        y.float().sum().backward()

    return decode if task == "decode" else train


def cpu_bf16_speedup(task: str, width: int) -> float:
    """How many times faster bf16 runs than fp32 on this CPU for `task` ("train": autocast
    forward + backward; "decode": bf16 weights, one token) at model width `width`, measured once
    per machine and cached in `cache_dir()`."""
    key = f"{_cpu_identity()} task={task} width={width}"
    path = cache_dir() / _CACHE_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    fp32, bf16 = _block_seconds(width, task)
    speedup = round(fp32 / bf16, 3)
    cached[key] = speedup
    try:
        from gpt2kit.fsutil import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(cached, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only home: measure again next time
    return speedup


def auto_cpu_precision(task: str, width: int) -> torch.dtype:
    """What `--precision auto` means on the CPU for a model of width `width`: bf16 when this
    machine runs it at least `CPU_BF16_MIN_SPEEDUP` times faster than fp32 (measured, cached),
    else fp32. Models narrower than `CPU_MEASURE_MIN_WIDTH` are fp32 without measuring."""
    if width < CPU_MEASURE_MIN_WIDTH:
        return torch.float32
    speedup = cpu_bf16_speedup(task, width)
    return torch.bfloat16 if speedup >= CPU_BF16_MIN_SPEEDUP else torch.float32
