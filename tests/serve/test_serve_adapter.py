"""`gpt2kit serve ADAPTER`: a LoRA adapter folder is a MODEL for the server as for `generate`;
it is merged into its base at load time, so the API answers with the tuned model's text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import make_adapter, make_hf_model
from gpt2kit import Generator, load_model
from gpt2kit.model.lora import LoraSpec

pytest.importorskip("peft")  # nothing of it is used; the adapter format is PEFT's own


def test_serve_answers_with_the_adapter_merged_into_its_base(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    make_hf_model(base, initializer_range=0.5)  # peaked: greedy text shows any change
    make_adapter(base, adapter, LoraSpec(r=4, alpha=32))
    prompt = "The king"

    def greedy(folder) -> str:
        model, tokenizer, _ = load_model(folder)
        ((ids, _),) = Generator(model, tokenizer).generate_ids(
            [tokenizer.encode(prompt)], 12, temperature=0
        )
        return tokenizer.decode(ids)

    tuned, plain = greedy(adapter), greedy(base)
    assert tuned != plain

    command = [sys.executable, "-m", "gpt2kit", "serve", str(adapter), "--port", "0",
               "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GPT2KIT_API_KEY", None)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("API:" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            lines.append(process.stdout.readline())
        api = next(line for line in lines if "API:" in line).split()[1]
        body = {"prompt": prompt, "max_tokens": 12, "temperature": 0}
        r = httpx.post(api + "/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == tuned
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
