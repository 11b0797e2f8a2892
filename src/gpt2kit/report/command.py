"""`gpt2kit report RUN_DIR...`: its options (`ReportConfig`) and the command, which writes one
run's report, or a page comparing several runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpt2kit.config import option
from gpt2kit.errors import raise_if_problems
from gpt2kit.report.html import write_compare_report, write_run_report
from gpt2kit.runs import is_run_folder

COMPARE = "compare.html"  # the comparison page's default name, in the current folder


@dataclass
class ReportConfig:
    """Options of `gpt2kit report`."""

    runs: list[str] = option(
        [],
        help="Run folders written by `gpt2kit train`: one for its report, several to compare them on one page.",
        positional=True,
        metavar="RUN_DIR",
    )
    out: str | None = option(
        None,
        help=f"The HTML file to write (default: RUN_DIR/report.html for one run, {COMPARE} in the current folder for several).",
    )

    def __post_init__(self) -> None:
        problems = []
        if not self.runs:
            problems.append("give at least one RUN_DIR (a folder written by `gpt2kit train --out`)")
        if self.out is not None and Path(self.out).is_dir():
            problems.append(
                f"--out {self.out} is a folder: give a file name, e.g. {Path(self.out) / 'report.html'}"
            )
        raise_if_problems(problems, "Invalid options for report:")


def run_report(config: ReportConfig) -> int:
    """Write a run's report: one self-contained HTML page (no network needed) with the command
    and options, the data report, the curves, the evaluations, the samples of each evaluation
    side by side, base vs tuned for fine-tuning runs, the models, the timing and how the run
    stopped. With several RUN_DIRs, one page compares them: curves overlaid, final figures in
    one table. Training writes RUN_DIR/report.html itself at the end of every run; this
    command rewrites it, e.g. for a run that is still going or was killed."""
    problems = [
        f"{run} is not a run folder (no config.yaml beside metrics.jsonl, checkpoints/ or summary.json): give the --out folder of `gpt2kit train`"
        for run in config.runs
        if not is_run_folder(run)
    ]
    raise_if_problems(problems, "Cannot write a report:")
    if len(config.runs) == 1:
        target = write_run_report(config.runs[0], config.out)
    else:
        target = write_compare_report(config.runs, config.out or COMPARE)
    print(f"Wrote {target}")
    return 0
