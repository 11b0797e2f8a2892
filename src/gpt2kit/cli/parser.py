"""The `gpt2kit` entry point: the argument parser built from the commands' options, and `main`,
which runs one command and turns a user's mistake into a one-paragraph message and exit 2."""

from __future__ import annotations

import argparse
import inspect
import sys

from gpt2kit import __version__
from gpt2kit.cli.commands import COMMANDS
from gpt2kit.cli.errors import environment_error
from gpt2kit.config import add_arguments, build_config
from gpt2kit.errors import UserError


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
        config_cls, function = cmd.load()
        doc = inspect.cleandoc(function.__doc__ or "")
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
    config_cls, function = cmd.load()
    values = {k: v for k, v in vars(args).items() if k not in ("command", "_config_file")}
    try:
        config = build_config(config_cls, values, args._config_file)
        status = function(config)
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
