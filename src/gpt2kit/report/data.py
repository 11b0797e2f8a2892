"""A run folder read into plain data for the report (`RunData`), whatever state it is in.

Every file is optional: a run interrupted before its summary, a run without evaluations, a
metrics line cut short by a crash, a missing or unreadable `config.yaml` or data report all
give a report with what there is, and a note saying what is missing. Nothing here imports
PyTorch, except the command line, which asks `TrainConfig` for its defaults when it can.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpt2kit.runs import RunDir

Record = dict[str, Any]

# How the run stopped: summary.json's `stopped`, or what the report infers without it.
STOPS = {
    "completed": "Completed: every planned step was trained.",
    "early_stopping": "Early stop: the validation loss did not improve for --patience evaluations in a row.",
    "max_time": "Time budget spent (--max-time): stopped cleanly with a checkpoint; the same command continues it.",
    "SIGINT": "Stopped by a signal (SIGINT, Ctrl-C) after saving a checkpoint; the same command continues it.",
    "SIGTERM": "Stopped by a signal (SIGTERM) after saving a checkpoint; the same command continues it.",
    "non_finite": "Stopped after repeated steps with a non-finite loss or gradient norm (try a lower --lr).",
    "error": "Ended by an error before writing its summary (see the terminal); the latest checkpoint is kept.",
    "interrupted": "Interrupted or still running: there is no summary.json for its latest steps (killed, or a crash); the latest checkpoint is kept.",
}


@dataclass
class RunData:
    """What the report shows of one run folder: its files read, each one optional."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    train: list[Record] = field(default_factory=list)  # `train` records, by step
    evals: list[Record] = field(default_factory=list)  # evaluations of trained weights, by step
    base: Record | None = None  # the starting model's evaluation (fine-tuning runs)
    skipped: list[Record] = field(default_factory=list)  # steps skipped as non-finite
    summary: dict[str, Any] | None = None  # summary.json, when it is this run's latest
    data_report: dict[str, Any] | None = None
    stopped: str = "interrupted"  # a key of STOPS
    notes: list[str] = field(default_factory=list)  # what is missing or unreadable

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)

    @property
    def fine_tuning(self) -> bool:
        """Whether the run started from a trained model (`--init` is not `scratch`)."""
        return self.config.get("init", "scratch") != "scratch"

    @property
    def last_step(self) -> int:
        """The last step any record or the summary mentions (0: none yet)."""
        steps = [r["step"] for r in (*self.train, *self.evals, *self.skipped)]
        if self.summary:
            steps.append(self.summary.get("steps") or 0)
        return max(steps, default=0)

    @property
    def last_eval(self) -> Record | None:
        return self.evals[-1] if self.evals else None

    @property
    def best_eval(self) -> Record | None:
        """The evaluation of the lowest validation loss (the starting model's never counts)."""
        finite = [e for e in self.evals if _finite(e.get("val_loss"))]
        return min(finite, key=lambda e: e["val_loss"]) if finite else None

    @property
    def stop_text(self) -> str:
        return STOPS.get(self.stopped, self.stopped)

    @property
    def train_seconds(self) -> float | None:
        """Seconds trained (all invocations): the summary's, else the last train record's."""
        if self.summary and self.summary.get("train_seconds") is not None:
            return self.summary["train_seconds"]
        return self.train[-1].get("elapsed_s") if self.train else None

    @property
    def tokens_seen(self) -> int | None:
        if self.summary:
            return self.summary.get("tokens_seen")
        seen = [r.get("tokens_seen") for r in (*self.train, *self.evals)]
        return max((t for t in seen if isinstance(t, int)), default=None)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_records(path: Path) -> list[Record]:
    """The records of a metrics.jsonl file; a line cut short (a crash) or not a record is
    skipped."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _by_step(records: list[Record]) -> list[Record]:
    """`records` in step order, the last one of each step kept (a redone step's)."""
    return sorted({r["step"]: r for r in records}.values(), key=lambda r: r["step"])


def _read_json(path: Path, notes: list[str], what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        notes.append(f"{what} ({path.name}) could not be read: {e}")
        return None


def load_run(path: str | Path, crashed: bool = False) -> RunData:
    """Read the run folder `path` (see `gpt2kit.runs`); `crashed`: the run is ending with an
    error now, so a summary.json on disk is an earlier invocation's."""
    run = RunDir(Path(path))
    data = RunData(Path(path))
    notes = data.notes
    try:
        config = yaml.safe_load(run.config.read_text(encoding="utf-8"))
        data.config = config if isinstance(config, dict) else {}
    except FileNotFoundError:
        notes.append("config.yaml is missing: the command and options are unknown.")
    except (OSError, yaml.YAMLError) as e:
        notes.append(f"config.yaml could not be read: {e}")

    records = read_records(run.metrics) if run.metrics.is_file() else []
    if not run.metrics.is_file():
        notes.append("metrics.jsonl is missing: no curves or evaluations to show.")
    data.train = _by_step([r for r in records if r.get("type") == "train"])
    evals = [r for r in records if r.get("type") == "eval"]
    data.evals = _by_step([r for r in evals if not r.get("base")])
    bases = [r for r in evals if r.get("base")]
    data.base = bases[-1] if bases else None
    data.skipped = _by_step([r for r in records if r.get("type") == "skipped"])

    summary = None if crashed else _read_json(run.summary, notes, "The summary")
    if isinstance(summary, dict):
        recorded = max((r["step"] for r in records), default=0)
        if (summary.get("steps") or 0) >= recorded:
            data.summary = summary
        else:
            notes.append(
                f"summary.json is from an earlier invocation (step {summary.get('steps')}); the "
                f"metrics go on to step {recorded}."
            )
    data.stopped = (
        "error" if crashed else str(data.summary.get("stopped")) if data.summary else "interrupted"
    )

    folders = [Path(data.config["data_dir"])] if data.config.get("data_dir") else []
    for folder in (*folders, run.data):
        report = _read_json(folder / "report.json", notes, "The data report")
        if isinstance(report, dict):
            data.data_report = report
            break
    return data


def command_line(config: dict[str, Any]) -> str | None:
    """A `gpt2kit train` command that gives the run's resolved options: its sources, then the
    options that differ from their defaults (or every option, when the defaults cannot be
    known here)."""
    if not config:
        return None
    try:
        from gpt2kit.config import to_dict
        from gpt2kit.training.config import TrainConfig

        defaults = to_dict(TrainConfig())
    except Exception:  # a command without the defaults is still right
        defaults = {}
    words = ["gpt2kit", "train", *map(str, config.get("sources") or [])]
    for key, value in config.items():
        if key in ("sources", "data_dir") or key.startswith("resolved_") or value is None:
            continue
        if key in defaults and defaults[key] == value:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
