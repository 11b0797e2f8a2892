"""The prepared-data store: the on-disk layout of a DATA_DIR, how readers open it, and how
`prepare` writes its token files. The one place that spells the DATA_DIR's file names.

A DATA_DIR holds, for each split (`train`, `val`):

- `{split}.bin`: the token ids, uint16 when the vocabulary fits, else uint32, each document
  followed by `<|endoftext|>`;
- `{split}.idx`: the int64 offset in `{split}.bin` where each document starts;

and `tokenizer/` (the tokenizer, as a model folder holds it), `report.json` (the data report)
and `meta.json` (counts, options, cache key), written last: a folder is a valid DATA_DIR only
once meta.json is there and the files have the sizes it gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpt2kit.errors import UserError
from gpt2kit.fsutil import write_text_atomic
from gpt2kit.tokenizer import Tokenizer, load_tokenizer

FORMAT = "gpt2kit-prepared-data"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
META_FILE = "meta.json"
REPORT_FILE = "report.json"
TOKENIZER_DIR = "tokenizer"


def tokens_path(folder: Path, split: str) -> Path:
    """The file of a split's token ids."""
    return folder / f"{split}.bin"


def starts_path(folder: Path, split: str) -> Path:
    """The file of a split's document start offsets (int64)."""
    return folder / f"{split}.idx"


@dataclass
class PreparedData:
    """A prepared DATA_DIR, memory-mapped: token ids, document offsets, tokenizer, meta, report.

    `train`/`val` are read-only 1-D arrays of token ids (uint16 or uint32), each document
    followed by the end-of-text id; `train_docs`/`val_docs` are the int64 offsets where each
    document starts. `reused` is True when `prepare` found DATA_DIR up to date.
    """

    path: Path
    train: np.ndarray
    val: np.ndarray
    train_docs: np.ndarray
    val_docs: np.ndarray
    tokenizer: Tokenizer
    meta: dict[str, Any]
    report: dict[str, Any]
    reused: bool = False


# ----------------------------------------------------------------------------- reading


def _dir_problem(path: Path) -> str | None:
    """Why `path` is not a complete prepared DATA_DIR, or None when it is one."""
    if not path.is_dir():
        return "it is not a folder"
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return f"it has no {META_FILE}"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"its {META_FILE} cannot be read"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"its {META_FILE} was not written by gpt2kit prepare"
    if meta.get("format_version") != FORMAT_VERSION:
        return (
            f"it was prepared with data format {meta.get('format_version')}, not {FORMAT_VERSION}"
        )
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            expected = {
                tokens_path(path, split): meta[f"{split}_tokens"] * itemsize,
                starts_path(path, split): meta[f"{split}_documents"] * 8,
            }
            for file, size in expected.items():
                if not file.is_file() or file.stat().st_size != size:
                    return f"{file.name} is missing or not of the size {META_FILE} gives"
    except (KeyError, TypeError):
        return f"its {META_FILE} is incomplete"
    for name in (REPORT_FILE, f"{TOKENIZER_DIR}/tokenizer.json"):
        if not (path / name).is_file():
            return f"{name} is missing"
    return None


def is_prepared_dir(path: str | Path) -> bool:
    """Whether `path` is a complete DATA_DIR written by `prepare` (cheap: no data is read)."""
    try:
        return _dir_problem(Path(path)) is None
    except OSError:
        return False


