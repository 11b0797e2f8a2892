"""What the report tests share: run folders written by hand (any state a run can be left in,
in milliseconds) and headless system chromium, as the playground's test drives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import headless_chromium

CONFIG = {
    "sources": ["plays.txt"], "out": "run", "init": "scratch", "preset": "tiny", "lr": 0.005,
    "max_steps": 6, "eval_every": 3, "samples": 2, "resolved_total_steps": 6,
}  # fmt: skip


def train_record(step: int, loss: float) -> dict:
    return {
        "type": "train", "step": step, "tokens_seen": 128 * step, "loss": loss, "lr": 5e-3,
        "grad_norm": 1.0 + step / 10, "tokens_per_s": 900.0 + step, "epoch": 0.1 * step,
        "elapsed_s": 0.5 * step,
    }  # fmt: skip


def eval_record(step: int, loss: float, samples: list[str] | None = None, **extra) -> dict:
    record = {
        "type": "eval", "step": step, "tokens_seen": 128 * step, "val_loss": loss,
        "val_ppl": 2.718**loss, "val_bpc": loss / 2, "val_tokens": 100, "val_stride": 32,
    }  # fmt: skip
    if samples is not None:
        record |= {"samples": samples, "sample_prompts": ["", "ROMEO:"], "sample_seed": 1337}
    return record | extra


def make_run(
    folder: Path,
    records: list[dict],
    summary: dict | None = None,
    config: dict | None = None,
    tail: str = "",
) -> Path:
    """A run folder holding `config.yaml`, `metrics.jsonl` (`records`, then `tail`, e.g. a line
    cut short) and, when given, `summary.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config or CONFIG, sort_keys=False))
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "metrics.jsonl").write_text(lines + tail)
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def summary_of(folder: Path, steps: int, stopped: str = "completed", **extra) -> dict:
    return {
        "run_dir": str(folder), "steps": steps, "tokens_seen": 128 * steps, "stopped": stopped,
        "final_model": None, "best_model": None, "best_val_loss": None, "best_val_bpc": None,
        "last_eval": None, "train_seconds": 3.0, "exit_code": 0, "evals": [],
    } | extra  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Headless system chromium for the tests of one module (see `headless_chromium`)."""
    with headless_chromium() as browser:
        yield browser


@pytest.fixture
def open_page(browser):
    """`open_page(path)`: the HTML file at `path` in a fresh page; the test fails if the page
    fetches anything but the file itself, or if a script error occurs."""
    contexts, requests, errors = [], [], []

    def open_(path: Path):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda err: errors.append(str(err)))
        url = path.resolve().as_uri()
        page.goto(url)
        page.wait_for_load_state("load")
        assert set(requests) == {url}, f"the page fetched more than itself: {requests}"
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"
