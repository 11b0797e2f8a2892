"""Batch encoding of text into NumPy arrays of token ids, with a fast path for GPT-2.

For GPT-2's own BPE, `tiktoken` (when installed, `pip install gpt2kit[fast]`) gives the same
ids as `tokenizers` about 3-4x faster; its encoding is built offline from the bundled
`vocab.json`/`merges.txt`. Any other tokenizer goes through `tokenizers`. Both release the GIL
while encoding, so batches encode in parallel threads.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from gpt2kit.tokenizer import EOS_TOKEN, Tokenizer, _asset

# GPT-2's pre-tokenizer pattern (tiktoken's r50k_base; the same as `tokenizers`' ByteLevel).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Encoder(Protocol):
    """Encodes a list of texts into one uint32 array of ids per text (no EOS added)."""

    name: str

    def encode_many(self, texts: list[str]) -> list[np.ndarray]: ...


class HFEncoder:
    """Encoding through the `tokenizers` library (any tokenizer); ids equal `Tokenizer.encode`."""

    name = "tokenizers"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.backend = tokenizer.backend
        # encode_batch_fast skips computing offsets (tokenizers >= 0.20).
        self._batch = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text, as uint32 arrays."""
        encodings = self._batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encodings]


class TiktokenEncoder:
    """GPT-2's BPE through `tiktoken`: the ids of `gpt2_tokenizer()`, ~3-4x faster.

    Like `tokenizers`, a literal `<|endoftext|>` in the text becomes the end-of-text id.
    """

    name = "tiktoken"

    def __init__(self) -> None:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        merges = _asset("gpt2-tokenizer", "merges.txt")
        vocab = _asset("gpt2-tokenizer", "vocab.json")
        # Passing the files' hashes makes tiktoken re-read them if its cache copy is stale.
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(merges),
            str(vocab),
            vocab_bpe_hash=hashlib.sha256(merges.read_bytes()).hexdigest(),
            encoder_json_hash=hashlib.sha256(vocab.read_bytes()).hexdigest(),
        )
        self.encoding = tiktoken.Encoding(
            "gpt2kit-gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOS_TOKEN: len(ranks)},
            explicit_n_vocab=len(ranks) + 1,
        )
        self._special = frozenset({EOS_TOKEN})

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Ids of each text, as uint32 arrays (tiktoken writes them without Python ints)."""
        enc = self.encoding.encode_to_numpy
        return [enc(t, allowed_special=self._special) for t in texts]


_TIKTOKEN: TiktokenEncoder | None = None


def tiktoken_available() -> bool:
    """Whether the optional `tiktoken` package can be imported."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    return True


def fast_encoder(tokenizer: Tokenizer, allow_tiktoken: bool = True) -> Encoder:
    """The fastest encoder that gives exactly `tokenizer`'s ids.

    `tiktoken` for GPT-2's own BPE when installed (and `allow_tiktoken`), else `tokenizers`.
    """
    global _TIKTOKEN
    if allow_tiktoken and tokenizer.is_gpt2 and tiktoken_available():
        if _TIKTOKEN is None:
            _TIKTOKEN = TiktokenEncoder()
        return _TIKTOKEN
    return HFEncoder(tokenizer)
