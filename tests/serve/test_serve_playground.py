"""The playground page (GET /) in a real headless browser: Debian's chromium driven by playwright
(`executable_path` points at the system browser; nothing is downloaded), against the real server
(`python -m gpt2kit serve`, started with an API key) on a tiny random model.

The tests type a prompt, see streamed text appear token by token with its probabilities on hover,
stop a long generation and check on the server's /metrics that the request ended, and inspect a
screenshot. Without chromium (or playwright) they skip, except in CI (`CI=true`), where
`.ci/run` installs both, so a missing browser is a failure there.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import headless_chromium, make_hf_model

KEY = "playground-test-key"
CONTEXT = 2048  # room for a generation long enough to be stopped midway
LONG = 2000  # max_tokens of the generation the Stop button cancels
TOKENS = ".token"  # the output's token spans


# ---- The server ----------------------------------------------------------------------------


def http(base: str, path: str, body: dict | None = None) -> tuple[int, str]:
    """GET (or POST `body` as JSON to) `base + path` with the API key: the status and the text."""
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, *words: str) -> float:
    """The sum of the samples in Prometheus `text` whose metric name contains every one of
    `words` (histogram and summary parts left out); fails when there is none."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or line.startswith("#"):
            continue
        name = m.group(1)
        if name.endswith(("_bucket", "_sum", "_count", "_created")):
            continue
        if all(w in name for w in words):
            total, found = total + float(m.group(3)), True
    assert found, f"no metric named with {words} in /metrics:\n{text}"
    return total


def running(base: str) -> float:
    """How many requests the server says are running."""
    return metric(http(base, "/metrics")[1], "running")


