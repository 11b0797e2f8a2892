"""`gpt2kit serve`'s options: defaults (127.0.0.1, no key, CORS off), the key from the
environment, every bad value reported at once, help on every flag."""

from __future__ import annotations

import pytest

from gpt2kit.cli.parser import build_parser
from gpt2kit.errors import UserError
from gpt2kit.serve.config import API_KEY_ENV, ServeConfig


def test_defaults_are_safe(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    c = ServeConfig(model="m")
    assert c.host == "127.0.0.1" and c.api_key is None and c.cors_origin == []


def test_the_key_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert ServeConfig(model="m").api_key == "from-env"
    assert ServeConfig(model="m", api_key="flag").api_key == "flag"


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(UserError) as e:
        ServeConfig(
            model="m", port=70000, max_batch=0, max_queue=-1, max_tokens_limit=0,
            request_timeout=0, quantize="int4", device="tpu",
        )  # fmt: skip
    text = str(e.value)
    for flag in ("--port", "--max-batch", "--max-queue", "--max-tokens-limit",
                 "--request-timeout", "--quantize", "--device"):  # fmt: skip
        assert flag in text


def test_every_flag_has_help():
    parser = build_parser("serve")
    sub = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert {"--host", "--port", "--api-key", "--max-batch", "--max-queue", "--max-tokens-limit",
            "--request-timeout", "--cors-origin", "--device", "--precision", "--quantize"} <= {
        s for a in flags for s in a.option_strings
    }  # fmt: skip
    assert all(a.help and len(a.help) > 20 for a in flags)
