"""Reading the prompts of `gpt2kit generate`: devices, folders, pipes and endless input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import run_cli

from .conftest import refused


def _bash(command: str) -> subprocess.CompletedProcess:
    """Run `command` with bash (for <(...) pipes); GPT2KIT stands for `python -m gpt2kit`."""
    command = command.replace("GPT2KIT", f"'{sys.executable}' -m gpt2kit")
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)


def test_cli_prompts_file_that_is_a_device_or_a_folder(tmp_path, peaky):
    _, _, folder = peaky
    m = str(folder)
    refused(run_cli("generate", m, "--prompts-file", "/dev/null"), "/dev/null holds no prompts")
    refused(
        run_cli("generate", m, "--prompts-file", str(tmp_path)),
        f"--prompts-file {tmp_path} is a folder",
    )
    refused(
        run_cli("generate", m, "--prompts-file", "/dev/zero"),
        "/dev/zero is not text (a NUL byte at byte offset 0)",
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
def test_cli_prompts_from_a_pipe_and_endless_input_in_bounded_memory(peaky):
    _, _, folder = peaky
    opts = "--temperature 0 --max-new-tokens 3"
    common = f"'{folder}' {opts}"
    r = _bash(f"GPT2KIT generate {common} --prompts-file <(printf 'Hi\\nThere\\n')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("--- prompt") == 2  # a pipe is read like a file
    # Endless input is cut off after a bounded amount, whatever its shape.
    refused(
        _bash(f"GPT2KIT generate {common} --prompts-file <(yes 'a prompt')"),
        "holds more than 1,000,000 prompts",
    )
    refused(
        _bash(f"GPT2KIT generate {common} --prompts-file <(yes | tr -d '\\n')"),
        "holds more than 64 MB of prompts",
    )
    refused(
        _bash(f"head -c 70000000 /dev/zero | tr '\\0' a | GPT2KIT generate '{folder}' - {opts}"),
        "stdin holds more than 64 MB of prompts",
    )
