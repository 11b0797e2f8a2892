"""The server's counters and histograms, rendered in Prometheus' text format for `GET /metrics`.

Written here rather than taken from `prometheus_client`: a handful of series, no dependency.
Observations come from the scheduler thread and the event loop, so each series takes a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

# Seconds: from a few milliseconds (a tiny model) to minutes (a long generation).
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Counter:
    """A value that only goes up (`inc`)."""

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self.value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (>= 0)."""
        with self._lock:
            self.value += amount

    def render(self) -> list[str]:
        """Its lines in the text format."""
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} counter",
            f"{self.name} {_number(self.value)}",
        ]


class Gauge:
    """A value read when rendered, from `read()`."""

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        """Its lines in the text format."""
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.read())}",
        ]


class Histogram:
    """Observations counted into cumulative buckets (upper bounds `buckets`), with their sum."""

    def __init__(self, name: str, help: str, buckets: Sequence[float] = TIME_BUCKETS) -> None:
        self.name, self.help = name, help
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bound
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one observation."""
        with self._lock:
            i = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            self.counts[i] += 1
            self.sum += value

    @property
    def count(self) -> int:
        """How many observations were made."""
        return sum(self.counts)

    def render(self) -> list[str]:
        """Its lines in the text format (cumulative buckets, `+Inf` last, then sum and count)."""
        with self._lock:
            counts, total = list(self.counts), self.sum
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip((*map(_number, self.buckets), "+Inf"), counts, strict=True):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        lines += [f"{self.name}_sum {_number(total)}", f"{self.name}_count {running}"]
        return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Every series the server reports. `running` and `waiting` read the scheduler's state
    when rendered; the others are updated as requests come and go."""

    def __init__(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        self.running = Gauge(
            "gpt2kit_requests_running", "Sequences being decoded now (one per choice).", running
        )
        self.waiting = Gauge(
            "gpt2kit_requests_waiting", "Sequences waiting for a free decoding row.", waiting
        )
        self.requests = Counter("gpt2kit_requests_total", "Generation requests answered.")
        self.rejected = Counter(
            "gpt2kit_requests_rejected_total", "Generation requests refused with 429 (queue full)."
        )
        self.prompt_tokens = Counter("gpt2kit_prompt_tokens_total", "Prompt tokens processed.")
        self.generated_tokens = Counter("gpt2kit_generated_tokens_total", "Tokens generated.")
        self.ttft = Histogram(
            "gpt2kit_time_to_first_token_seconds",
            "Seconds from a sequence's arrival to its first generated token.",
        )
        self.latency = Histogram(
            "gpt2kit_request_latency_seconds",
            "Seconds from a generation request's arrival to its last byte.",
        )

    def render(self) -> str:
        """The whole exposition, as `GET /metrics` answers it."""
        series = (
            self.running,
            self.waiting,
            self.requests,
            self.rejected,
            self.prompt_tokens,
            self.generated_tokens,
            self.ttft,
            self.latency,
        )
        return "\n".join(line for s in series for line in s.render()) + "\n"
