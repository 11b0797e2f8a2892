"""Tokenizers: GPT-2's byte-level BPE (bundled), any `tokenizer.json`, or a BPE trained on your text.

Everything goes through the `tokenizers` library. `<|endoftext|>` is the end-of-text token: it
separates documents in training data and stops generation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as _HFTokenizer

from gpt2kit.errors import UserError

EOS_TOKEN = "<|endoftext|>"
GPT2_FINGERPRINT_NAME = "gpt2"  # the --tokenizer value and the `name` of GPT-2's own BPE
MIN_BPE_VOCAB = 257  # a byte-level BPE: the 256 bytes + <|endoftext|>


def _asset(*parts: str) -> Path:
    return Path(str(resources.files("gpt2kit").joinpath("assets", *parts)))


class Tokenizer:
    """A text tokenizer with a known end-of-text id, wrapping a `tokenizers.Tokenizer`.

    `name` says where it came from (`gpt2`, a path, `bpe:4096`); `fingerprint` is a hash of what
    it encodes to, so two tokenizers with the same fingerprint give the same ids.
    """

    def __init__(self, backend: _HFTokenizer, name: str) -> None:
        eos = backend.token_to_id(EOS_TOKEN)
        if eos is None:
            raise UserError(
                f"The tokenizer {name!r} has no {EOS_TOKEN} token; gpt2kit needs it to separate "
                "documents and to stop generation. Add it as a special token, or use "
                "--tokenizer gpt2 or bpe:VOCAB_SIZE."
            )
        self.backend = backend
        self.name = name
        self.eos_id: int = eos
        self._fingerprint: str | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (the model's vocab must be at least this)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what the tokenizer encodes to (see `_identity`), so the hub's GPT-2
        `tokenizer.json`, one saved by `transformers` and bare `vocab.json` + `merges.txt`
        share one fingerprint, and any change that alters ids gives another."""
        if self._fingerprint is None:
            identity = _identity(json.loads(self.backend.to_str()))
            text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    @property
    def is_gpt2(self) -> bool:
        """Whether this is exactly GPT-2's own tokenizer (same ids as the bundled one)."""
        return self.fingerprint == gpt2_tokenizer().fingerprint

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no end-of-text token appended)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel by the Rust backend."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def count_chars(self, ids: Iterable[int]) -> int:
        """Characters of the text `ids` encode: their decoded text without special tokens,
        plus one for each `<|unk|>` (a character a `char` vocabulary never saw)."""
        ids = [int(i) for i in ids]
        unk = self.backend.token_to_id(UNK_TOKEN)
        unknown = 0 if unk is None else ids.count(unk)
        return len(self.decode(ids, skip_special_tokens=True)) + unknown

    def save(self, folder: str | Path, model_max_length: int = 1024) -> None:
        """Write the tokenizer as Hugging Face expects it in a model folder.

        `tokenizer.json` and `tokenizer_config.json` always; `vocab.json` and `merges.txt`
        too when the model is a BPE (as for GPT-2), so slow tokenizers load it as well.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        is_bpe = isinstance(self.backend.model, models.BPE)
        config = {
            "tokenizer_class": "GPT2Tokenizer" if is_bpe else "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
            "bos_token": EOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "add_prefix_space": False,
            "add_bos_token": False,
            "clean_up_tokenization_spaces": False,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        special = {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        if is_bpe:
            self.backend.model.save(str(folder))  # vocab.json + merges.txt


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a `tokenizer.json` that decide the ids it encodes to, in one canonical form.

    Serializations differ in what does not change ids: merges as `"a b"` strings or `[a, b]`
    pairs, the order of the vocabulary, `trim_offsets` (offsets only), the post-processor
    (gpt2kit encodes without special tokens), the decoder's flags (only its type is kept), and
    an added token's `normalized` flag when there is no normalizer to apply.
    """
    model = dict(config["model"])
    if isinstance(model.get("vocab"), dict):
        model["vocab"] = sorted(model["vocab"].items(), key=lambda item: (item[1], item[0]))
    if "merges" in model:
        model["merges"] = [
            m.split(" ", 1) if isinstance(m, str) else list(m) for m in model["merges"]
        ]
    for affix in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(affix) == "":
            model[affix] = None  # an empty affix adds nothing
    normalizer = config.get("normalizer")
    added = sorted(
        (
            t["id"],
            t["content"],
            t.get("special", False),
            t.get("lstrip", False),
            t.get("rstrip", False),
            t.get("normalized", True) if normalizer else None,
            t.get("single_word", False),
        )
        for t in config.get("added_tokens", [])
    )

    def pre_tokenizer(p: dict[str, Any] | None) -> dict[str, Any] | None:
        if p is None:
            return None
        if p.get("type") == "ByteLevel":
            return {
                "type": "ByteLevel",
                "add_prefix_space": p.get("add_prefix_space", True),
                "use_regex": p.get("use_regex", True),
            }
        if p.get("type") == "Sequence":
            return {
                "type": "Sequence",
                "pretokenizers": [pre_tokenizer(q) for q in p["pretokenizers"]],
            }
        return p

    decoder = config.get("decoder")
    return {
        "model": model,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer(config.get("pre_tokenizer")),
        "decoder": decoder and decoder.get("type"),
        # Both change what `encode` returns (cut or padded ids).
        "truncation": config.get("truncation"),
        "padding": config.get("padding"),
    }


