"""Crash-safe training checkpoints (`RUN_DIR/checkpoints/step-NNNNNN/`), the resume state they
hold, and the `Checkpointer` that decides when one is written and which are kept.

A checkpoint is written into a temporary folder, flushed to disk, renamed into place, and only
then marked complete by a `COMPLETE` file; readers ignore folders without it, so a crash at any
moment leaves either the previous checkpoint or the new one, never a half-written one that
looks valid. Each checkpoint is also a Hugging Face-format model folder, and holds everything
needed to continue training exactly: optimizer, `TrainState` (step, data position, best loss,
...), RNG and grad-scaler state. Everything is loaded with `safetensors` or
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from gpt2kit.formats.hf import load_model, save_model
from gpt2kit.fsutil import atomic_directory, fsync_dir
from gpt2kit.model import GPT2
from gpt2kit.runs import RunDir
from gpt2kit.tokenizer import Tokenizer

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_STATE = "trainer_state.json"


@dataclass
class TrainState:
    """Where a training run stands: what a checkpoint needs, besides the weights, the optimizer
    and the random generators, to continue on exactly the same batches and schedule.

    It is saved as `trainer_state.json`, one key per field. `tokenizer_spec` is how the data
    was tokenized (the same data cache on resume); `total_steps` is kept because, fitted to
    --max-time alone, the schedule must not change on resume. Checkpoints of older versions may
    lack these two (None here).
    """

    step: int = 0
    epoch: int = 0
    cursor: int = 0
    tokens_seen: int = 0
    best_val_loss: float | None = None
    best_val_bpc: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    train_seconds: float = 0.0
    tokenizer_spec: str | None = None
    total_steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The state as `trainer_state.json` holds it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        """A state from `trainer_state.json`'s contents (keys it does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def note_evaluation(self, step: int, val_loss: float, val_bpc: float) -> bool:
        """Record an evaluation at `step`: True when it is the best validation loss so far
        (then it is remembered as such), else one more evaluation without improvement."""
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss, self.best_val_bpc, self.best_step = val_loss, val_bpc, step
            self.bad_evals = 0
            return True
        self.bad_evals += 1
        return False


@dataclass
class Checkpoint:
    """A complete checkpoint on disk: its folder and training step."""

    path: Path
    step: int


@dataclass
class LoadedCheckpoint:
    """What a checkpoint holds, read back (see `load_checkpoint`)."""

    model: GPT2
    tokenizer: Tokenizer
    optimizer_state: dict
    rng_scaler: dict
    state: TrainState


def checkpoint_at(path: str | Path) -> Checkpoint | None:
    """The complete checkpoint in folder `path` (`step-NNNNNN` with its marker), or None."""
    path = Path(path)
    m = _STEP_DIR.match(path.name)
    return Checkpoint(path, int(m.group(1))) if m and (path / MARKER).is_file() else None


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (folders without the marker are skipped)."""
    root = RunDir(Path(run_dir)).checkpoints
    found = list(map(checkpoint_at, root.iterdir())) if root.is_dir() else []
    return sorted((c for c in found if c is not None), key=lambda c: c.step)


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: GPT2,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer | dict,
    scaler_state: dict | None,
    state: TrainState,
    rank_rngs: list[dict] | None = None,
) -> Checkpoint:
    """Write a complete checkpoint for `step` and return it.

    `state` is the trainer's position (step, epoch, cursor, best loss, ...); RNG states are
    captured here, at the moment of saving. A distributed run passes the optimizer's state
    gathered in the single-process format, and every rank's RNG state (`rank_rngs`).
    """
    target = RunDir(Path(run_dir)).checkpoints / f"step-{step:06d}"
    if (target / MARKER).is_file():
        return Checkpoint(target, step)  # this step is already safely on disk
    with atomic_directory(target) as tmp:
        save_model(model, tokenizer, tmp)
        optimizer_state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
        _torch_save(optimizer_state, tmp / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        saved = {"rng": rng, "scaler": scaler_state}
        if rank_rngs is not None:
            saved["ranks"] = rank_rngs
        _torch_save(saved, tmp / "rng_scaler.pt")
        (tmp / _STATE).write_text(json.dumps(state.to_json(), indent=2) + "\n")
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


def read_state(ckpt: Checkpoint) -> TrainState:
    """The `TrainState` saved in a checkpoint."""
    return TrainState.from_json(json.loads((ckpt.path / _STATE).read_text()))


def load_checkpoint(ckpt: Checkpoint, device: torch.device) -> LoadedCheckpoint:
    """Read a checkpoint: model and tokenizer, optimizer state, RNG and grad-scaler state, and
    the trainer's `TrainState`."""
    model, tokenizer, _ = load_model(ckpt.path, device=device, merge=False)  # LoRA: adapters
    optimizer_state = torch.load(ckpt.path / "optimizer.pt", map_location=device, weights_only=True)
    rng_scaler = torch.load(ckpt.path / "rng_scaler.pt", map_location="cpu", weights_only=True)
    return LoadedCheckpoint(model, tokenizer, optimizer_state, rng_scaler, read_state(ckpt))


