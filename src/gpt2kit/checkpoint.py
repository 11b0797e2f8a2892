"""Crash-safe training checkpoints: `RUN_DIR/checkpoints/step-NNNNNN/`.

A checkpoint is written into a temporary folder, flushed to disk, renamed into place, and only
then marked complete by a `COMPLETE` file; readers ignore folders without it, so a crash at any
moment leaves either the previous checkpoint or the new one, never a half-written one that
looks valid. Each checkpoint is also a Hugging Face-format model folder, and holds everything
needed to continue training exactly: optimizer, step, data position, RNG and grad-scaler state.
Everything is loaded with `safetensors` or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt2kit.formats.hf import load_model, save_model
from gpt2kit.fsutil import atomic_directory, fsync_dir
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class Checkpoint:
    """A complete checkpoint on disk: its folder and training step."""

    path: Path
    step: int


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (folders without the marker are skipped)."""
    root = checkpoint_dir(Path(run_dir))
    found = []
    if root.is_dir():
        for child in root.iterdir():
            m = _STEP_DIR.match(child.name)
            if m and (child / MARKER).is_file():
                found.append(Checkpoint(child, int(m.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: GPT2,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    scaler_state: dict | None,
    state: dict[str, Any],
) -> Checkpoint:
    """Write a complete checkpoint for `step` and return it.

    `state` is the trainer's JSON-able position (step, epoch, cursor, best loss, ...); RNG
    states are captured here, at the moment of saving.
    """
    target = checkpoint_dir(run_dir) / f"step-{step:06d}"
    if (target / MARKER).is_file():
        return Checkpoint(target, step)  # this step is already safely on disk
    with atomic_directory(target) as tmp:
        save_model(model, tokenizer, tmp)
        _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        _torch_save({"rng": rng, "scaler": scaler_state}, tmp / "rng_scaler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    _write_marker(target)
    return Checkpoint(target, step)


def _torch_save(obj: Any, path: Path) -> None:
    """`torch.save`, with a write that failed for want of space reported as the OSError it is.

    PyTorch reports a failed write as a bare RuntimeError ("file write failed"); when the disk
    is then (nearly) full, that is ENOSPC on `path`, which the CLI turns into a message.
    """
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        if "write" in str(e).lower() and shutil.disk_usage(path.parent).free < 64 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise


def _write_marker(folder: Path) -> None:
    with open(folder / MARKER, "w") as f:
        f.write("ok\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)


def load_checkpoint(
    ckpt: Checkpoint, device: torch.device
) -> tuple[GPT2, Tokenizer, dict, dict, dict[str, Any]]:
    """Read a checkpoint: `(model, tokenizer, optimizer_state, rng_scaler, trainer_state)`."""
    model, tokenizer, _ = load_model(ckpt.path, device=device)
    optimizer_state = torch.load(ckpt.path / "optimizer.pt", map_location=device, weights_only=True)
    rng_scaler = torch.load(ckpt.path / "rng_scaler.pt", map_location="cpu", weights_only=True)
    state = json.loads((ckpt.path / "trainer_state.json").read_text())
    return model, tokenizer, optimizer_state, rng_scaler, state


def restore_rng(rng: dict) -> None:
    """Put the saved CPU (and CUDA, when present) random generators back."""
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        states = list(rng["cuda"])
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def abandon_checkpoints(run_dir: Path, later: list[Checkpoint]) -> dict[str, Any] | None:
    """Set aside the checkpoints of a trajectory that `--resume PATH` abandons.

    Resume auto must never pick them again, so they leave `checkpoints/`; the best of them (as
    the newest one's trainer state names it) moves to `checkpoints/abandoned/step-NNNNNN/`,
    still a complete checkpoint and model folder, and the rest are deleted. Returns that best
    checkpoint's `best_val_loss` and `best_val_bpc`, or None when none of them was the best.
    """
    if not later:
        return None
    state = json.loads((later[-1].path / "trainer_state.json").read_text())
    best = next((c for c in later if c.step == state.get("best_step")), None)
    for c in later:
        if c is best:
            target = checkpoint_dir(run_dir) / "abandoned" / c.path.name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            c.path.rename(target)
        else:
            shutil.rmtree(c.path)
    if best is None:
        return None
    return {"best_val_loss": state["best_val_loss"], "best_val_bpc": state.get("best_val_bpc")}


def prune_checkpoints(run_dir: Path, keep_last: int, keep_steps: set[int]) -> list[int]:
    """Delete all but the newest `keep_last` checkpoints and those in `keep_steps` (the best).

    Incomplete leftovers (no marker, or `.tmp-*` folders from a crash) are removed too.
    Returns the steps deleted.
    """
    complete = list_checkpoints(run_dir)
    keep = {c.step for c in complete[-keep_last:]} if keep_last > 0 else set()
    keep |= keep_steps
    deleted = []
    for c in complete:
        if c.step not in keep:
            shutil.rmtree(c.path, ignore_errors=True)
            deleted.append(c.step)
    root = checkpoint_dir(run_dir)
    complete_paths = {c.path for c in complete}
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".old-")) or (
                _STEP_DIR.match(child.name) and child not in complete_paths
            ):
                shutil.rmtree(child, ignore_errors=True)
    return deleted
