"""The `gpt2kit` command line: sub-commands mapped to plain library functions.

Each sub-command is a config dataclass (its flags, see `gpt2kit.config`) and a function that
takes it. A `UserError` becomes a one-paragraph message on stderr and exit status 2, and so
does an OS error that the user's environment caused (a full disk, a read-only or misplaced
output path; see `environment_error`).

The commands and how each loads (`commands.py`), the parser and `main` (`parser.py`), and the
messages for errors the user's environment caused (`errors.py`).
"""

from gpt2kit.cli.commands import COMMANDS, Command
from gpt2kit.cli.errors import environment_error
from gpt2kit.cli.parser import build_parser, entry, main

__all__ = ["COMMANDS", "Command", "build_parser", "entry", "environment_error", "main"]
