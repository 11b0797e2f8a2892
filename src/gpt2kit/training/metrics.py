"""Where training's measurements go: metric sinks behind one small interface.

A record is a flat dict with a `type` (`train`, `eval`, `skipped`) and a `step`; the starting
model of a fine-tuning run is evaluated before the first step, an `eval` at step 0 with
`"base": true`. `Metrics` hands each record to every sink of `SINKS` that could open: the
`metrics.jsonl` log, TensorBoard (when installed), the `loss.png` plot (when matplotlib is
installed) and the HTML run report. A new sink is one class with `open`, `write` and `close`,
named in `SINKS`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

from gpt2kit.fsutil import write_text_atomic
from gpt2kit.runs import RunDir

Record = dict[str, Any]


class MetricSink(Protocol):
    """Receives every metric record of a run, then is closed once."""

    @classmethod
    def open(cls, run: RunDir) -> MetricSink | None:
        """The sink for `run`, or None when it cannot work here (a missing extra)."""
        ...

    def write(self, record: Record) -> None:
        """Take one record, as soon as it is measured."""
        ...

    def close(self, finished: bool) -> None:
        """Release what the sink holds; `finished`: the run ended without an error (a sink
        that draws or renders something for the whole run does it then)."""
        ...


def read_metrics(path: Path) -> list[Record]:
    """The records of a `metrics.jsonl` file, skipping a line cut short by a crash."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after `step` (work that the resumed run will redo); a fresh
    start (`step` 0) drops every line, the starting model's evaluation at step 0 included."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if step > 0 and json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    write_text_atomic(path, "".join(line + "\n" for line in kept))


class JsonlSink:
    """`metrics.jsonl`: one JSON line per record, flushed at once (a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    @classmethod
    def open(cls, run: RunDir) -> JsonlSink:
        return cls(run.metrics)

    def write(self, record: Record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self, finished: bool) -> None:
        self.file.close()


class TensorBoardSink:
    """`tensorboard/`: every number of a record as a scalar named `TYPE/KEY`, at its step."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run: RunDir) -> TensorBoardSink | None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return cls(SummaryWriter(str(run.tensorboard)))

    def write(self, record: Record) -> None:
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                self.writer.add_scalar(f"{record['type']}/{k}", v, record["step"])

    def close(self, finished: bool) -> None:
        self.writer.close()


class LossPlotSink:
    """`loss.png`: train and validation loss curves of the whole run (earlier invocations of a
    resumed run included), drawn when the run finishes."""

    def __init__(self, target: Path, earlier: list[Record]) -> None:
        self.target = target
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        for record in earlier:
            self.write(record)

    @classmethod
    def open(cls, run: RunDir) -> LossPlotSink | None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return None
        return cls(run.loss_plot, read_metrics(run.metrics))

    def write(self, record: Record) -> None:
        if record.get("type") == "train":
            self.train.append((record["step"], record["loss"]))
        elif record.get("type") == "eval":
            self.val.append((record["step"], record["val_loss"]))

    def close(self, finished: bool) -> None:
        if finished and (self.train or self.val):
            plot_losses(self.train, self.val, self.target)


def plot_losses(train: list[tuple[int, float]], val: list[tuple[int, float]], target: Path) -> Path:
    """Draw (step, loss) curves of training and validation into the image `target`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


class ReportSink:
    """`report.html`: the run report (`gpt2kit.report`), rendered from the run folder when the
    run ends, whichever way it ends; a report that cannot be rendered is a warning, never a
    failed run."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    @classmethod
    def open(cls, run: RunDir) -> ReportSink:
        return cls(run)

    def write(self, record: Record) -> None:
        pass  # the report reads the whole run (earlier invocations too) from the folder

    def close(self, finished: bool) -> None:
        try:
            from gpt2kit.report import write_run_report

            write_run_report(self.run.path, crashed=not finished)
        except Exception as e:  # the run's own results matter more than its report
            print(f"Warning: could not write {self.run.report}: {e!r}", file=sys.stderr)


# The sinks every run writes to, each when it can open (the report last: it reads the others).
SINKS: tuple[type[MetricSink], ...] = (JsonlSink, TensorBoardSink, LossPlotSink, ReportSink)


class Metrics:
    """Hands each record to every sink (see `SINKS`); `open` starts those that can work here."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    @classmethod
    def open(cls, run: RunDir) -> Metrics:
        """The metrics of `run`, appending to what earlier invocations recorded."""
        return cls([s for s in (sink.open(run) for sink in SINKS) if s is not None])

    def write(self, record: Record) -> None:
        """Give `record` to every sink."""
        for sink in self.sinks:
            sink.write(record)

    def close(self, finished: bool) -> None:
        """Close every sink (see `MetricSink.close`)."""
        for sink in self.sinks:
            sink.close(finished)
