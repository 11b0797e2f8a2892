"""A DATA_DIR prepared with GPT-2's tokenizer serves every GPT-2 with the same ids, whichever
library saved the model's tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHAKESPEARE, run_cli
from gpt2kit.tokenizer import _asset

transformers = pytest.importorskip("transformers")


def test_transformers_saved_gpt2_takes_data_prepared_with_gpt2(tmp_path):
    folder = tmp_path / "hf-gpt2"
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    # The tokenizer as transformers writes it: another serialization of the same tokenizer.
    hf_tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(_asset("gpt2-tokenizer")))
    hf_tokenizer.save_pretrained(folder)
    book = tmp_path / "book.txt"
    book.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:4000], encoding="utf-8")

    r = run_cli("prepare", str(book), "--out", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    r = run_cli("eval", str(folder), str(tmp_path / "data"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] > 0
    r = run_cli(
        "train", str(tmp_path / "data"), "--init", str(folder), "--out", str(tmp_path / "run"),
        "--max-steps", "1", "--block-size", "32", "--batch-size", "2", "--samples", "0",
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 1

    # Preparing with the model's own tokenizer takes GPT-2's fast path too.
    r = run_cli("prepare", str(book), "--tokenizer", str(folder), "--out", str(tmp_path / "data2"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "data2" / "report.json").read_text())["encoder"] == "tiktoken"
