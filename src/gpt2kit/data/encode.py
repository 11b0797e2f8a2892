"""Encoding text into token ids: batches into NumPy arrays, with a fast path for GPT-2, and
routed pieces of documents into a DATA_DIR's token files on a thread pool (`encode_to_files`).

For GPT-2's own BPE, `tiktoken` (when installed, `pip install gpt2kit[fast]`) gives the same
ids as `tokenizers` about 3-4x faster; its encoding is built offline from the bundled
`vocab.json`/`merges.txt`. Any other tokenizer goes through `tokenizers`. Both release the GIL
while encoding, so batches encode in parallel threads.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from gpt2kit.data.store import SPLITS, SplitWriter
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


def _tiktoken_available() -> bool:
    """Whether the optional `tiktoken` package can be imported."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    return True


def fast_encoder(tokenizer: Tokenizer) -> Encoder:
    """The fastest encoder that gives exactly `tokenizer`'s ids.

    `tiktoken` for GPT-2's own BPE when installed, else `tokenizers`.
    """
    global _TIKTOKEN
    if tokenizer.is_gpt2 and _tiktoken_available():
        if _TIKTOKEN is None:
            _TIKTOKEN = TiktokenEncoder()
        return _TIKTOKEN
    return HFEncoder(tokenizer)


# ----------------------------------------------------------------------------- to token files

BATCH_CHARS = 1 << 20  # characters of text per encoding batch
BATCH_PIECES = 8192  # ... and at most this many pieces (tiny documents cost objects, not chars)

Routed = tuple[int, str, bool, bool]  # (0 train / 1 val, text, starts a document, ends one)


def _encode_batch(
    encoder: Encoder,
    texts: list[str],
    starts: list[bool],
    ends: list[bool],
    eos: int,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch: (ids with EOS after each document end, offsets of document starts)."""
    arrays = encoder.encode_many(texts)
    eos_arr = np.array([eos], dtype=np.uint32)
    parts, lengths = [], np.empty(len(arrays), dtype=np.int64)
    for i, (a, end) in enumerate(zip(arrays, ends, strict=True)):
        parts.append(a)
        lengths[i] = len(a) + end
        if end:
            parts.append(eos_arr)
    tokens = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
    positions = np.cumsum(lengths) - lengths
    return tokens, positions[np.asarray(starts, dtype=bool)]


def encode_to_files(
    pieces: Iterator[Routed],
    encoder: Encoder,
    eos: int,
    dtype: np.dtype,
    folder: Path,
    threads: int,
    bar: tqdm,
) -> list[SplitWriter]:
    """Encode the routed pieces on `threads` threads into the train/val token files of the
    DATA_DIR being written at `folder`, in order; each document ends with the `eos` id.

    Returns the closed writers of both splits (counts and document lengths). Encoding
    releases the GIL, so batches encode in parallel; at most two batches per thread are in
    flight, so memory stays bounded.
    """
    writers = [SplitWriter(folder, s) for s in SPLITS]
    batches: list[tuple[list[str], list[bool], list[bool]]] = [([], [], []), ([], [], [])]
    sizes = [0, 0]
    inflight: deque[tuple[int, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gpt2kit-encode")

    def drain(keep: int) -> None:
        while len(inflight) > keep:
            dest, future = inflight.popleft()
            tokens, starts = future.result()
            writers[dest].write(tokens, starts)
            bar.set_postfix(tokens=f"{writers[0].tokens + writers[1].tokens:,}", refresh=False)

    def submit(dest: int) -> None:
        texts, starts, ends = batches[dest]
        if texts:
            inflight.append(
                (dest, pool.submit(_encode_batch, encoder, texts, starts, ends, eos, dtype))
            )
            batches[dest], sizes[dest] = ([], [], []), 0
        drain(2 * threads)

    try:
        for dest, text, start, end in pieces:
            texts, starts, ends = batches[dest]
            texts.append(text)
            starts.append(start)
            ends.append(end)
            sizes[dest] += len(text)
            writers[dest].chars += len(text)
            if sizes[dest] >= BATCH_CHARS or len(texts) >= BATCH_PIECES:
                submit(dest)
        submit(0)
        submit(1)
        drain(0)
    except BaseException:
        for _dest, future in inflight:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
        for w in writers:
            w.close()
    return writers
