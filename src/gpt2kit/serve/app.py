"""The HTTP application: `create_app` builds the FastAPI app over a loaded model (testable
without a socket; `command.py` runs it with uvicorn).

Routes: the OpenAI API (`/v1/completions`, `/v1/chat/completions`, `/v1/models`), the
tokenizer endpoints other servers offer (`/tokenize`, `/detokenize`, `/tokenizer_info`),
`/health`, `/metrics` (Prometheus text) and the playground page at `/`. A pure ASGI guard in
front checks the API key (`Authorization: Bearer KEY`, on `/v1/*` and the tokenizer endpoints)
and the body size (413) before anything is parsed; CORS is off unless origins are given.
"""

from __future__ import annotations

import hmac
import importlib.resources
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpt2kit.model import GPT2
from gpt2kit.serve.completions import Cancelled, Service
from gpt2kit.serve.errors import APIError, validation_error
from gpt2kit.serve.metrics import Metrics
from gpt2kit.serve.protocol import (
    ChatRequest,
    ChatResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from gpt2kit.serve.scheduler import Scheduler
from gpt2kit.tokenizer import Tokenizer

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

KEYED_PATHS = ("/tokenize", "/detokenize", "/tokenizer_info")  # and every /v1/ path


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


# With stream: true, Server-Sent Events: each `data` a JSON chunk, the last one `[DONE]`.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}
_STREAMS = {"text/event-stream": {"schema": _SSE_EVENT}}


class Guard:
    """ASGI middleware: the API key on keyed paths (401), the body size (413), before the app
    parses anything; the body read here is handed on to the app."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        keyed = self.api_key is not None and (path.startswith("/v1/") or path in KEYED_PATHS)
        if keyed and scope["method"] != "OPTIONS" and not self._authorized(scope):
            await _send_error(
                send,
                APIError(
                    401,
                    "Missing or incorrect API key: send the server's key as "
                    "'Authorization: Bearer KEY'.",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_error(send, self._too_large())
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size <= self.max_body:
                chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if size > self.max_body:  # read to its end (and dropped), so the client reads the 413
            await _send_error(send, self._too_large())
            return
        body, replayed = b"".join(chunks), False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        value = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            key.strip().encode(), self.api_key.encode()
        )

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"The request body is larger than this server's limit of {self.max_body} bytes "
            "(--max-body-bytes); send fewer or shorter prompts.",
            code="request_too_large",
        )


async def _send_error(send: Send, error: APIError) -> None:
    body = error.encoded()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    model: GPT2,
    tokenizer: Tokenizer,
    *,
    model_name: str,
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    max_tokens_limit: int | None = None,
    request_timeout: float = 600.0,
    max_body_bytes: int = 1_048_576,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The server's FastAPI app over `model` and `tokenizer`, answering as `model_name`.

    The scheduler thread starts with the app (its lifespan) and stops with it; `app.state`
    holds `scheduler`, `service` and `metrics`. Arguments are `gpt2kit serve`'s options.
    """
    scheduler = Scheduler(model.eval(), tokenizer, max_batch, max_queue)
    metrics = Metrics(lambda: scheduler.running, lambda: scheduler.waiting)
    scheduler.metrics = metrics
    n_ctx = model.config.n_positions
    service = Service(
        scheduler,
        tokenizer,
        model_name,
        n_ctx,
        max_tokens_limit=max_tokens_limit,
        request_timeout=request_timeout,
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not scheduler.alive:
            scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(
        title="gpt2kit",
        summary="An OpenAI-compatible API over a GPT-2 model, with continuous batching.",
        version="1",
        lifespan=lifespan,
    )
    app.state.scheduler, app.state.service, app.state.metrics = scheduler, service, metrics
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return _json(e.body(), e.status, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        error = validation_error(e.errors())
        return _json(error.body(), error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: f"There is no {request.url.path} on this server."}.get(
            e.status_code, str(e.detail)
        )
        error = APIError(e.status_code, message, code="not_found" if e.status_code == 404 else None)
        return _json(error.body(), error.status, dict(e.headers or {}))

    @app.exception_handler(Cancelled)
    async def gone(request: Request, e: Cancelled) -> Response:
        return Response(status_code=499)  # the client left: nobody reads this

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        error = APIError(500, "The server failed on this request (a bug in gpt2kit).")
        return _json(error.body(), 500)

    def ensure_running() -> None:
        if not scheduler.alive:  # a test without the lifespan, or after a crash
            raise APIError(503, "The scheduler is not running.")

    @app.post(
        "/v1/completions",
        response_model=None,
        responses={
            200: {"model": CompletionResponse, "content": _STREAMS},
            **_errors(400, 401, 404, 408, 413, 429),
        },
    )
    async def completions(body: CompletionRequest, request: Request):
        """OpenAI's completions: continue one or more prompts."""
        ensure_running()
        if body.stream:
            events = await service.completion_stream(body, request.is_disconnected)
            return StreamingResponse(events, media_type="text/event-stream")
        return _json(await service.completion(body, request.is_disconnected))

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={
            200: {"model": ChatResponse, "content": _STREAMS},
            **_errors(400, 401, 404, 408, 413, 429),
        },
    )
    async def chat_completions(body: ChatRequest, request: Request):
        """OpenAI's chat completions, over the chat template of `completions.py`."""
        ensure_running()
        if body.stream:
            events = await service.chat_stream(body, request.is_disconnected)
            return StreamingResponse(events, media_type="text/event-stream")
        return _json(await service.chat(body, request.is_disconnected))

    def model_card() -> dict[str, Any]:
        return {
            "id": model_name,
            "object": "model",
            "created": service.created,
            "owned_by": "gpt2kit",
        }

    @app.get("/v1/models", response_model=ModelList, responses=_errors(401))
    async def models() -> dict[str, Any]:
        """The one model this server serves."""
        return {"object": "list", "data": [model_card()]}

    # `path`: ids such as runs/shakespeare hold slashes.
    @app.get("/v1/models/{model:path}", response_model=ModelCard, responses=_errors(401, 404))
    async def model_info(model: str) -> dict[str, Any]:
        """One model, by id."""
        service.check_model(model)
        return model_card()

    @app.post("/tokenize", response_model=TokenizeResponse, responses=_errors(400, 401, 404, 413))
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        """The token ids of a text."""
        service.check_model(body.model)
        ids = tokenizer.encode(body.prompt)
        return {"tokens": ids, "count": len(ids), "max_model_len": n_ctx}

    @app.post(
        "/detokenize", response_model=DetokenizeResponse, responses=_errors(400, 401, 404, 413)
    )
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        """The text of token ids."""
        service.check_model(body.model)
        return {"prompt": tokenizer.decode(service.token_ids(body.tokens, "tokens"))}

    @app.get("/tokenizer_info", response_model=TokenizerInfo, responses=_errors(401))
    async def tokenizer_info() -> dict[str, Any]:
        """What the tokenizer is: its size and end-of-text token."""
        return {
            "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eos_token": service.eos_token,
            "eos_token_id": tokenizer.eos_id,
            "model_max_length": n_ctx,
        }

    @app.get("/health", response_model=Health, responses=_errors(503))
    async def health() -> dict[str, Any]:
        """Whether the server decodes (200), with the sequences running and waiting."""
        ensure_running()
        return {"status": "ok", "running": scheduler.running, "waiting": scheduler.waiting}

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> PlainTextResponse:
        """Prometheus metrics (text format 0.0.4)."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        """The playground page (`static/playground.html`)."""
        page = importlib.resources.files("gpt2kit.serve") / "static" / "playground.html"
        if not page.is_file():
            raise APIError(404, "The playground page is not installed with this gpt2kit.")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    return app
