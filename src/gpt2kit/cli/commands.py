"""The sub-commands of `gpt2kit`: each one an options dataclass and the function that takes it.

A command's `load` imports its module only when that command runs or shows its help, so
`gpt2kit prepare` never loads PyTorch. To add a command, add its module (options dataclass +
function) to the library and one `Command` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

Run = Callable[[Any], Any]  # takes the built options; returns an exit status (or None: 0)


class Command(NamedTuple):
    """One sub-command: its name, the line `gpt2kit --help` shows, the flag naming where it
    writes (for messages about the output path) and `load() -> (options class, function)`."""

    name: str
    summary: str
    output: str
    load: Callable[[], tuple[type, Run]]


def _prepare() -> tuple[type, Run]:
    from gpt2kit.data.options import PrepareConfig
    from gpt2kit.data.preparation import run_prepare

    return PrepareConfig, run_prepare


def _train() -> tuple[type, Run]:
    from gpt2kit.training.command import run_train
    from gpt2kit.training.config import TrainConfig

    return TrainConfig, run_train


def _generate() -> tuple[type, Run]:
    from gpt2kit.generate.command import GenerateConfig, run_generate

    return GenerateConfig, run_generate


def _eval() -> tuple[type, Run]:
    from gpt2kit.eval.command import EvalConfig, run_eval

    return EvalConfig, run_eval


def _serve() -> tuple[type, Run]:
    from gpt2kit.serve.command import run_serve
    from gpt2kit.serve.config import ServeConfig

    return ServeConfig, run_serve


def _export() -> tuple[type, Run]:
    from gpt2kit.export.command import run_export
    from gpt2kit.export.config import ExportConfig

    return ExportConfig, run_export


def _report() -> tuple[type, Run]:
    from gpt2kit.report.command import ReportConfig, run_report

    return ReportConfig, run_report


COMMANDS = [
    Command(
        "prepare",
        "Tokenize text sources into a cached token file, with a data report.",
        "--out",
        _prepare,
    ),
    Command(
        "train",
        "Fine-tune GPT-2 or train from scratch, with exact crash-safe resume.",
        "--out",
        _train,
    ),
    Command(
        "generate", "Continue a prompt with a model (greedy or sampled).", "--output", _generate
    ),
    Command(
        "eval",
        "Measure loss, perplexity and bits per character of a model on text.",
        "the output path",
        _eval,
    ),
    Command(
        "serve",
        "Serve a model over an OpenAI-compatible HTTP API, with a playground page.",
        "the output path",
        _serve,
    ),
    Command(
        "export",
        "Write a model as GGUF (llama.cpp), ONNX (ONNX Runtime) or a Hugging Face folder.",
        "--out",
        _export,
    ),
    Command(
        "report",
        "Write a run's report (one HTML page: curves, evaluations, samples), or compare runs.",
        "--out",
        _report,
    ),
]
