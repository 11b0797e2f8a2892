"""The run report: one self-contained HTML page per training run, and a page comparing runs.

- `data.py`: a run folder read into `RunData`, tolerant of missing or partial files.
- `svg.py`: line charts as inline SVG (axes, ticks, legend), no plotting library.
- `html.py`: the pages (every user string escaped) and `write_run_report`/`write_compare_report`.
- `command.py`: `gpt2kit report RUN_DIR...` (`ReportConfig`, `run_report`).

Training writes `RUN_DIR/report.html` at the end of every run (`training.metrics.ReportSink`).
"""

from gpt2kit.report.data import RunData, load_run
from gpt2kit.report.html import render_compare, render_run, write_compare_report, write_run_report

__all__ = [
    "RunData",
    "load_run",
    "render_compare",
    "render_run",
    "write_compare_report",
    "write_run_report",
]
