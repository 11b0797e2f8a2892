"""The options of `gpt2kit serve` (`ServeConfig`): where it listens, who may call it, its
limits, and how the model is loaded (as `gpt2kit generate` loads it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpt2kit.config import model_option, option
from gpt2kit.errors import UserError
from gpt2kit.generate.generator import QUANTIZE
from gpt2kit.runtime import (
    decode_precision_option,
    device_option,
    device_problem,
    precision_problem,
)

API_KEY_ENV = "GPT2KIT_API_KEY"


@dataclass
class ServeConfig:
    """Options of `gpt2kit serve`."""

    model: str = model_option()
    host: str = option(
        "127.0.0.1",
        help="Address to listen on. The default answers this machine only; 0.0.0.0 answers "
        "every network the machine is on (set --api-key then).",
    )
    port: int = option(8000, help="TCP port to listen on (0: any free port).")
    api_key: str | None = option(
        None,
        help=f"Require this key as 'Authorization: Bearer KEY' on the API (default: the "
        f"{API_KEY_ENV} environment variable; none: no key needed).",
        metavar="KEY",
    )
    model_name: str | None = option(
        None,
        help="The model id the API reports and requests name (none: MODEL as given).",
        metavar="NAME",
    )
    max_batch: int = option(
        16, help="Requests decoded together at most (the KV cache holds this many rows)."
    )
    max_queue: int = option(
        64,
        help="Requests waiting for a free row at most; beyond, the server answers 429 with "
        "Retry-After.",
    )
    max_tokens_limit: int | None = option(
        None,
        help="The largest max_tokens a request may ask for (none: the model's context).",
        metavar="N",
    )
    request_timeout: float = option(
        600.0,
        help="Seconds a request may take, waiting included; past it the server drops it and "
        "answers 408 (a stream ends with an error event).",
    )
    max_body_bytes: int = option(
        1_048_576, help="The largest request body accepted; larger ones get 413."
    )
    cors_origin: list[str] = option(
        [],
        help="Allow browser pages from this origin (e.g. http://localhost:3000) to call the "
        "API; repeatable, '*' allows any. Off by default.",
        metavar="ORIGIN",
    )
    device: str = device_option()
    precision: str = decode_precision_option()
    quantize: str = option(
        "none",
        help="CPU only: 'int8' stores the linear layers' weights as int8 (dynamic "
        "quantization): faster decoding, tokens may differ slightly from fp32.",
    )

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port must be from 0 to 65535, got {self.port}")
        if self.max_batch < 1:
            problems.append(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_queue < 0:
            problems.append(f"--max-queue must be >= 0, got {self.max_queue}")
        if self.max_tokens_limit is not None and self.max_tokens_limit < 1:
            problems.append(
                f"--max-tokens-limit must be at least 1 (none: the model's context), got "
                f"{self.max_tokens_limit}"
            )
        if not self.request_timeout > 0:
            problems.append(f"--request-timeout must be > 0 seconds, got {self.request_timeout}")
        if self.max_body_bytes < 1024:
            problems.append(f"--max-body-bytes must be at least 1024, got {self.max_body_bytes}")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("--api-key must not be blank (leave it out to need no key)")
        if self.quantize not in QUANTIZE:
            problems.append(
                f"--quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )
        problems += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        if problems:
            raise UserError("Invalid options for serve:", problems)
