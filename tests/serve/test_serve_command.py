"""`gpt2kit serve` as a user runs it: it prints the playground's and the API's URLs, binds
127.0.0.1 by default, answers, and stops on SIGINT; a taken port is a message, not a
traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from conftest import run_cli

from .conftest import NAME


def test_serve_prints_its_urls_binds_localhost_and_answers(tiny):
    _, _, _, folder = tiny
    command = [sys.executable, "-m", "gpt2kit", "serve", str(folder), "--port", "0",
               "--model-name", NAME, "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GPT2KIT_API_KEY", None)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("API:" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            lines.append(process.stdout.readline())
        playground = next(line for line in lines if "Playground:" in line).split()[-1]
        assert playground.startswith("http://127.0.0.1:") and playground.endswith("/")
        api = next(line for line in lines if "API:" in line).split()[1]
        assert api == playground + "v1"
        r = httpx.post(api + "/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == NAME
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


def test_a_taken_port_is_a_message(tiny):
    _, _, _, folder = tiny
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", str(folder), "--port", str(port), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"127.0.0.1:{port}" in result.stderr
