"""`gpt2kit prepare`: text sources -> token files in a DATA_DIR, cached, with a data report.

The steps, each streaming so memory stays bounded whatever the input size:

1. resolve the sources and check the options (every problem reported at once);
2. hash the sources' bytes: with the options they form the cache key, and a DATA_DIR that
   was prepared with the same key is reused at once;
3. scan: read every document once to validate the input before any heavy work, count
   documents and characters and hash each document (8 bytes per document, the only memory
   that grows with the number of documents) for the duplicate statistics;
4. choose the validation split: `--val` sources, else a seeded random choice of whole
   documents, else (one document) its tail;
5. train the tokenizer if `bpe:N`, then tokenize in batches on a thread pool and append the
   ids to `train.bin`/`val.bin`, each document followed by `<|endoftext|>`.

Everything is written into a temporary sibling folder renamed to DATA_DIR at the end, so an
interrupted run never leaves a DATA_DIR that looks valid; meta.json is written last.

DATA_DIR holds `train.bin`/`val.bin` (token ids, uint16 when the vocab fits, else uint32),
`train.idx`/`val.idx` (int64 start offset of each document), `tokenizer/`, `meta.json` and
`report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tqdm import tqdm

from gpt2kit import __version__
from gpt2kit.data.encode import Encoder, fast_encoder
from gpt2kit.data.options import PrepareConfig
from gpt2kit.data.report import build_report, format_report
from gpt2kit.data.sources import (
    PIECE_CHARS,
    UNITS,
    EmptySource,
    Source,
    fingerprint,
    read_pieces,
    resolve_sources,
)
from gpt2kit.errors import UserError, raise_if_problems
from gpt2kit.fsutil import atomic_directory, write_text_atomic
from gpt2kit.tokenizer import Tokenizer, is_trained_spec, load_tokenizer, train_tokenizer

FORMAT = "gpt2kit-prepared-data"
FORMAT_VERSION = 1
BATCH_CHARS = 1 << 20  # characters of text per encoding batch
BATCH_PIECES = 8192  # ... and at most this many pieces (tiny documents cost objects, not chars)
SPLITS = ("train", "val")


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

    @property
    def vocab_size(self) -> int:
        """Number of token ids of the tokenizer (the model's vocab must be at least this)."""
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        """The end-of-text id that follows every document."""
        return int(self.meta["eos_id"])


# ----------------------------------------------------------------------------- reading DATA_DIR


def _dir_problem(path: Path) -> str | None:
    """Why `path` is not a complete prepared DATA_DIR, or None when it is one."""
    if not path.is_dir():
        return "it is not a folder"
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return "it has no meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its meta.json cannot be read"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return "its meta.json was not written by gpt2kit prepare"
    if meta.get("format_version") != FORMAT_VERSION:
        return (
            f"it was prepared with data format {meta.get('format_version')}, not {FORMAT_VERSION}"
        )
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            expected = {
                f"{split}.bin": meta[f"{split}_tokens"] * itemsize,
                f"{split}.idx": meta[f"{split}_documents"] * 8,
            }
            for name, size in expected.items():
                if not (path / name).is_file() or (path / name).stat().st_size != size:
                    return f"{name} is missing or not of the size meta.json gives"
    except (KeyError, TypeError):
        return "its meta.json is incomplete"
    for name in ("report.json", "tokenizer/tokenizer.json"):
        if not (path / name).is_file():
            return f"{name} is missing"
    return None


def is_prepared_dir(path: str | Path) -> bool:
    """Whether `path` is a complete DATA_DIR written by `prepare` (cheap: no data is read)."""
    try:
        return _dir_problem(Path(path)) is None
    except OSError:
        return False


def _written_by_prepare(path: Path) -> bool:
    """Whether `path` holds a meta.json of ours, even if the folder is damaged."""
    try:
        return json.loads((path / "meta.json").read_text(encoding="utf-8"))["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / "meta.json").read_text(encoding="utf-8"))


def _memmap(path: Path, dtype: np.dtype | type) -> np.ndarray:
    if path.stat().st_size == 0:
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r")


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Open a DATA_DIR written by `prepare` (memory-mapped; nothing is read up front).

    Raises `UserError` when the folder is not a complete prepared DATA_DIR.
    """
    path = Path(data_dir).expanduser()
    problem = _dir_problem(path)
    if problem:
        raise UserError(
            f"{path} is not a prepared data folder: {problem}. "
            f"Make one with `gpt2kit prepare SOURCE... --out {path}`."
        )
    meta = _read_meta(path)
    tokenizer = load_tokenizer(path / "tokenizer")
    if tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
        raise UserError(
            f"{path}/tokenizer does not match the tokenizer the data was prepared with; "
            "prepare the data again (--force)."
        )
    tokenizer.name = meta["tokenizer"]
    dtype = np.dtype(meta["dtype"])
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    return PreparedData(
        path=path,
        train=_memmap(path / "train.bin", dtype),
        val=_memmap(path / "val.bin", dtype),
        train_docs=_memmap(path / "train.idx", np.int64),
        val_docs=_memmap(path / "val.idx", np.int64),
        tokenizer=tokenizer,
        meta=meta,
        report=report,
    )


# ----------------------------------------------------------------------------- scanning


def _bar(progress: bool, total: int | None, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        delay=0.5,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


@dataclass
class _Scan:
    """What reading every document once taught us (step 3)."""

    usable: dict[str, list[Source]] = field(default_factory=lambda: {"train": [], "val": []})
    sources: list[dict[str, Any]] = field(default_factory=list)
    docs: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    chars: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    hashes: dict[str, array] = field(
        default_factory=lambda: {"train": array("Q"), "val": array("Q")}
    )
    longest: dict[str, Any] | None = None
    shortest: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def _scan(sources: dict[str, list[Source]], config: PrepareConfig, bar: tqdm) -> _Scan:
    """Read every document: validate, count, hash (8 bytes each); raise all problems at once.

    The report gets one entry per SOURCE argument (a folder of 50,000 files is one entry), so
    what is kept per file is only its `Source`.
    """
    scan, problems = _Scan(), []
    for role in SPLITS:
        hashes = scan.hashes[role]
        entry: dict[str, Any] | None = None
        empty: dict[str, dict[str, Any]] = {}  # SOURCE argument -> its files without text
        for source in sources[role]:
            stats: dict[str, Any] = {}
            kept, docs, chars, doc_chars = len(hashes), 0, 0, 0
            longest, shortest = scan.longest, scan.shortest
            h = hashlib.blake2b(digest_size=8)
            try:
                for text, end, n in read_pieces(source, config.reading, stats, bar.update):
                    h.update(text.encode("utf-8", "surrogatepass"))
                    doc_chars += len(text)
                    if not end:
                        continue
                    hashes.append(int.from_bytes(h.digest(), "little"))
                    h = hashlib.blake2b(digest_size=8)
                    docs += 1
                    chars += doc_chars
                    if longest is None or doc_chars > longest["characters"]:
                        longest = _where(source, n, doc_chars, role)
                    if shortest is None or doc_chars < shortest["characters"]:
                        shortest = _where(source, n, doc_chars, role)
                    doc_chars = 0
            except UserError as e:
                del hashes[kept:]
                if isinstance(e, EmptySource) and source.found:
                    skip = empty.setdefault(source.group, {"count": 0, "names": []})
                    skip["count"] += 1
                    skip.setdefault("first", f"{source.name}: {e}")
                    if len(skip["names"]) < 5:
                        skip["names"].append(source.path.name if source.path else source.name)
                else:
                    problems.append(str(e))
                continue
            scan.usable[role].append(source)
            scan.docs[role] += docs
            scan.chars[role] += chars
            scan.longest, scan.shortest = longest, shortest
            if entry is None or not source.found or entry["source"] != source.group:
                entry = {"source": source.group, "role": role, "kind": source.kind, "files": 0}
                entry.update(documents=0, characters=0, skipped_records=0)
                scan.sources.append(entry)
            elif source.kind not in entry["kind"].split(", "):
                entry["kind"] += f", {source.kind}"
            entry.update({k: stats[k] for k in ("column", "field") if k in stats})
            entry["files"] += 1
            entry["documents"] += docs
            entry["characters"] += chars
            entry["skipped_records"] += stats.get("skipped_records", 0)
        for group, skip in empty.items():
            shown = ", ".join(skip["names"]) + (", ..." if skip["count"] > 5 else "")
            scan.warnings.append(
                f"skipped {skip['first']}"
                if skip["count"] == 1
                else f"skipped {skip['count']:,} files of {group} that hold no document: {shown}"
            )
    for entry in scan.sources:
        if entry["skipped_records"]:
            what = entry.get("column") or entry.get("field")
            unit = "row" if "column" in entry else "record"
            scan.warnings.append(
                f"skipped {entry['skipped_records']:,} {unit}(s) of {entry['source']} with an "
                f"empty or null {what!r}"
            )
    if not problems and scan.docs["train"] == 0:
        problems.append("the sources hold no document (every file was skipped)")
    if not problems and sources["val"] and scan.docs["val"] == 0:
        problems.append("the --val sources hold no document")
    raise_if_problems(problems, "Cannot prepare the data:")
    return scan


def _where(source: Source, n: int, chars: int, role: str) -> dict[str, Any]:
    unit = UNITS[source.kind]
    whole_file = source.kind == "text" and n == 1
    where = source.name if whole_file else f"{source.name}, {unit} {n:,}"
    return {"where": where, "characters": chars, "split": role}


# ----------------------------------------------------------------------------- the split


@dataclass
class _Plan:
    """How documents are routed to train (0) and val (1)."""

    method: str  # explicit, random, tail or copy
    description: str
    val_index: np.ndarray | None = None  # random: sorted indices of the val documents
    cut: int = 0  # tail: the target character position of the cut


def _plan(scan: _Scan, config: PrepareConfig) -> _Plan:
    n, frac = scan.docs["train"], config.val_fraction
    if scan.docs["val"]:
        return _Plan("explicit", f"val = the --val sources ({scan.docs['val']:,} document(s))")
    if n >= 2:
        k = min(n - 1, max(1, round(frac * n)))
        rng = np.random.default_rng(config.seed)
        index = np.sort(rng.choice(n, size=k, replace=False))
        desc = (
            f"val = {k:,} of {n:,} whole documents ({k / n:.1%}, --val-fraction {frac} "
            f"--seed {config.seed})"
        )
        plan = _Plan("random", desc, val_index=index)
        if k / n > 2 * frac:
            scan.warnings.append(
                f"the corpus has only {n} documents, so the validation split is {k} whole "
                f"document(s) ({k / n:.0%} of them); pass --val FILE for a better split"
            )
        return plan
    chars = scan.chars["train"]
    if chars < 2:
        scan.warnings.append("the corpus is a single character: val is a copy of train")
        return _Plan("copy", "val = a copy of the single, one-character document")
    cut = max(1, chars - max(1, round(frac * chars)))
    desc = (
        f"the corpus is a single document: val = its last ~{frac:.0%} "
        f"(cut at the last line break before character {cut:,})"
    )
    return _Plan("tail", desc, cut=cut)


def _tail_cut(text: str, start: int, target: int, total: int) -> int:
    """Where to cut the piece `text` (which begins at character `start` of the document).

    Just after the last line break before `target`, else before the last space, looking back
    at most as far as the val part is long (so val at most doubles); else exactly at `target`.
    """
    lo = max(0, max(1, target - (total - target)) - start)
    t = target - start
    i = text.rfind("\n", lo, t)
    if i >= 0:
        return i + 1
    i = text.rfind(" ", max(lo, 1 - start), t)
    return i if i >= 0 else t


Routed = tuple[int, str, bool, bool]  # (0 train / 1 val, text, starts a document, ends one)


def _routed(
    scan: _Scan, plan: _Plan, config: PrepareConfig, advance: Any, with_val: bool = True
) -> Iterator[Routed]:
    """Every piece of every document, routed to train or val by `plan`."""
    index, val_ptr = 0, 0
    val_index = plan.val_index if plan.val_index is not None else np.zeros(0, np.int64)
    for source in scan.usable["train"]:
        start, dest, pos = True, 0, 0
        for text, end, _n in read_pieces(source, config.reading, None, advance):
            if plan.method == "random" and start:
                dest = int(val_ptr < len(val_index) and val_index[val_ptr] == index)
                val_ptr += dest
            if plan.method == "tail":
                piece_start, pos = pos, pos + len(text)
                if dest == 0 and pos > plan.cut:
                    c = _tail_cut(text, piece_start, plan.cut, scan.chars["train"])
                    yield 0, text[:c], start, True
                    start, dest, text = True, 1, text[c:]
            if plan.method == "copy":
                yield 1, text, start, end
            if dest == 0 or with_val:
                yield dest, text, start, end
            start = end
            index += end
    if with_val:
        for source in scan.usable["val"]:
            start = True
            for text, end, _n in read_pieces(source, config.reading, None, advance):
                yield 1, text, start, end
                start = end


# ----------------------------------------------------------------------------- tokenizing


def _encode_batch(
    encoder: Encoder, texts: list[str], starts: list[bool], ends: list[bool], eos: int, dtype
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


class _SplitWriter:
    """Appends token ids to `{split}.bin` and document offsets to `{split}.idx`, keeping the
    shortest and longest document length (in tokens) as it goes."""

    def __init__(self, folder: Path, split: str) -> None:
        self.bin = open(folder / f"{split}.bin", "wb", buffering=1 << 22)  # noqa: SIM115
        self.idx = open(folder / f"{split}.idx", "wb", buffering=1 << 20)  # noqa: SIM115
        self.tokens = self.documents = self.chars = 0
        self.last_start = -1  # where the last document started (-1: none yet)
        self.shortest, self.longest = np.iinfo(np.int64).max, 0  # among finished documents

    def write(self, tokens: np.ndarray, doc_starts: np.ndarray) -> None:
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
        return min(self.shortest, self.tokens - self.last_start) if self.documents else 0

    def longest_doc(self) -> int:
        return max(self.longest, self.tokens - self.last_start) if self.documents else 0

    def close(self) -> None:
        self.bin.close()
        self.idx.close()


def _tokenize(
    pieces: Iterator[Routed],
    encoder: Encoder,
    eos: int,
    dtype: np.dtype,
    folder: Path,
    threads: int,
    bar: tqdm,
) -> list[_SplitWriter]:
    """Encode the routed pieces on `threads` threads, appending the results in order."""
    writers = [_SplitWriter(folder, s) for s in SPLITS]
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


# ----------------------------------------------------------------------------- prepare


def _content(sources: list[Source], advance: Any) -> dict[str, Any]:
    """What identifies the content of `sources`, in order: each one's kind, size and SHA-256
    folded into one digest, so memory does not grow with the number of files."""
    h = hashlib.sha256()
    for source in sources:
        h.update(json.dumps(fingerprint(source, advance), sort_keys=True).encode() + b"\n")
    return {"files": len(sources), "sha256": h.hexdigest()}


def _cache_key(config: PrepareConfig, content: dict[str, dict], tokenizer_id: str) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "piece_chars": PIECE_CHARS,
        "tokenizer": tokenizer_id,
        "sources": content,
        "split": None if config.val else [config.val_fraction, config.seed],
        "reading": list(dataclasses.astuple(config.reading)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _threads(config: PrepareConfig) -> tuple[int, str | None]:
    """Encoding threads: --num-threads, at most the cores this process may use (more would
    not encode faster, and each thread keeps two batches in memory); and a note if capped."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if config.num_threads and config.num_threads > cores:
        return cores, (
            f"--num-threads {config.num_threads:,} is more than the {cores} CPU core(s) this "
            f"process may use: used {cores}"
        )
    return config.num_threads or cores, None


def _duplicates(scan: _Scan, plan: _Plan) -> tuple[int, int]:
    """(documents identical to another one, val documents identical to a train one).

    Works on the 8-byte hashes sorted in place (they are not used afterwards), so it needs
    no copy of them: only the val documents' hashes and one byte per document.
    """
    every = np.frombuffer(scan.hashes["train"], dtype=np.uint64)  # a writable view
    val = np.frombuffer(scan.hashes["val"], dtype=np.uint64)
    if plan.method == "random":
        val = every[plan.val_index]  # val documents are among `every`: a copy of theirs
    every.sort()
    duplicates = _repeats(every)
    if plan.method == "random":  # a val document shared with train: its hash occurs more
        val.sort()  # often in every document than in the val documents
        in_every = np.searchsorted(every, val, "right") - np.searchsorted(every, val, "left")
        in_val = np.searchsorted(val, val, "right") - np.searchsorted(val, val, "left")
        return duplicates, int(np.count_nonzero(in_every > in_val))
    val.sort()
    found = np.searchsorted(every, val).clip(max=max(0, len(every) - 1))
    shared = every[found] == val if len(every) else np.zeros(len(val), dtype=bool)
    first = np.ones(len(val), dtype=bool)
    first[1:] = val[1:] != val[:-1]  # each distinct val hash once
    duplicates += _repeats(val) + int(np.count_nonzero(shared & first))
    return duplicates, int(np.count_nonzero(shared)) if plan.method == "explicit" else 0


def _repeats(ordered: np.ndarray) -> int:
    """How many entries of a sorted array equal the one before them."""
    return int(np.count_nonzero(ordered[1:] == ordered[:-1]))


def _tokens_per_document(writers: list[_SplitWriter]) -> dict[str, float]:
    docs = sum(w.documents for w in writers)
    longest = max(w.longest_doc() for w in writers)
    shortest = min(w.shortest_doc() for w in writers if w.documents)
    return {"mean": sum(w.tokens for w in writers) / docs, "min": shortest, "max": longest}


def prepare(config: PrepareConfig, progress: bool = True) -> PreparedData:
    """Tokenize `config.sources` into `config.out` (DATA_DIR), or reuse it when up to date.

    Returns the prepared data memory-mapped (`PreparedData`), its report included. Bad input
    raises one `UserError` listing every problem, before anything is written; an existing
    DATA_DIR is replaced only once the new one is complete.
    """
    started = time.perf_counter()
    out = Path(config.out or "").expanduser()
    sources, problems, notes = {}, [], []
    for role, specs in (("train", config.sources), ("val", config.val)):
        sources[role], p, n = resolve_sources(specs, config.reading.encoding)
        problems += p
        notes += n
    tokenizer: Tokenizer | None = None
    if not is_trained_spec(config.tokenizer):
        try:
            tokenizer = load_tokenizer(config.tokenizer)
        except UserError as e:
            problems.append(str(e))
    if out.exists() and not _written_by_prepare(out) and (not out.is_dir() or any(out.iterdir())):
        problems.append(
            f"--out {out} exists and is not a prepared data folder: choose a new folder "
            "(prepare replaces DATA_DIR as a whole)"
        )
    raise_if_problems(problems, "Cannot prepare the data:")
    threads, note = _threads(config)
    notes += [note] if note else []

    every = sources["train"] + sources["val"]
    local = None if any(s.path is None for s in every) else sum(s.size or 0 for s in every)
    with _bar(progress, local, "hashing sources") as bar:
        content = {r: _content(sources[r], bar.update) for r in SPLITS}
    tokenizer_id = (
        tokenizer.fingerprint
        if tokenizer
        else f"{config.tokenizer}/tokenizers-{tokenizers.__version__}"
    )
    key = _cache_key(config, content, tokenizer_id)
    if not config.force and is_prepared_dir(out) and _read_meta(out).get("cache_key") == key:
        data = load_prepared(out)
        data.reused = True
        report = {
            **build_report(data.meta, config.block_size, config.batch_size),
            "data_dir": str(out),
        }
        if report != data.report:  # the warnings about --block-size/--batch-size changed
            write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
            data.report = report
        return data

    with _bar(progress, local, "checking sources") as bar:
        scan = _scan(sources, config, bar)
    scan.warnings = notes + scan.warnings
    plan = _plan(scan, config)

    with atomic_directory(out) as tmp:
        if tokenizer is None:
            with _bar(progress, local, f"training {config.tokenizer}") as bar:
                tokenizer = train_tokenizer(
                    config.tokenizer,
                    lambda: (
                        t
                        for d, t, _s, _e in _routed(scan, plan, config, bar.update, False)
                        if d == 0
                    ),
                )
        tokenizer.save(tmp / "tokenizer")
        saved = load_tokenizer(tmp / "tokenizer")  # what load_prepared will check against
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
        encoder = fast_encoder(tokenizer)
        with _bar(progress, local, "tokenizing") as bar:
            writers = _tokenize(
                _routed(scan, plan, config, bar.update),
                encoder,
                tokenizer.eos_id,
                dtype,
                tmp,
                threads,
                bar,
            )
        expected = [scan.docs["train"], scan.docs["val"]]
        if plan.method == "random":
            expected = [expected[0] - len(plan.val_index), len(plan.val_index)]
        elif plan.method in ("tail", "copy"):
            expected = [1, 1]
        if [w.documents for w in writers] != expected:
            raise UserError("The sources changed while they were being prepared; run it again.")
        duplicates, shared = _duplicates(scan, plan)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gpt2kit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cache_key": key,
            "tokenizer": config.tokenizer,
            "tokenizer_fingerprint": saved.fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "dtype": dtype.name,
            **{f"{s}_tokens": w.tokens for s, w in zip(SPLITS, writers, strict=True)},
            **{f"{s}_chars": w.chars for s, w in zip(SPLITS, writers, strict=True)},
            **{f"{s}_documents": w.documents for s, w in zip(SPLITS, writers, strict=True)},
            "split": {
                "method": plan.method,
                "val_fraction": None if plan.method == "explicit" else config.val_fraction,
                "seed": config.seed if plan.method == "random" else None,
                "description": plan.description,
            },
            "options": dataclasses.asdict(config.reading),
            "sources": scan.sources,
            "stats": {
                "encoder": encoder.name,
                "duplicate_documents": duplicates,
                "train_val_shared_documents": shared,
                "longest_document": scan.longest,
                "shortest_document": scan.shortest,
                "tokens_per_document": _tokens_per_document(writers),
                "warnings": scan.warnings,
                "seconds": round(time.perf_counter() - started, 3),
            },
        }
        report = {**build_report(meta, config.block_size, config.batch_size), "data_dir": str(out)}
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return load_prepared(out)


def run_prepare(config: PrepareConfig) -> PreparedData:
    """Tokenize text sources into DATA_DIR and print a data report.

    Sources are read streaming (memory stays bounded whatever their size), each document is
    followed by <|endoftext|>, and a validation split is held out: the --val sources, else
    --val-fraction of whole documents (the tail of a single-document corpus). Preparing the
    same sources with the same options again reuses DATA_DIR at once; any change of content
    or options prepares it again. Examples:

      gpt2kit prepare book.txt --out data/book
      gpt2kit prepare notes/ "extra/**/*.md" --out data/notes --tokenizer bpe:8192
      gpt2kit prepare reviews.csv --text-column review --out data/reviews --val test.csv
    """
    data = prepare(config, progress=True)
    text = format_report(data.report, reused=data.reused)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return data
