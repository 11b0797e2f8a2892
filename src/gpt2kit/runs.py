"""The run folder that `gpt2kit train --out RUN_DIR` writes, in one place.

    RUN_DIR/
      config.yaml            the resolved options of the run (what `--config` reads back)
      data/                  the prepared data, when training on text sources
      checkpoints/           step-NNNNNN/ complete checkpoints, the newest ones and the best
        abandoned/           the best checkpoint of a trajectory that `--resume PATH` left
      best/                  the model of the best validation loss (Hugging Face format)
      final/                 the model at the end of the run
      metrics.jsonl          one JSON line per logged step, evaluation or skipped step
      tensorboard/           the same metrics for TensorBoard (when it is installed)
      loss.png               train and validation loss curves (when matplotlib is installed)
      summary.json           what the run produced and measured
      report.html            the run report: one self-contained page (`gpt2kit report`)

Every other module asks this one for these names; a run folder is also a MODEL argument (its
`best/`, else its `final/` model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BEST = "best"
FINAL = "final"
CHECKPOINTS = "checkpoints"
ABANDONED = "abandoned"
CONFIG = "config.yaml"
DATA = "data"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
LOSS_PLOT = "loss.png"
SUMMARY = "summary.json"
REPORT = "report.html"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder (nothing is created or read by building one)."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def data(self) -> Path:
        return self.path / DATA

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def abandoned(self) -> Path:
        return self.checkpoints / ABANDONED

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def loss_plot(self) -> Path:
        return self.path / LOSS_PLOT

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def report(self) -> Path:
        return self.path / REPORT

    def models(self) -> tuple[Path, Path]:
        """The model folders a run offers as a MODEL argument, the preferred one first:
        `best/`, then `final/`."""
        return self.best, self.final

    def results(self) -> tuple[Path, ...]:
        """What a finished attempt leaves besides checkpoints and metrics (its models, summary,
        plot and report): a fresh start removes them, so nothing of an earlier attempt looks
        current."""
        return self.best, self.final, self.summary, self.loss_plot, self.report

    def is_run_folder(self) -> bool:
        """Whether this folder was written by `gpt2kit train` (what `--overwrite` may delete):
        a `config.yaml` beside checkpoints, metrics or a summary."""
        return self.config.is_file() and any(
            p.exists() for p in (self.checkpoints, self.metrics, self.summary)
        )


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a folder written by `gpt2kit train` (see `RunDir.is_run_folder`)."""
    return RunDir(Path(path)).is_run_folder()
