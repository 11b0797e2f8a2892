"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with its status
codes, so clients raise the exception they raise against OpenAI (`BadRequestError` for 400,
`AuthenticationError` for 401, `NotFoundError`, `RateLimitError`, ...).

A client's mistake is an `APIError` with a 4xx status and a message that says what to change;
FastAPI's own validation errors become 400s (not 422s) naming the field. Only a bug in the
server gives a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

# The error type OpenAI's API gives with each status.
TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered as `status` with OpenAI's error body (and `headers`, e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.param, self.code = param, code
        self.type = type or TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {...}}`."""
        return error_body(self.message, self.type, self.param, self.code)

    def encoded(self) -> bytes:
        """The body as bytes."""
        return json.dumps(self.body()).encode()


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """A 400 from FastAPI's (Pydantic's) validation errors: each named by its field path."""
    problems, param = [], None
    for e in errors:
        # The top-level field: deeper, a union's members add their type names to the path.
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        field = loc[0] if loc and e.get("type") != "json_invalid" else ""
        param = param or (field or None)
        message = e.get("msg", "invalid value")
        if e.get("type") == "extra_forbidden":
            message = "unknown field (not part of this endpoint's API)"
        elif e.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        elif e.get("type") == "missing":
            message = "this field is required"
        problems.append(f"{field}: {message}" if field else message)
    unique = list(dict.fromkeys(problems))
    return APIError(400, "Invalid request: " + "; ".join(unique[:8]), param=param)


def api_names(problem: str) -> str:
    """A `GenerationParams` problem with its command-line flags named as API fields
    (`--max-new-tokens` -> `max_tokens`, `--top-p` -> `top_p`)."""
    problem = problem.replace("--max-new-tokens", "max_tokens")
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), problem)