def restore_rng(rng: dict) -> None:
    """Put the saved CPU (and CUDA, when present) random generators back."""
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        states = list(rng["cuda"])
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def abandon_checkpoints(run_dir: Path, later: list[Checkpoint]) -> TrainState | None:
    """Set aside the checkpoints of a trajectory that `--resume PATH` abandons.

    Resume auto must never pick them again, so they leave `checkpoints/`; the best of them (as
    the newest one's trainer state names it) moves to `checkpoints/abandoned/step-NNNNNN/`,
    still a complete checkpoint and model folder, and the rest are deleted. Returns the newest
    one's state (its `best_val_loss` and `best_val_bpc` are that best checkpoint's), or None
    when none of them was the best.
    """
    if not later:
        return None
    state = read_state(later[-1])
    best = next((c for c in later if c.step == state.best_step), None)
    for c in later:
        if c is best:
            target = RunDir(Path(run_dir)).abandoned / c.path.name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            c.path.rename(target)
        else:
            shutil.rmtree(c.path)
    return state if best is not None else None


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
    root = RunDir(Path(run_dir)).checkpoints
    complete_paths = {c.path for c in complete}
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".old-")) or (
                _STEP_DIR.match(child.name) and child not in complete_paths
            ):
                shutil.rmtree(child, ignore_errors=True)
    return deleted


def export_model(model: GPT2, tokenizer: Tokenizer, target: Path) -> Path:
    """Write `model` as a Hugging Face-format folder at `target` (`best/`, `final/`), replacing
    what is there in one rename, and return `target`."""
    with atomic_directory(target) as tmp:
        save_model(model, tokenizer, tmp)
    return target


class Checkpointer:
    """Owns when checkpoints are written and which are kept.

    `maybe_save(step)` writes one every `every` steps (and when `final`); `save(step)` writes
    one now (on a new best, a signal, a stop). After each, retention keeps the newest
    `keep_last` and the best step's. `snapshot()` gives the `TrainState` to save, the data
    position and the time trained included. In a distributed run, `gather()` (which every
    rank calls) gives rank 0 the whole model, the optimizer state and every rank's RNG state,
    and the other ranks None: only rank 0 writes.
    """

    def __init__(
        self,
        run: RunDir,
        model: GPT2,
        tokenizer: Tokenizer,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        snapshot: Callable[[], TrainState],
        every: int,
        keep_last: int,
        gather: Callable[[], tuple[GPT2, dict, list[dict]] | None] | None = None,
    ) -> None:
        self.run, self.model, self.tokenizer = run, model, tokenizer
        self.optimizer, self.scaler, self.snapshot = optimizer, scaler, snapshot
        self.every, self.keep_last, self.gather = every, keep_last, gather

    def save(self, step: int) -> Checkpoint:
        """Write the checkpoint of `step` (unless it is on disk already), then apply retention."""
        state = self.snapshot()
        scaler_state = self.scaler.state_dict() if self.scaler else None
        model, optimizer, rank_rngs = self.model, self.optimizer, None
        if self.gather is not None:
            parts = self.gather()
            if parts is None:  # not rank 0: it writes
                return Checkpoint(self.run.checkpoints / f"step-{step:06d}", step)
            model, optimizer, rank_rngs = parts
        ckpt = save_checkpoint(
            self.run.path, step, model, self.tokenizer, optimizer, scaler_state, state, rank_rngs
        )
        keep = {state.best_step} if state.best_step is not None else set()
        prune_checkpoints(self.run.path, self.keep_last, keep)
        return ckpt

    def maybe_save(self, step: int, final: bool = False) -> Checkpoint | None:
        """Save when `step` is on the cadence (or `final`); the checkpoint written, or None."""
        return self.save(step) if step % self.every == 0 or final else None
