"""What the server tests share: a tiny peaked model, the server on it (a real uvicorn on
127.0.0.1 in a thread of the test process) and official `openai` clients."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import make_hf_model

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "serve-test-key"
NAME = "tiny"
CONTEXT = 128
LIMIT = 64  # --max-tokens-limit of the shared server


class LiveServer:
    """`app` served by uvicorn on a free port of 127.0.0.1 in a daemon thread, for a `with`
    block: started before it (bounded wait), shut down after it."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died while starting"
            assert time.monotonic() < deadline, "the server did not start within 30 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    @property
    def scheduler(self):
        return self.app.state.scheduler


@pytest.fixture(scope="package")
def tiny(tmp_path_factory):
    """A tiny Hugging Face model with peaked distributions (large random weights): the
    `transformers` model, our model and tokenizer loaded from the same folder, and the folder."""
    from gpt2kit.formats.hf import load_model

    folder = tmp_path_factory.mktemp("serve") / "tiny"
    hf = make_hf_model(folder, initializer_range=0.5, n_positions=CONTEXT)
    model, tokenizer, _ = load_model(folder)
    return hf, model, tokenizer, folder


def make_app(tiny, **options):
    """The app over the tiny model, with the shared server's options unless overridden."""
    from gpt2kit.serve.app import create_app

    _, model, tokenizer, _ = tiny
    kwargs = dict(model_name=NAME, api_key=KEY, max_batch=16, max_queue=32, max_tokens_limit=LIMIT)
    return create_app(model, tokenizer, **{**kwargs, **options})


@pytest.fixture(scope="package")
def server(tiny):
    """The shared server: --max-batch 16 --max-queue 32 --max-tokens-limit 64, with a key."""
    with LiveServer(make_app(tiny)) as live:
        yield live


def openai_client(base: str, strict: bool = True, key: str = KEY):
    """The official client against `base`, never retrying; `strict` validates every response
    against the client's own types."""
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        base_url=f"{base}/v1",
        api_key=key,
        max_retries=0,
        timeout=60,
        _strict_response_validation=strict,
    )


@pytest.fixture
def client(server):
    """The `openai` client with strict response validation."""
    return openai_client(server.base)


@pytest.fixture
def lenient(server):
    """The `openai` client without strict validation, for the fields OpenAI's own API sends
    but the client's types do not allow: the `null` logprob of the first echoed prompt token,
    and `finish_reason: null` in a completion stream's chunks before the last."""
    return openai_client(server.base, strict=False)


def auth() -> dict[str, str]:
    """The header that carries the key."""
    return {"Authorization": f"Bearer {KEY}"}
