"""Reading sources: cutting long documents where the tokens do not change, in linear time."""

from __future__ import annotations

import random
import time

import gpt2kit.data.sources as sources_mod
from conftest import SHAKESPEARE
from gpt2kit.data.sources import safe_cut, split_long
from gpt2kit.tokenizer import gpt2_tokenizer

TOK = gpt2_tokenizer()


def test_cutting_at_safe_points_never_changes_the_ids():
    rng = random.Random(0)
    alphabet = [*"abc xyz,.'!?0123", "\n", "\n\n", "  ", "\t", "é", "🙂", "'s", " 's", "\r\n"]
    checked = 0
    for _ in range(100):
        text = "".join(rng.choice(alphabet) for _ in range(40))
        for p in range(2, len(text) - 1):
            after_newline = text[p - 1] == "\n" and not text[p - 2].isspace()
            before_space = text[p] == " " and not text[p - 1].isspace()
            if (after_newline or before_space) and not text[
                p + (1 if before_space else 0)
            ].isspace():
                checked += 1
                assert TOK.encode(text[:p]) + TOK.encode(text[p:]) == TOK.encode(text), (text, p)
    assert checked > 200
    # Prose always has a safe point in the window: the pieces' ids are the text's ids.
    text = SHAKESPEARE.read_text(encoding="utf-8")[:20_000]
    pieces = list(split_long(text, 300))
    assert len(pieces) > 50 and "".join(pieces) == text
    assert [i for p in pieces for i in TOK.encode(p)] == TOK.encode(text)
    assert safe_cut("aaaa bbbb\ncccc dddd", 14) == 10  # after the newline, not at the space
    assert safe_cut("aaaa bbbb  cccc dddd", 14) == 14  # no safe point in (7, 14]: hard cut
    assert safe_cut("aaaa bbbb cccc dddd", 12) == 9  # before the space between words


def test_a_record_on_one_huge_line_is_read_and_cut_in_linear_time():
    """A huge record is neither re-copied at every block read (200,000 one-character blocks
    would copy 2e10 characters) nor at every piece cut from it (20,000 pieces of a 20 M
    character text would copy 2e11)."""
    start = time.perf_counter()
    lines = list(sources_mod._lines(iter(["a"] * 200_000 + ["\nb"])))
    assert lines == ["a" * 200_000 + "\n", "b"]
    text = "word " * 4_000_000
    pieces = list(split_long(text, 1000))
    assert "".join(pieces) == text and len(pieces) > 20_000
    assert all(p.endswith("word") for p in pieces[:-1])  # cut before a space
    assert time.perf_counter() - start < 3.0
