"""Tokenizers: GPT-2's bundled BPE matches the hub's ids; trained BPEs round-trip their text."""

from __future__ import annotations

import random

import pytest

from gpt2kit.errors import UserError
from gpt2kit.tokenizer import gpt2_tokenizer, load_tokenizer, train_bpe


def test_gpt2_tokenizer_matches_known_ids():
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("Hello world, this is GPT-2 tokenization!") == [
        15496,
        995,
        11,
        428,
        318,
        402,
        11571,
        12,
        17,
        11241,
        1634,
        0,
    ]
    assert tok.eos_id == 50256 and tok.vocab_size == 50257


def test_gpt2_tokenizer_matches_transformers_on_mixed_text():
    transformers = pytest.importorskip("transformers")
    from gpt2kit.tokenizer import _asset

    ref = transformers.GPT2TokenizerFast(
        vocab=str(_asset("gpt2-tokenizer", "vocab.json")),
        merges=str(_asset("gpt2-tokenizer", "merges.txt")),
    )
    text = "  Tabs\tand  spaces, émojis 🎉, 中文, numbers 12345 and <|endoftext|> too.\n\nNew para."
    assert gpt2_tokenizer().encode(text) == ref(text)["input_ids"]


def test_round_trips_arbitrary_unicode_and_bytes():
    tok = gpt2_tokenizer()
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(
            chr(
                rng.choice(
                    [
                        rng.randrange(32, 127),
                        rng.randrange(0x80, 0x2FFF),
                        rng.randrange(0x1F300, 0x1FAFF),
                        rng.randrange(0, 32),
                    ]
                )
            )
            for _ in range(rng.randrange(1, 80))
        )
        assert tok.decode(tok.encode(text)) == text
        raw = bytes(rng.randrange(256) for _ in range(64)).decode("latin-1")  # bytes as text
        assert tok.decode(tok.encode(raw)) == raw


def test_trained_bpe_round_trips_its_training_text(tmp_path):
    texts = [
        "To be, or not to be, that is the question:",
        "Whether 'tis nobler in the mind to suffer",
        "Ünïcödé façade — naïve café 🙂",
        "x" * 300,
    ]
    tok = train_bpe(texts * 20, vocab_size=400)
    assert tok.vocab_size <= 400 and tok.eos_id is not None
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(texts[0]) == tok.encode(texts[0]) and again.fingerprint == tok.fingerprint


def test_bad_tokenizer_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(UserError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="at least 257"):
        train_bpe(["abc"], vocab_size=100)
