"""Serving: `gpt2kit serve`, an OpenAI-compatible HTTP server with continuous batching.

Modules, each importing only the ones above it (FastAPI is imported by `app.py` alone, so
the options load without the `serve` extra):

- `config.py`: `ServeConfig`, the options of `gpt2kit serve`.
- `metrics.py`: the counters and histograms behind `GET /metrics` (Prometheus text).
- `scheduler.py`: the thread that owns the model and a `DecodeEngine`: admits queued jobs
  between steps, steps every busy slot, retires finished and cancelled ones.
- `protocol.py`: OpenAI's request and response objects as Pydantic models.
- `errors.py`: errors in OpenAI's shape and status codes.
- `completions.py`: the endpoints' logic: requests to jobs, events to responses and SSE
  streams, the chat template.
- `app.py`: `create_app`, the FastAPI app (routes, API key, body limit, CORS, playground).
- `command.py`: `run_serve`, the command (uvicorn).
- `static/playground.html`: the playground page served at `/`.
"""

from gpt2kit.serve.command import run_serve
from gpt2kit.serve.config import ServeConfig

__all__ = ["ServeConfig", "run_serve"]
