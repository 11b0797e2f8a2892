"""The `gpt2kit` command line: sub-commands mapped to plain library functions.

Each sub-command is a config dataclass (its flags, see `gpt2kit.config`) and a function that
takes it. A `UserError` becomes a one-paragraph message on stderr and exit status 2, and so
does an OS error that the user's environment caused (a full disk, a read-only or misplaced
output path; see `environment_error`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import os
import sys
from typing import NamedTuple

from gpt2kit import __version__
from gpt2kit.config import add_arguments, build_config
from gpt2kit.errors import UserError


class Command(NamedTuple):
    name: str
    module: str  # where the config class and the function live
    config: str  # the config dataclass
    function: str  # called with the built config
    summary: str
    output: str = "the output path"  # the flag naming where it writes, for messages


COMMANDS = [
    Command(
        "prepare",
        "gpt2kit.data",
        "PrepareConfig",
        "run_prepare",
        "Tokenize text sources into a cached token file, with a data report.",
        "--out",
    ),
    Command(
        "train",
        "gpt2kit.training",
        "TrainConfig",
        "run_train",
        "Fine-tune GPT-2 or train from scratch, with exact crash-safe resume.",
        "--out",
    ),
    Command(
        "generate",
        "gpt2kit.generate",
        "GenerateConfig",
        "run_generate",
        "Continue a prompt with a model (greedy or sampled).",
        "--output",
    ),
    Command(
        "eval",
        "gpt2kit.eval.command",
        "EvalConfig",
        "run_eval",
        "Measure loss, perplexity and bits per character of a model on text.",
    ),
]


# OS errors caused by where the user asked gpt2kit to write, not by a bug, and what to do about
# each ({out} is the command's output flag). The first four mean the output cannot be written
# whatever the call; the others only count when the error names a path.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "The disk is full: free some space, or point {out} at another disk.",
    errno.EDQUOT: "Your disk quota is used up: free some space, or point {out} at another disk.",
    errno.EROFS: "That file system is read-only: point {out} at a writable folder.",
    errno.EFBIG: "That file system cannot hold a file this large: point {out} at another disk.",
    errno.EACCES: "Check the permissions of that path, or point {out} at a folder you can write to.",
    errno.EPERM: "Check the permissions of that path, or point {out} at a folder you can write to.",
    errno.ENOTDIR: "Part of that path is a file, not a folder: choose another {out}, or move the "
    "file away.",
    errno.EEXIST: "A file is in the way where a folder is needed: choose another {out}, or move "
    "the file away.",
    errno.EISDIR: "That path is a folder where a file is expected: give {out} a file name.",
    errno.ENAMETOOLONG: "Choose a shorter {out}.",
}
_WITHOUT_PATH = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def environment_error(e: OSError, output: str) -> str | None:
    """The message for an OS error caused by the user's environment, or None for any other.

    It names the path, the system's reason and the fix; `output` is the flag that chose
    where the command writes. Errors that could be bugs (no path, other codes) give None.
    """
    fix = _ENVIRONMENT_ERRORS.get(e.errno)
    if fix is None or (e.filename is None and e.errno not in _WITHOUT_PATH):
        return None
    reason = e.strerror or os.strerror(e.errno)
    where = f"{e.filename}: {reason}" if e.filename is not None else f"{reason} while writing"
    return f"{where}. {fix.format(out=output)}"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command listed, only `command`'s flags built.

    Building a command's flags imports its module (and so, for most, PyTorch); the others
    appear by name and summary only, so `gpt2kit prepare` never loads what it does not use.
    """
    parser = argparse.ArgumentParser(
        prog="gpt2kit",
        description="Turn your own text into a GPT-2 text generator: prepare data, fine-tune or "
        "train from scratch, evaluate and generate.",
        epilog="Run `gpt2kit COMMAND --help` for the options of a command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"gpt2kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in COMMANDS:
        if cmd.name != command:
            sub.add_parser(cmd.name, help=cmd.summary)
            continue
        module = importlib.import_module(cmd.module)
        config_cls = getattr(module, cmd.config)
        doc = inspect.cleandoc(getattr(module, cmd.function).__doc__ or "")
        p = sub.add_parser(cmd.name, help=cmd.summary, description=doc, formatter_class=_Formatter)
        add_arguments(p, config_cls)
        p.add_argument(
            "--config",
            dest="_config_file",
            metavar="FILE.yaml",
            default=None,
            help="Read options from a YAML file whose keys are the flag names; flags given on the command line win.",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gpt2kit` console script; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    # The command is the first argument (the top level has only --help and --version).
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    cmd = next(c for c in COMMANDS if c.name == args.command)
    module = importlib.import_module(cmd.module)
    values = {k: v for k, v in vars(args).items() if k not in ("command", "_config_file")}
    try:
        config = build_config(getattr(module, cmd.config), values, args._config_file)
        status = getattr(module, cmd.function)(config)
    except UserError as e:
        sys.stderr.write(f"gpt2kit {cmd.name}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"gpt2kit {cmd.name}: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `gpt2kit generate ... | head`
        return 0
    except OSError as e:  # a full disk, a read-only --out, ...: the user's to fix, not a bug
        message = environment_error(e, cmd.output)
        if message is None:
            raise
        sys.stderr.write(f"gpt2kit {cmd.name}: error: {message}\n")
        return 2
    return status if isinstance(status, int) else 0


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