def written_by_prepare(path: Path) -> bool:
    """Whether `path` holds a meta.json of ours, even if the folder is damaged (so `prepare`
    may replace it as a whole)."""
    try:
        return read_meta(path)["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def read_meta(path: Path) -> dict[str, Any]:
    """The meta.json of the DATA_DIR `path`, as a dict (raises OSError/ValueError if unreadable)."""
    return json.loads((path / META_FILE).read_text(encoding="utf-8"))


def _memmap(path: Path, dtype: np.dtype | type) -> np.ndarray:
    if path.stat().st_size == 0:
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r")


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Open a DATA_DIR written by `prepare` (memory-mapped; nothing is read up front).

    Raises `UserError` when the folder is not a complete prepared DATA_DIR, or when its
    tokenizer is not the one the data was prepared with.
    """
    path = Path(data_dir).expanduser()
    problem = _dir_problem(path)
    if problem:
        raise UserError(
            f"{path} is not a prepared data folder: {problem}. "
            f"Make one with `gpt2kit prepare SOURCE... --out {path}`."
        )
    meta = read_meta(path)
    tokenizer = load_tokenizer(path / TOKENIZER_DIR)
    if tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
        raise UserError(
            f"{path}/{TOKENIZER_DIR} does not match the tokenizer the data was prepared with; "
            "prepare the data again (--force)."
        )
    tokenizer.name = meta["tokenizer"]
    dtype = np.dtype(meta["dtype"])
    report = json.loads((path / REPORT_FILE).read_text(encoding="utf-8"))
    return PreparedData(
        path=path,
        train=_memmap(tokens_path(path, "train"), dtype),
        val=_memmap(tokens_path(path, "val"), dtype),
        train_docs=_memmap(starts_path(path, "train"), np.int64),
        val_docs=_memmap(starts_path(path, "val"), np.int64),
        tokenizer=tokenizer,
        meta=meta,
        report=report,
    )


# ----------------------------------------------------------------------------- writing


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2) + "\n"


def save_tokenizer(folder: Path, tokenizer: Tokenizer) -> Tokenizer:
    """Save `tokenizer` into the DATA_DIR being written at `folder`; returns it as read back
    (what `load_prepared` checks the data against)."""
    tokenizer.save(folder / TOKENIZER_DIR)
    return load_tokenizer(folder / TOKENIZER_DIR)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """Write report.json, atomically (a reused DATA_DIR gets its report rewritten in place)."""
    write_text_atomic(folder / REPORT_FILE, _json_text(report))


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write meta.json: the last file of a DATA_DIR, the one that makes it valid."""
    (folder / META_FILE).write_text(_json_text(meta), encoding="utf-8")


class SplitWriter:
    """Appends a split's token ids to `{split}.bin` and its document offsets to `{split}.idx`,
    keeping the counts (tokens, documents, characters) and the shortest and longest document
    length in tokens as it goes."""

    def __init__(self, folder: Path, split: str) -> None:
        self.bin = open(tokens_path(folder, split), "wb", buffering=1 << 22)  # noqa: SIM115
        self.idx = open(starts_path(folder, split), "wb", buffering=1 << 20)  # noqa: SIM115
        self.tokens = self.documents = self.chars = 0
        self.last_start = -1  # where the last document started (-1: none yet)
        self.shortest, self.longest = np.iinfo(np.int64).max, 0  # among finished documents

    def write(self, tokens: np.ndarray, doc_starts: np.ndarray) -> None:
        """Append `tokens`, and the documents that start in them (offsets into `tokens`)."""
        starts = (doc_starts + self.tokens).astype("<i8")
        if len(starts):
            bounds = starts if self.last_start < 0 else np.r_[self.last_start, starts]
            lengths = np.diff(bounds)  # of the documents these starts end
            if len(lengths):
                self.shortest = min(self.shortest, int(lengths.min()))
                self.longest = max(self.longest, int(lengths.max()))
            self.last_start = int(starts[-1])
        self.bin.write(memoryview(np.ascontiguousarray(tokens)))
        self.idx.write(memoryview(starts))
        self.tokens += len(tokens)
        self.documents += len(doc_starts)

    def shortest_doc(self) -> int:
        """Tokens of the shortest document written (0 when none)."""
        return min(self.shortest, self.tokens - self.last_start) if self.documents else 0

    def longest_doc(self) -> int:
        """Tokens of the longest document written (0 when none)."""
        return max(self.longest, self.tokens - self.last_start) if self.documents else 0

    def close(self) -> None:
        """Close both files."""
        self.bin.close()
        self.idx.close()
