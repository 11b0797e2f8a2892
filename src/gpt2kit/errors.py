"""The error type for mistakes a user can fix.

A `UserError` is caught by the CLI and printed as one paragraph on stderr with exit status 2,
never as a traceback. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a missing file, a bad flag value, a bad model folder).

    The message names what is wrong and how to fix it. `problems` may hold several messages
    collected at once, so a user sees every mistake in a single run.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


def raise_if_problems(problems: list[str], headline: str) -> None:
    """Raise one `UserError` listing every problem, or return when there are none."""
    if problems:
        raise UserError(headline, problems)