def generated(base: str) -> float:
    """How many tokens the server says it has generated so far."""
    return metric(http(base, "/metrics")[1], "token", "generat")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """`gpt2kit serve` on a tiny random model with an API key, on a free port: its base URL."""
    folder = tmp_path_factory.mktemp("playground")
    make_hf_model(folder / "model", n_positions=CONTEXT)
    port = free_port()
    log = (folder / "server.log").open("w")
    command = [sys.executable, "-m", "gpt2kit", "serve", str(folder / "model")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--api-key", KEY]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, (
                "no /health after 90 s\n" + (folder / "server.log").read_text()
            )
            try:
                if http(base, "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# ---- The browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless system chromium driven by playwright."""
    with headless_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, server):
    """The playground, freshly loaded; the test fails on any uncaught error in its script."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    yield page
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def enter_key(page) -> None:
    """Type the API key; leaving the field fetches the model name with it."""
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")


def wait_state(page, *states: str) -> str:
    """Wait until the page is in one of `states` (idle, running, done, stopped, error)."""
    page.wait_for_function(
        "states => states.includes(document.getElementById('app').dataset.state)", arg=list(states)
    )
    return page.get_attribute("#app", "data-state")


def token_count(page) -> int:
    return page.locator(TOKENS).count()


def token_texts(page) -> list[str]:
    """The text of each token span, exactly (whitespace and newlines included)."""
    return page.eval_on_selector_all(TOKENS, "spans => spans.map(s => s.textContent)")


# ---- The tests -----------------------------------------------------------------------------


def test_without_the_key_the_page_shows_the_servers_error(page):
    page.wait_for_function("document.getElementById('model-name').textContent.includes('key')")
    assert not page.is_visible("#error")
    page.fill("#prompt", "Hello")
    page.click("#generate")
    assert wait_state(page, "error", "done") == "error"
    assert page.is_visible("#error")
    assert "401" in page.inner_text("#error")  # the status, then the server's own message
    assert token_count(page) == 0


def test_streams_the_servers_text_with_token_probabilities_on_hover(page, server):
    enter_key(page)
    models = json.loads(http(server, "/v1/models")[1])
    model = models["data"][0]["id"]
    page.wait_for_function(
        "id => document.getElementById('model-name').textContent === id", arg=model
    )
    # The controls start at `gpt2kit generate`'s defaults.
    defaults = {"max_tokens": 100, "temperature": 1, "top_p": 1, "top_k": 0, "min_p": 0}
    defaults |= {"repetition_penalty": 1, "no_repeat_ngram_size": 0}
    for name, value in defaults.items():
        assert float(page.input_value(f"#{name}")) == value, name
    assert page.input_value("#seed") == page.input_value("#stop_strings") == ""

    prompt = "The quick brown fox"
    page.fill("#max_tokens", "12")
    page.fill("#temperature", "0")
    page.fill("#prompt", prompt)
    page.press("#prompt", "Control+Enter")  # the keyboard shortcut generates
    assert wait_state(page, "done", "error", "stopped") == "done", page.inner_text("#error")

    # The page shows the prompt, then exactly the text the API gives for the same request.
    status, body = http(
        server,
        "/v1/completions",
        {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, "logprobs": 5},
    )
    assert status == 200, body
    choice = json.loads(body)["choices"][0]
    tokens = token_texts(page)
    assert page.text_content("[data-testid=prompt-echo]") == prompt
    assert "".join(tokens) == choice["text"]
    assert len(tokens) == len(choice["logprobs"]["tokens"])

    # Hovering the first token shows its top 5 with the API's probabilities, the chosen one
    # (the most likely, decoding greedily) first.
    assert page.is_hidden("#tooltip")
    page.hover(f"{TOKENS} >> nth=0")
    assert page.is_visible("#tooltip")
    rows = page.locator("#tooltip tr")
    top = sorted(choice["logprobs"]["top_logprobs"][0].values(), reverse=True)
    assert 1 < rows.count() == len(top) <= 5  # 5, or fewer where two tokens share a text
    shown = [float(t) for t in page.locator("#tooltip td.lp").all_inner_texts()]
    assert shown == pytest.approx(top, abs=5e-4)  # each log-probability, to 3 decimals
    assert page.locator("#tooltip td.p").count() == len(top)  # and as a probability
    assert "chosen" in (rows.first.get_attribute("class") or "")

    # Keyboard: the arrow keys walk the tokens, each showing its own probabilities.
    page.mouse.move(0, 0)
    assert page.is_hidden("#tooltip")
    page.focus("#output")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.textContent") == tokens[1]
    assert page.is_visible("#tooltip")


def test_stop_strings_end_the_text_where_the_server_cuts_it(page, server):
    greedy = {"prompt": "Hello there", "max_tokens": 12, "temperature": 0, "logprobs": 5}
    tokens = json.loads(http(server, "/v1/completions", greedy)[1])["choices"][0]["logprobs"]
    stop = "".join(tokens["tokens"][4:6])  # a string the greedy text holds
    status, body = http(server, "/v1/completions", {**greedy, "stop": [stop]})
    assert status == 200, body
    expected = json.loads(body)["choices"][0]
    assert expected["finish_reason"] == "stop"

    enter_key(page)
    page.fill("#prompt", greedy["prompt"])
    page.fill("#max_tokens", "12")
    page.fill("#temperature", "0")
    page.fill("#stop_strings", stop.replace("\n", "\\n").replace("\t", "\\t"))
    page.click("#generate")
    assert wait_state(page, "done", "error", "stopped") == "done", page.inner_text("#error")
    assert "".join(token_texts(page)) == expected["text"]
    assert "finish_reason: stop" in page.inner_text("#status")


def test_stop_ends_the_request_on_the_server(page, server):
    enter_key(page)
    before = generated(server)
    page.fill("#prompt", "Once upon a time")
    page.fill("#max_tokens", str(LONG))
    page.fill("#seed", "0")
    page.click("#generate")
    assert page.is_disabled("#generate")

    # Tokens arrive while the request is still running: streamed, not all at once at the end.
    page.wait_for_function(f"document.querySelectorAll('{TOKENS}').length >= 3")
    first = token_count(page)
    page.wait_for_function(f"document.querySelectorAll('{TOKENS}').length > {first}")
    assert page.get_attribute("#app", "data-state") == "running"
    assert running(server) >= 1

    page.click("#stop")
    assert wait_state(page, "stopped", "done", "error") == "stopped"
    assert page.is_enabled("#generate") and page.is_disabled("#stop")
    assert "Stopped" in page.inner_text("#status")

    # The server retires the request: nothing runs, and it stopped generating far short of
    # max_tokens.
    deadline = time.monotonic() + 10
    while running(server) > 0:
        assert time.monotonic() < deadline, "the request still runs 10 s after Stop"
        time.sleep(0.1)
    after = generated(server)
    time.sleep(0.5)
    assert generated(server) == after
    assert token_count(page) <= after - before < LONG


def test_screenshot_shows_the_prompt_and_the_output(page, server, tmp_path: Path):
    from PIL import Image, ImageStat

    enter_key(page)
    page.fill("#prompt", "To be, or not to be")
    page.fill("#max_tokens", "40")
    page.click("#generate")
    assert wait_state(page, "done", "error", "stopped") == "done", page.inner_text("#error")
    assert token_count(page) > 0

    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot))
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 800)
    assert ImageStat.Stat(image).stddev[0] > 10  # not a blank page

    def ink(selector: str) -> int:
        """How many dark (text) pixels the element's box holds in the screenshot."""
        box = page.locator(selector).bounding_box()
        crop = image.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
        return sum(crop.point(lambda v: 255 if v < 128 else 0).histogram()[255:])

    assert ink("#output") > 500  # the prompt and the generated text are drawn
    assert ink("#prompt") > 100
    assert ink("#controls") > 500  # the sampling controls' labels