def _byte_level(backend: _HFTokenizer) -> _HFTokenizer:
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _bpe_from_files(folder: Path, name: str) -> Tokenizer:
    """A GPT-2-style byte-level BPE from a folder's `vocab.json` and `merges.txt`."""
    backend = _HFTokenizer(
        models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    )
    _byte_level(backend)
    backend.add_special_tokens([EOS_TOKEN])
    return Tokenizer(backend, name)


_GPT2: Tokenizer | None = None


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's own byte-level BPE (50,257 ids), built from the files bundled in the package."""
    global _GPT2
    if _GPT2 is None:
        _GPT2 = _bpe_from_files(_asset("gpt2-tokenizer"), GPT2_FINGERPRINT_NAME)
    return _GPT2


def train_bpe(texts: Iterator[str] | Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE with `vocab_size` ids (`<|endoftext|>` included) on `texts`."""
    if vocab_size < MIN_BPE_VOCAB:
        raise UserError(
            f"A byte-level BPE needs at least {MIN_BPE_VOCAB} ids (256 bytes + {EOS_TOKEN}); "
            f"got bpe:{vocab_size}. Try bpe:4096."
        )
    backend = _byte_level(_HFTokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, f"bpe:{vocab_size}")


UNK_TOKEN = "<|unk|>"


def train_char(texts: Iterator[str] | Iterable[str]) -> Tokenizer:
    """A character-level tokenizer: one id per distinct character of `texts` (nanoGPT's
    `shakespeare_char` vocabulary), plus `<|endoftext|>` and `<|unk|>` for characters the
    texts never showed. Saved as a plain `tokenizer.json` that `transformers` loads."""
    backend = _HFTokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(
        vocab_size=1 << 30,
        min_frequency=1,
        special_tokens=[EOS_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, "char")


# `--tokenizer auto` from scratch: a byte-level BPE whose size grows with the corpus, so a small
# model neither spends its capacity on rows it never sees (GPT-2's 50,257 would) nor reads text
# one byte at a time. Sized by UTF-8 bytes, not characters, so scripts of many bytes per
# character get more room. When the text has more distinct characters than half that size (a
# logographic script: a Chinese novel uses ~4,000), a byte-level BPE would spend its whole
# budget rebuilding single characters from their bytes, so `auto` gives every character its
# own id instead (`char`): measured on a Chinese novel, 6.14 bits per character against 6.54
# for the BPE at the same budget (benchmarks/README.md).
AUTO_MIN_VOCAB, AUTO_MAX_VOCAB = 512, 16384


def auto_vocab_size(corpus_bytes: int) -> int:
    """The BPE size `--tokenizer auto` trains for a corpus of `corpus_bytes` UTF-8 bytes:
    about 2 x sqrt(bytes), rounded to a power of two, between 512 and 16,384 (1 MB: 2,048)."""
    target = 2 * math.sqrt(max(1, corpus_bytes))
    size = 1 << round(math.log2(target))
    return max(AUTO_MIN_VOCAB, min(AUTO_MAX_VOCAB, size))


TokenizerKind = Literal["gpt2", "bpe", "char", "auto", "path"]
TRAINED_KINDS: frozenset[str] = frozenset({"bpe", "char", "auto"})


@dataclass(frozen=True)
class TokenizerSpec:
    """A `--tokenizer` value, parsed: the one place that reads the spec's syntax.

    `kind` is `gpt2` (GPT-2's bundled BPE), `bpe` (`bpe:N`, a byte-level BPE of `vocab_size`
    ids trained on the data), `char` or `auto` (also trained on the data), or `path` (a
    `tokenizer.json` file or a folder holding one; whether it exists is checked on loading).
    `problem` says what is wrong with the text (a malformed `bpe:N`, an empty value), or is
    None; `text` is the value exactly as given (part of a prepared DATA_DIR's cache key).
    """

    text: str
    kind: TokenizerKind
    vocab_size: int | None = None  # bpe:N only, even when N is too small (see `problem`)
    problem: str | None = None

    @classmethod
    def parse(cls, text: str | Path) -> TokenizerSpec:
        """Parse a `--tokenizer` value (never raises: a bad one carries its `problem`)."""
        text = str(text)
        if text == GPT2_FINGERPRINT_NAME:
            return cls(text, "gpt2")
        if text == "char":
            return cls(text, "char")
        if text == "auto":
            return cls(text, "auto")
        if text.startswith("bpe:"):
            digits = text[4:]
            size = int(digits) if digits.isdecimal() else None
            if size is not None and size >= MIN_BPE_VOCAB:
                return cls(text, "bpe", size)
            return cls(
                text,
                "bpe",
                size,
                f"--tokenizer {text}: expected bpe:VOCAB_SIZE with a whole number of at least "
                f"{MIN_BPE_VOCAB} (256 bytes + {EOS_TOKEN}), e.g. bpe:4096",
            )
        if not text:
            return cls(text, "path", problem="--tokenizer cannot be empty (use gpt2)")
        return cls(text, "path")

    @property
    def is_trained(self) -> bool:
        """Whether the tokenizer is trained on the training text (`bpe:N`, `char`, `auto`)
        rather than one that exists already (`gpt2`, a file or folder)."""
        return self.kind in TRAINED_KINDS


def trained_spec_problem(spec: str) -> str | None:
    """What is wrong with a tokenizer spec that trains on the data (`bpe:N`, `char`, `auto`),
    or None when it is fine or is not such a spec (see `TokenizerSpec`)."""
    parsed = TokenizerSpec.parse(spec)
    return parsed.problem if parsed.is_trained else None


def is_trained_spec(spec: str) -> bool:
    """Whether `spec` names a tokenizer trained on the training text (`bpe:N`, `char`, `auto`)
    rather than one that exists already (`gpt2`, a file or folder); see `TokenizerSpec`."""
    return TokenizerSpec.parse(spec).is_trained


def train_tokenizer(spec: str, texts: Callable[[], Iterable[str]]) -> Tokenizer:
    """Train the tokenizer `spec` names (see `is_trained_spec`) on the training text, which
    `texts()` yields afresh on each call (`auto` reads it once more to size its vocabulary).

    Raises `UserError` for a malformed `bpe:N`, and `ValueError` for a spec that trains
    nothing (`gpt2`, a path: load those with `load_tokenizer`).
    """
    parsed = TokenizerSpec.parse(spec)
    if parsed.kind == "char":
        return train_char(texts())
    if parsed.kind == "auto":
        corpus_bytes, alphabet = 0, set()
        for text in texts():
            corpus_bytes += len(text.encode("utf-8"))
            alphabet.update(text)
        size = auto_vocab_size(corpus_bytes)
        if len(alphabet) > size // 2:  # a large alphabet (Chinese, Japanese): see above
            tokenizer = train_char(texts())
            tokenizer.name = "auto (char)"
            return tokenizer
        tokenizer = train_bpe(texts(), size)
        tokenizer.name = f"auto (bpe:{size})"
        return tokenizer
    if parsed.kind != "bpe":
        raise ValueError(f"{spec!r} is not a tokenizer to train; use load_tokenizer")
    if parsed.vocab_size is None:
        raise UserError(f"{parsed.problem}.")
    return train_bpe(texts(), parsed.vocab_size)


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """Load a tokenizer: `gpt2`, a `tokenizer.json` file, or a folder that contains one.

    A folder with only `vocab.json` + `merges.txt` (an older GPT-2 checkpoint) also works.
    `bpe:N` is not loadable here: it needs text, see `train_bpe`.
    """
    parsed = TokenizerSpec.parse(spec)
    if parsed.kind == "gpt2":
        return gpt2_tokenizer()
    if parsed.is_trained:
        raise UserError(f"{spec} trains a new tokenizer; it can only be used by prepare/train.")
    if parsed.problem:  # an empty value: no path to look in
        raise UserError(f"{parsed.problem}.")
    path = Path(parsed.text).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return _bpe_from_files(path, str(path))
        else:
            raise UserError(
                f"The folder {path} has no tokenizer.json (nor vocab.json + merges.txt). "
                "Pass --tokenizer gpt2, a tokenizer.json file, or a model folder that has one."
            )
    if not path.is_file():
        raise UserError(
            f"Tokenizer {parsed.text!r} not found: expected 'gpt2', 'bpe:VOCAB_SIZE', a "
            "tokenizer.json file or a folder containing one."
        )
    try:
        backend = _HFTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises bare Exceptions on bad files
        raise UserError(f"Could not read the tokenizer file {path}: {e}") from None
    # A file may carry truncation or padding settings (some re-saved GPT-2 files truncate at
    # 50 tokens); gpt2kit encodes whole documents, so neither may silently apply.
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(backend, str(path))
