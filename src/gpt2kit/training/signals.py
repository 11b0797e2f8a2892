"""SIGINT and SIGTERM as a request to stop training cleanly at the next step boundary."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any


class StopSignals:
    """Turn SIGINT/SIGTERM into a request to stop at the next step boundary.

    Used as a context manager around the loop (the previous handlers come back on exit).
    `arrived` is the signal number as soon as one arrived; `received` is what the loop acts
    on, settled from `arrived` at a step boundary (by `distributed.Parallel.agree_stop`, over
    all ranks of a distributed run, so that a signal landing between two checks of one step
    cannot stop one rank and not another). A second SIGINT exits at once (status 130, without
    a checkpoint), for when the user really means it.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet  # say nothing (ranks other than 0 of a distributed run)
        self.arrived: int | None = None
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def name(self) -> str:
        """The name of the signal received (`SIGINT`, `SIGTERM`)."""
        return signal.Signals(self.received).name if self.received else ""

    @property
    def exit_code(self) -> int:
        """The conventional exit status after the signal received: 128 + its number."""
        return 128 + (self.received or 0)

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.arrived is not None and signum == signal.SIGINT:
            sys.stderr.write("\nSecond interrupt: exiting now without a checkpoint.\n")
            os._exit(130)
        self.arrived = signum
        if self.quiet:
            return
        sys.stderr.write(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this step "
            "(press Ctrl-C again to exit at once).\n"
        )

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
