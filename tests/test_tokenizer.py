"""Tokenizers: GPT-2's bundled BPE matches the hub's ids; trained BPEs round-trip their text."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import pytest

from conftest import SHAKESPEARE
from gpt2kit.errors import UserError
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer, load_tokenizer, train_bpe


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


def test_char_tokenizer_gives_one_id_per_character_and_round_trips():
    from gpt2kit.tokenizer import EOS_TOKEN, train_char

    text = "First Citizen:\r\nBefore we proceed, 中文 ñ 😀\n"
    tok = train_char([text])
    assert tok.vocab_size == len(set(text)) + 2  # + <|endoftext|> and <|unk|>
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.encode(EOS_TOKEN) == [tok.eos_id]
    unseen = tok.encode("Z")
    assert len(unseen) == 1 and unseen != tok.encode("F")


def test_auto_vocabulary_grows_with_the_corpus_in_bytes():
    from gpt2kit.tokenizer import auto_vocab_size, train_tokenizer

    assert auto_vocab_size(1_115_394) == 2048  # tiny Shakespeare
    assert auto_vocab_size(2_615_304) == 4096  # a Chinese novel: 0.9 M characters, 2.6 MB
    assert auto_vocab_size(1_000) == 512 and auto_vocab_size(10**12) == 16384
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    tok = train_tokenizer("auto", lambda: iter([text]))
    assert tok.vocab_size == auto_vocab_size(len(text.encode())) == 1024
    assert tok.decode(tok.encode(text[:500])) == text[:500]


def test_auto_gives_a_large_alphabet_one_id_per_character():
    """A text with more distinct characters than half the BPE size `auto` would train (as a
    Chinese novel has) gets a character vocabulary; an alphabetic text keeps its BPE."""
    from gpt2kit.tokenizer import auto_vocab_size, train_tokenizer

    rng = random.Random(0)
    hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 600)]  # 600 CJK ideographs
    text = "".join(rng.choice(hanzi) + ("。" if rng.random() < 0.1 else "") for _ in range(20_000))
    size = auto_vocab_size(len(text.encode()))
    assert len(set(text)) > size // 2  # 601 distinct characters, BPE size 512
    tok = train_tokenizer("auto", lambda: iter([text]))
    assert tok.name == "auto (char)" and tok.vocab_size == len(set(text)) + 2  # + EOS, unk
    assert tok.encode(text[:300]) == [tok.encode(c)[0] for c in text[:300]]
    assert tok.decode(tok.encode(text[:300])) == text[:300]
    latin = SHAKESPEARE.read_text(encoding="utf-8")[:60_000]
    assert train_tokenizer("auto", lambda: iter([latin])).name.startswith("auto (bpe:")


def test_one_parser_reads_every_tokenizer_spec():
    from gpt2kit.tokenizer import (
        TokenizerSpec,
        is_trained_spec,
        train_tokenizer,
        trained_spec_problem,
    )

    good = {
        "gpt2": ("gpt2", None, False),
        "bpe:4096": ("bpe", 4096, True),
        "char": ("char", None, True),
        "auto": ("auto", None, True),
        "models/mine/tokenizer.json": ("path", None, False),
    }
    for text, (kind, size, trained) in good.items():
        spec = TokenizerSpec.parse(text)
        assert (spec.text, spec.kind, spec.vocab_size, spec.is_trained) == (
            text,
            kind,
            size,
            trained,
        )
        assert spec.problem is None and trained_spec_problem(text) is None
        assert is_trained_spec(text) == trained
    for bad in ("bpe:256", "bpe:", "bpe:4k", "bpe:²"):
        spec = TokenizerSpec.parse(bad)
        assert spec.kind == "bpe" and spec.is_trained and f"--tokenizer {bad}:" in spec.problem
        assert trained_spec_problem(bad) == spec.problem
        with pytest.raises(UserError, match="at least 257"):
            train_tokenizer(bad, lambda: iter(["some text"]))
    empty = TokenizerSpec.parse("")
    assert empty.problem == "--tokenizer cannot be empty (use gpt2)" and not empty.is_trained
    with pytest.raises(UserError, match="cannot be empty"):
        load_tokenizer("")


def test_prepare_trains_char_and_auto_tokenizers(tmp_path):
    from gpt2kit.data import PrepareConfig, prepare

    src = tmp_path / "zh.txt"
    src.write_text("滿紙荒唐言，一把辛酸淚！\n都云作者痴，誰解其中味？\n" * 200, encoding="utf-8")
    for spec in ("char", "auto"):
        data = prepare(PrepareConfig(sources=[str(src)], out=str(tmp_path / spec), tokenizer=spec))
        assert data.tokenizer.decode(data.train.tolist()).startswith("滿紙荒唐言")
    assert prepare(
        PrepareConfig(sources=[str(src)], out=str(tmp_path / "char"), tokenizer="char")
    ).reused


HUB_SKELETON = Path(__file__).parent / "fixtures" / "hub_tokenizers" / "gpt2-skeleton.json"
MIXED = "  Tabs\tand  spaces, émojis 🎉, 中文, <|endoftext|>numbers 12345 and<|endoftext|> too.\n\n"


def _hub_gpt2_json() -> dict:
    """The hub's GPT-2 `tokenizer.json` (old serialization), vocabulary and merges filled in from
    the bundled files."""
    from gpt2kit.tokenizer import _asset

    config = json.loads(HUB_SKELETON.read_text(encoding="utf-8"))
    config["model"]["vocab"] = json.loads(_asset("gpt2-tokenizer", "vocab.json").read_text())
    lines = _asset("gpt2-tokenizer", "merges.txt").read_text(encoding="utf-8").splitlines()
    config["model"]["merges"] = [line for line in lines[1:] if line]  # after "#version: 0.2"
    return config


def _write(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return path


def test_gpt2_saved_by_the_hub_transformers_or_as_bare_files_is_gpt2(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tiktoken")
    from gpt2kit.data.encode import fast_encoder
    from gpt2kit.tokenizer import _asset

    bundled = _asset("gpt2-tokenizer")
    hub = load_tokenizer(_write(tmp_path / "hub", _hub_gpt2_json()))
    transformers.GPT2TokenizerFast.from_pretrained(str(bundled)).save_pretrained(tmp_path / "hf")
    saved = load_tokenizer(tmp_path / "hf")
    (tmp_path / "bare").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bundled / name, tmp_path / "bare" / name)
    bare = load_tokenizer(tmp_path / "bare")
    expected = gpt2_tokenizer().encode(MIXED)
    for tok in (hub, saved, bare):
        assert tok.encode(MIXED) == expected
        assert tok.fingerprint == gpt2_tokenizer().fingerprint and tok.is_gpt2, tok.name
        assert fast_encoder(tok).name == "tiktoken"


def test_fingerprint_is_what_the_tokenizer_encodes_to(tmp_path):
    base = _hub_gpt2_json()
    gpt2 = gpt2_tokenizer().fingerprint

    def variant(name: str, change) -> Tokenizer:
        config = copy.deepcopy(base)
        change(config)
        return load_tokenizer(_write(tmp_path / name, config))

    def offsets_and_decoding(c: dict) -> None:  # none of these changes an id
        c["pre_tokenizer"]["trim_offsets"] = False
        c["post_processor"] = None
        c["decoder"]["add_prefix_space"] = False

    def merges_as_pairs(c: dict) -> None:  # the serialization of tokenizers >= 0.20
        c["model"]["merges"] = [m.split(" ") for m in c["model"]["merges"]]

    assert variant("merges as pairs", merges_as_pairs).fingerprint == gpt2
    assert variant("offsets and decoding", offsets_and_decoding).fingerprint == gpt2

    first = base["model"]["merges"][0]  # "Ġ t": every " t..." word changes without it
    different = {
        "a merge less": lambda c: c["model"]["merges"].remove(first),
        "add_prefix_space": lambda c: c["pre_tokenizer"].update(add_prefix_space=True),
        "no regex": lambda c: c["pre_tokenizer"].update(use_regex=False),
        "lstrip special": lambda c: c["added_tokens"][0].update(lstrip=True),
        "a normalizer": lambda c: c.update(normalizer={"type": "Lowercase"}),
        "another decoder": lambda c: c.update(decoder={"type": "Fuse"}),
    }
    fingerprints, tokenizers = {gpt2}, {}
    for name, change in different.items():
        tokenizers[name] = tok = variant(name, change)
        assert tok.fingerprint not in fingerprints, name
        fingerprints.add(tok.fingerprint)
    assert tokenizers["a merge less"].encode(" the") != [262]
    assert tokenizers["add_prefix_space"].encode("the") == [262]


def test_a_tokenizer_file_that_truncates_or_pads_encodes_whole_texts(tmp_path):
    import json

    data = json.loads(gpt2_tokenizer().backend.to_str())
    data["truncation"] = {
        "direction": "Right",
        "max_length": 5,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    data["padding"] = {
        "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
        "pad_id": 50256, "pad_type_id": 0, "pad_token": "<|endoftext|>",
    }  # fmt: skip
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    text = "Hello world, this is GPT-2 tokenization!"
    assert load_tokenizer(path).encode(text) == gpt2_tokenizer().encode(text)
    assert len(gpt2_tokenizer().encode(text)) == 12
