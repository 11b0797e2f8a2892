"""The HTTP app over a real socket: the API key, every error status in OpenAI's shape, the
tokenizer endpoints, /health and /metrics, cancellation of a request whose client left, the
queue bound (429) and a bounded load test."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from .conftest import CONTEXT, KEY, NAME, LiveServer, auth, make_app, openai_client


def post(server, path: str, body, headers: dict | None = None, **kw) -> httpx.Response:
    headers = auth() if headers is None else headers
    return httpx.post(server.base + path, json=body, headers=headers, timeout=60, **kw)


def error_of(response: httpx.Response, status: int) -> dict:
    """The OpenAI-shaped error of `response`, which has `status`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def metric(server, name: str) -> float:
    text = httpx.get(server.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def idle(scheduler, timeout: float = 10) -> bool:
    """Whether `scheduler` runs no job (waiting up to `timeout` seconds for it)."""
    deadline = time.monotonic() + timeout
    while scheduler.running and time.monotonic() < deadline:
        time.sleep(0.02)
    return scheduler.running == 0


# -- the key


def test_without_the_key_401_with_it_200(server):
    body = {"model": NAME, "prompt": "Hi", "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        error = error_of(post(server, "/v1/completions", body, headers), 401)
        assert error["code"] == "invalid_api_key"
    assert post(server, "/v1/completions", body).status_code == 200
    assert httpx.get(server.base + "/v1/models").status_code == 401
    assert httpx.get(server.base + "/v1/models", headers=auth()).status_code == 200
    # The official client raises its AuthenticationError.
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.AuthenticationError):
        openai_client(server.base, key="wrong").models.list()
    # Health, metrics and the page need no key.
    assert httpx.get(server.base + "/health").status_code == 200
    assert httpx.get(server.base + "/metrics").status_code == 200


def test_without_a_key_configured_none_is_needed(tiny):
    with LiveServer(make_app(tiny, api_key=None)) as live:
        r = httpx.post(live.base + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
        assert r.status_code == 200


# -- errors


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "Hi", "temperature": -1}, "temperature"),
        ({"prompt": "Hi", "logprobs": 6}, "logprobs"),
        ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"prompt": "Hi", "max_new_tokens": 5}, "max_new_tokens"),  # not an API field
        ({"prompt": "Hi", "n": 0}, "n"),
        ({"prompt": [1.5]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [50257]}, "prompt"),  # not a token of the vocabulary
        ({"prompt": "Hi", "max_tokens": 65}, "max_tokens"),  # over --max-tokens-limit
        ({"prompt": "Hi", "n": 49}, "n"),  # more rows than the server ever holds
        ({"prompt": "Hi", "top_p": 0}, "top_p"),
        ({"prompt": "Hi", "presence_penalty": 0.5}, "presence_penalty"),
        ({"prompt": "Hi", "best_of": 2}, "best_of"),
        ({"prompt": "Hi", "stop": ""}, "stop"),
        ({"prompt": "Hi", "stop": ["ok", ""]}, "stop"),
        ({}, "prompt"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(server, body, param):
    error = error_of(post(server, "/v1/completions", body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("role", ["user", "system"])
def test_a_chat_message_without_content_is_a_400_unless_the_assistants(server, role):
    messages = [{"role": role}, {"role": "user", "content": "Hi"}]
    error = error_of(post(server, "/v1/chat/completions", {"messages": messages}), 400)
    assert error["param"] == "messages" and "messages[0].content" in error["message"]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant"},
        {"role": "user", "content": "Go on"},
    ]
    r = post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_invalid_json_is_a_400_not_a_422(server):
    r = httpx.post(
        server.base + "/v1/completions",
        content=b"{not json",
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert "JSON" in error_of(r, 400)["message"]


def test_prompt_and_max_tokens_beyond_the_context_is_context_length_exceeded(server, tiny):
    _, _, tokenizer, _ = tiny
    ids = [tokenizer.eos_id] * (CONTEXT - 10)
    error = error_of(post(server, "/v1/completions", {"prompt": ids, "max_tokens": 11}), 400)
    assert error["code"] == "context_length_exceeded"
    assert str(CONTEXT) in error["message"]
    long_chat = {"messages": [{"role": "user", "content": "word " * 200}], "max_tokens": 4}
    error = error_of(post(server, "/v1/chat/completions", long_chat), 400)
    assert error["code"] == "context_length_exceeded"
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError):
        openai_client(server.base).completions.create(model=NAME, prompt=ids, max_tokens=11)


def test_an_unknown_model_or_path_is_a_404(server):
    error = error_of(post(server, "/v1/completions", {"model": "gpt-4", "prompt": "Hi"}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    error_of(httpx.get(server.base + "/v1/models/gpt-4", headers=auth()), 404)
    error_of(httpx.get(server.base + "/v1/nothing-here", headers=auth()), 404)
    error_of(httpx.get(server.base + "/nothing-here"), 404)


def test_a_model_id_with_slashes_is_listed_retrieved_and_accepted(tiny):
    with LiveServer(make_app(tiny, model_name="runs/shakespeare", api_key=None)) as live:
        card = httpx.get(live.base + "/v1/models/runs/shakespeare").json()
        assert card["id"] == "runs/shakespeare"
        body = {"model": "runs/shakespeare", "prompt": "Hi", "max_tokens": 1}
        assert httpx.post(live.base + "/v1/completions", json=body).status_code == 200


def test_a_request_without_max_tokens_fits_a_lower_max_tokens_limit(tiny):
    # The default of 16 is capped by --max-tokens-limit, as chat's default is: a request that
    # names no max_tokens cannot be over the limit.
    with LiveServer(make_app(tiny, max_tokens_limit=4, api_key=None)) as live:
        client = openai_client(live.base)
        r = client.completions.create(model=NAME, prompt="Hi", extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"
        body = {"prompt": "Hi", "max_tokens": 5}
        assert error_of(httpx.post(live.base + "/v1/completions", json=body), 400)["param"] == (
            "max_tokens"
        )


def test_an_oversize_body_is_a_413(server):
    body = {"prompt": "x" * 1_100_000, "max_tokens": 1}
    error_of(post(server, "/v1/completions", body), 413)
    # Without a Content-Length (chunked), the limit holds as the body is read.
    chunks = (json.dumps(body)[i : i + 65536].encode() for i in range(0, 1_200_000, 65536))
    r = httpx.post(server.base + "/v1/completions", content=chunks, headers=auth(), timeout=60)
    error_of(r, 413)


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """A server with one row and no queue, on a model with a long context (2,048), so one
    long generation holds the server busy."""
    from conftest import make_hf_model
    from gpt2kit.formats.hf import load_model
    from gpt2kit.serve.app import create_app

    folder = tmp_path_factory.mktemp("busy") / "m"
    make_hf_model(folder, n_positions=2048)
    model, tokenizer, _ = load_model(folder)
    app = create_app(model, tokenizer, model_name=NAME, max_batch=1, max_queue=0)
    with LiveServer(app) as live:
        yield live


def test_a_full_queue_is_a_429_with_retry_after_and_a_client_gone_frees_its_row(busy):
    long = {"prompt": "Go", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    before = metric(busy, "gpt2kit_generated_tokens_total")
    with httpx.stream("POST", busy.base + "/v1/completions", json=long, timeout=60) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")  # it is being decoded
        assert busy.scheduler.running == 1
        r = httpx.post(busy.base + "/v1/completions", json={"prompt": "Hi"}, timeout=60)
        error = error_of(r, 429)
        assert error["code"] == "queue_full" and int(r.headers["Retry-After"]) >= 1
        openai = pytest.importorskip("openai")
        with pytest.raises(openai.RateLimitError):
            openai_client(busy.base).completions.create(model=NAME, prompt="Hi")
    # The client closed its stream: the server drops the request long before its 2,000 tokens.
    assert idle(busy.scheduler)
    generated = metric(busy, "gpt2kit_generated_tokens_total") - before
    time.sleep(0.3)
    assert metric(busy, "gpt2kit_generated_tokens_total") - before == generated < 2000
    assert metric(busy, "gpt2kit_requests_rejected_total") >= 2
    assert post(busy, "/v1/completions", {"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_a_non_streaming_client_gone_frees_its_row(busy):
    body = {"prompt": "Go", "max_tokens": 2000, "ignore_eos": True}
    before = metric(busy, "gpt2kit_generated_tokens_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(busy.base + "/v1/completions", json=body, timeout=0.3)
    assert idle(busy.scheduler)
    assert metric(busy, "gpt2kit_generated_tokens_total") - before < 2000


def test_a_request_over_the_timeout_is_a_408(tiny):
    with LiveServer(make_app(tiny, request_timeout=0.05, max_batch=1)) as live:
        slow = {"prompt": "Go", "max_tokens": 64, "ignore_eos": True, "n": 8}
        error = error_of(post(live, "/v1/completions", slow), 408)
        assert "timeout" in error["message"]
        # A stream has sent its 200 already: it ends with an error event, then [DONE].
        r = post(live, "/v1/completions", {**slow, "stream": True})
        events = [line for line in r.text.split("\n\n") if line]
        assert r.status_code == 200 and events[-1] == "data: [DONE]"
        assert json.loads(events[-2][6:])["error"]["type"] == "timeout_error"
        assert idle(live.scheduler)  # the timed-out jobs were dropped


# -- the other endpoints


def test_tokenize_detokenize_and_tokenizer_info(server, tiny):
    _, _, tokenizer, _ = tiny
    r = post(server, "/tokenize", {"prompt": "Hello world"}).json()
    assert r["tokens"] == tokenizer.encode("Hello world") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == CONTEXT
    assert post(server, "/detokenize", {"tokens": r["tokens"]}).json() == {"prompt": "Hello world"}
    error_of(post(server, "/detokenize", {"tokens": [10**9]}), 400)
    info = httpx.get(server.base + "/tokenizer_info", headers=auth()).json()
    assert info["eos_token"] == "<|endoftext|>" and info["eos_token_id"] == tokenizer.eos_id
    assert info["vocab_size"] == tokenizer.vocab_size
    assert httpx.post(server.base + "/tokenize", json={"prompt": "x"}).status_code == 401


def test_health_and_metrics(server):
    health = httpx.get(server.base + "/health").json()
    assert health["status"] == "ok"
    before = metric(server, "gpt2kit_generated_tokens_total")
    requests = metric(server, "gpt2kit_requests_total")
    post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 3, "ignore_eos": True})
    assert metric(server, "gpt2kit_generated_tokens_total") - before == 3
    assert metric(server, "gpt2kit_requests_total") == requests + 1
    text = httpx.get(server.base + "/metrics").text
    for name in (
        "gpt2kit_requests_running",
        "gpt2kit_requests_waiting",
        'gpt2kit_time_to_first_token_seconds_bucket{le="+Inf"}',
        "gpt2kit_request_latency_seconds_count",
    ):
        assert name in text
    assert metric(server, "gpt2kit_request_latency_seconds_count") >= 1


def test_cors_is_off_by_default_and_on_for_the_given_origin(server, tiny):
    origin = {"Origin": "http://example.com"}
    r = httpx.get(server.base + "/health", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    with LiveServer(make_app(tiny, cors_origins=["http://example.com"])) as live:
        preflight = httpx.options(
            live.base + "/v1/completions",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "http://example.com"


def test_the_playground_is_served_at_the_root(server):
    from importlib.resources import files

    page = files("gpt2kit.serve") / "static" / "playground.html"
    r = httpx.get(server.base + "/")
    if page.is_file():
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.text == page.read_text(encoding="utf-8")
    else:
        error_of(r, 404)


# -- load


def test_64_streaming_clients_get_200_or_429_and_every_200_is_complete(server):
    """A bounded load test: 64 concurrent streams against --max-batch 16 --max-queue 32, three
    rounds; only 200s and 429s, every 200 ends with its finish chunk and [DONE], nothing is
    left running, and memory does not grow from round to round."""
    psutil = pytest.importorskip("psutil")
    body = {"model": NAME, "max_tokens": 12, "ignore_eos": True, "stream": True}

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, bool]:
        async with client.stream(
            "POST", "/v1/completions", json={**body, "prompt": f"Client {i} says"}
        ) as r:
            if r.status_code != 200:
                await r.aread()
                return r.status_code, False
            lines = [line async for line in r.aiter_lines() if line]
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        complete = (
            lines[-1] == "data: [DONE]"
            and chunks[-1]["choices"][0]["finish_reason"] == "length"
            and sum(1 for c in chunks if c["choices"][0]["text"]) >= 1
        )
        return 200, complete

    async def round_() -> list[tuple[int, bool]]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=server.base, headers=auth(), timeout=60, limits=limits
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    process = psutil.Process()
    rss = []
    for _ in range(3):
        results = asyncio.run(round_())
        statuses = [s for s, _ in results]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 48  # capacity: 16 running + 32 waiting
        assert all(ok for s, ok in results if s == 200)
        rss.append(process.memory_info().rss)
    assert server.scheduler.running == 0 and server.scheduler.waiting == 0
    assert not server.scheduler.engine.busy
    assert httpx.get(server.base + "/health").json()["status"] == "ok"
    assert rss[2] - rss[1] < 64 * 2**20, rss
