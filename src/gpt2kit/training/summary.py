"""What a training run produced and measured (`TrainSummary`, saved as `summary.json`), and its
few lines for the terminal."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpt2kit.fsutil import write_text_atomic
from gpt2kit.runs import RunDir


@dataclass
class TrainSummary:
    """What a finished (or stopped) training run produced and measured."""

    run_dir: str
    steps: int
    tokens_seen: int
    stopped: str  # "completed", "max_time", "early_stopping", "SIGINT", "SIGTERM", "non_finite"
    final_model: str | None
    best_model: str | None
    best_val_loss: float | None
    best_val_bpc: float | None
    last_eval: dict | None
    train_seconds: float
    exit_code: int = 0
    evals: list[dict] = field(default_factory=list)

    def save(self) -> Path:
        """Write the summary as the run folder's `summary.json` and return its path."""
        path = RunDir(Path(self.run_dir)).summary
        write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")
        return path


def format_summary(s: TrainSummary, wall: float) -> str:
    """A few lines for the terminal: how the run ended, its figures, where its outputs are,
    and how to continue it; `wall` is the whole invocation's time in seconds."""
    run = RunDir(Path(s.run_dir))
    lines = [
        f"Training {s.stopped} after {s.steps:,} steps ({s.tokens_seen:,} tokens) in {wall:.0f} s."
    ]
    if s.last_eval:
        lines.append(
            f"Last validation: loss {s.last_eval['val_loss']:.4f}, perplexity {s.last_eval['val_ppl']:.2f}, {s.last_eval['val_bpc']:.3f} bits per character."
        )
    if s.final_model:
        lines.append(f"Final model: {s.final_model}")
    if s.best_model:
        lines.append(f"Best model:  {s.best_model} (val loss {s.best_val_loss:.4f})")
    lines.append(f"Metrics: {run.metrics}; checkpoints: {run.checkpoints}")
    if s.stopped in ("SIGINT", "SIGTERM", "max_time"):
        lines.append(f"Continue with the same command (--resume auto picks up {run.checkpoints}).")
    return "\n".join(lines)
