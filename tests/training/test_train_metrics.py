"""Metric sinks: every record reaches every sink, a resumed run's plot includes what earlier
invocations logged, and redone steps are dropped from the log."""

from __future__ import annotations

import json
from typing import ClassVar

from gpt2kit.runs import RunDir
from gpt2kit.training import metrics
from gpt2kit.training.metrics import Metrics, read_metrics, truncate_metrics


class ListSink:
    """A sink that keeps what it gets, as a test (or an HTML report) would."""

    opened: ClassVar[list[ListSink]] = []

    def __init__(self) -> None:
        self.records, self.finished = [], None

    @classmethod
    def open(cls, run: RunDir) -> ListSink:
        cls.opened.append(cls())
        return cls.opened[-1]

    def write(self, record: dict) -> None:
        self.records.append(record)

    def close(self, finished: bool) -> None:
        self.finished = finished


def test_a_new_sink_is_one_class_named_in_sinks(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "SINKS", (*metrics.SINKS, ListSink))
    run = RunDir(tmp_path)
    m = Metrics.open(run)
    m.write({"type": "train", "step": 1, "loss": 3.0})
    m.write({"type": "eval", "step": 1, "val_loss": 3.5})
    m.close(finished=True)
    sink = ListSink.opened[-1]
    assert [r["step"] for r in sink.records] == [1, 1] and sink.finished is True
    assert read_metrics(run.metrics) == sink.records


def test_the_loss_plot_spans_earlier_invocations_and_redone_steps_are_dropped(tmp_path):
    run = RunDir(tmp_path)
    lines = [{"type": "train", "step": s, "loss": 5.0 - s} for s in (1, 2, 3)]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "tr')
    truncate_metrics(run.metrics, 2)  # resuming from step 2: step 3 is redone
    assert [r["step"] for r in read_metrics(run.metrics)] == [1, 2]
    plot = metrics.LossPlotSink.open(run)
    if plot is None:  # no matplotlib here
        return
    plot.write({"type": "eval", "step": 3, "val_loss": 2.5})
    assert plot.train == [(1, 4.0), (2, 3.0)] and plot.val == [(3, 2.5)]
    plot.close(finished=False)
    assert not run.loss_plot.exists()  # drawn only when the run finishes
    plot.close(finished=True)
    assert run.loss_plot.is_file()
