"""Choosing the device and the numeric precision, the same way for every command."""

from __future__ import annotations

import os
import re

import torch

from gpt2kit.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU."""
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
