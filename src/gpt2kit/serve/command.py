"""`gpt2kit serve`: load the model, build the app and run it with uvicorn."""

from __future__ import annotations

import socket
import sys

from gpt2kit.errors import UserError
from gpt2kit.serve.config import ServeConfig


def _require_server_libraries() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"gpt2kit serve needs FastAPI and uvicorn ({e.name} is missing): "
            "pip install 'gpt2kit[serve]'."
        ) from None


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (port 0: a free one), or a UserError naming why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(
            f"Cannot listen on {host}:{port}: {e.strerror or e}. Pick another --port (0: any "
            "free one) or --host."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_serve(config: ServeConfig) -> None:
    """Serve MODEL over HTTP: the OpenAI API (/v1/completions, /v1/chat/completions,
    /v1/models), the tokenizer endpoints, /health, /metrics and a playground page at /.

    One scheduler decodes up to --max-batch requests together, admitting new ones between
    steps (continuous batching); up to --max-queue more wait, beyond that requests get 429.
    With --api-key (or GPT2KIT_API_KEY) the API needs 'Authorization: Bearer KEY'. It listens
    on 127.0.0.1 unless --host says otherwise. Stop it with Ctrl-C.
    """
    _require_server_libraries()
    import uvicorn

    from gpt2kit.generate.generator import Generator
    from gpt2kit.serve.app import create_app

    sock = _bind(config.host, config.port)  # before loading: a taken port fails fast
    generator = Generator.from_pretrained(
        config.model, config.device, config.precision, quantize=config.quantize
    )
    app = create_app(
        generator.model,
        generator.tokenizer,
        model_name=config.model_name or config.model,
        api_key=config.api_key,
        max_batch=config.max_batch,
        max_queue=config.max_queue,
        max_tokens_limit=config.max_tokens_limit,
        request_timeout=config.request_timeout,
        max_body_bytes=config.max_body_bytes,
        cors_origins=config.cors_origin,
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    sys.stdout.write(
        f"Serving {config.model_name or config.model} on {generator.device} "
        f"(--max-batch {config.max_batch}, --max-queue {config.max_queue})\n"
        f"  Playground: {base}/\n"
        f"  API:        {base}/v1  (OpenAI-compatible; docs at {base}/docs)\n"
        f"  API key:    {'required' if config.api_key else 'none needed'}\n"
    )
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
