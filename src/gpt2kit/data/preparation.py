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
5. train the tokenizer if `bpe:N`, `char` or `auto`, then tokenize in batches on a thread pool and append the
   ids to `train.bin`/`val.bin`, each document followed by `<|endoftext|>`.

Everything is written into a temporary sibling folder renamed to DATA_DIR at the end, so an
interrupted run never leaves a DATA_DIR that looks valid; meta.json is written last. What a
DATA_DIR holds, and how it is read back, is in `store`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tqdm import tqdm

from gpt2kit import __version__
from gpt2kit.data.encode import Routed, encode_to_files, fast_encoder
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
from gpt2kit.data.store import (
    FORMAT,
    FORMAT_VERSION,
    SPLITS,
    PreparedData,
    SplitWriter,
    is_prepared_dir,
    load_prepared,
    read_meta,
    save_tokenizer,
    write_meta,
    write_report,
    written_by_prepare,
)
from gpt2kit.errors import UserError, raise_if_problems
from gpt2kit.fsutil import atomic_directory
from gpt2kit.tokenizer import Tokenizer, TokenizerSpec, load_tokenizer, train_tokenizer

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
                    index = len(hashes) - 1  # of the document among its role's
                    if longest is None or doc_chars > longest["characters"]:
                        longest = _where(source, n, doc_chars, role, index)
                    if shortest is None or doc_chars < shortest["characters"]:
                        shortest = _where(source, n, doc_chars, role, index)
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


def _where(source: Source, n: int, chars: int, role: str, index: int) -> dict[str, Any]:
    """A document for the report: where it is, its length, and (until `_landed` replaces
    them with the split it lands in) its source's role and its index among that role's."""
    unit = UNITS[source.kind]
    whole_file = source.kind == "text" and n == 1
    where = source.name if whole_file else f"{source.name}, {unit} {n:,}"
    return {"where": where, "characters": chars, "role": role, "index": index}


def _landed(doc: dict[str, Any] | None, plan: _Plan) -> dict[str, Any] | None:
    """`doc` with the split it lands in: a --val source's documents are val; a train
    source's are train, except those the random split holds out, and the one document the
    tail split cuts in two (or copies), which is in both."""
    if doc is None:
        return None
    role, index = doc["role"], doc["index"]
    split = role
    if role == "train" and plan.method == "random":
        val = plan.val_index if plan.val_index is not None else np.zeros(0, np.int64)
        pos = int(np.searchsorted(val, index))
        split = "val" if pos < len(val) and val[pos] == index else "train"
    elif role == "train" and plan.method in ("tail", "copy"):
        split = "train and val"
    rest = {k: v for k, v in doc.items() if k not in ("role", "index")}
    return {**rest, "split": split}


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
        f"(cut at the last line break before character {cut:,}, else at the last space)"
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


# ----------------------------------------------------------------------------- prepare


def _content(sources: list[Source], advance: Any) -> dict[str, Any]:
    """What identifies the content of `sources`, in order: each one's kind, size and SHA-256
    folded into one digest, so memory does not grow with the number of files."""
    h = hashlib.sha256()
    for source in sources:
        h.update(json.dumps(fingerprint(source, advance), sort_keys=True).encode() + b"\n")
    return {"files": len(sources), "sha256": h.hexdigest()}


def _cache_key(config: PrepareConfig, content: dict[str, dict], tokenizer_id: str) -> str:
    """The DATA_DIR's cache key: what decides its content (sources, tokenizer, split, reading
    options, format). Any change to how it is computed prepares every existing DATA_DIR again."""
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


def _tokens_per_document(writers: list[SplitWriter]) -> dict[str, float]:
    docs = sum(w.documents for w in writers)
    longest = max(w.longest_doc() for w in writers)
    shortest = min(w.shortest_doc() for w in writers if w.documents)
    return {"mean": sum(w.tokens for w in writers) / docs, "min": shortest, "max": longest}


def _check_inputs(
    config: PrepareConfig, out: Path
) -> tuple[dict[str, list[Source]], Tokenizer | None, list[str], int]:
    """Step 1: the sources of each split, the tokenizer (None when it is trained on the data
    later), notes for the report and the encoding threads. Raises one `UserError` listing
    every problem, before anything is read or written."""
    sources, problems, notes = {}, [], []
    for role, specs in (("train", config.sources), ("val", config.val)):
        sources[role], p, n = resolve_sources(specs, config.reading.encoding)
        problems += p
        notes += n
    tokenizer: Tokenizer | None = None
    if not TokenizerSpec.parse(config.tokenizer).is_trained:
        try:
            tokenizer = load_tokenizer(config.tokenizer)
        except UserError as e:
            problems.append(str(e))
    if out.exists() and not written_by_prepare(out) and (not out.is_dir() or any(out.iterdir())):
        problems.append(
            f"--out {out} exists and is not a prepared data folder: choose a new folder "
            "(prepare replaces DATA_DIR as a whole)"
        )
    raise_if_problems(problems, "Cannot prepare the data:")
    threads, note = _threads(config)
    notes += [note] if note else []
    return sources, tokenizer, notes, threads


def _report(meta: dict[str, Any], config: PrepareConfig, out: Path) -> dict[str, Any]:
    """The report of a DATA_DIR at `out`, judged against this run's --block-size/--batch-size."""
    return {**build_report(meta, config.block_size, config.batch_size), "data_dir": str(out)}


def _reuse(out: Path, key: str, config: PrepareConfig) -> PreparedData | None:
    """The DATA_DIR at `out` when it was prepared with the cache key `key` (and --force is not
    given), its report refreshed for this run's training shape; else None."""
    if config.force or not is_prepared_dir(out) or read_meta(out).get("cache_key") != key:
        return None
    data = load_prepared(out)
    data.reused = True
    report = _report(data.meta, config, out)
    if report != data.report:  # the warnings about --block-size/--batch-size changed
        write_report(out, report)
        data.report = report
    return data


def _expected_documents(scan: _Scan, plan: _Plan) -> list[int]:
    """How many documents train and val must hold once tokenized."""
    if plan.method == "random":
        return [scan.docs["train"] - len(plan.val_index), len(plan.val_index)]
    if plan.method in ("tail", "copy"):
        return [1, 1]
    return [scan.docs["train"], scan.docs["val"]]


def prepare(config: PrepareConfig, progress: bool = True) -> PreparedData:
    """Tokenize `config.sources` into `config.out` (DATA_DIR), or reuse it when up to date.

    Returns the prepared data memory-mapped (`PreparedData`), its report included. Bad input
    raises one `UserError` listing every problem, before anything is written; an existing
    DATA_DIR is replaced only once the new one is complete.
    """
    started = time.perf_counter()
    out = Path(config.out or "").expanduser()
    sources, tokenizer, notes, threads = _check_inputs(config, out)

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
    reused = _reuse(out, key, config)
    if reused is not None:
        return reused

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
        saved = save_tokenizer(tmp, tokenizer)
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
        encoder = fast_encoder(tokenizer)
        with _bar(progress, local, "tokenizing") as bar:
            writers = encode_to_files(
                _routed(scan, plan, config, bar.update),
                encoder,
                tokenizer.eos_id,
                dtype,
                tmp,
                threads,
                bar,
            )
        if [w.documents for w in writers] != _expected_documents(scan, plan):
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
                "longest_document": _landed(scan.longest, plan),
                "shortest_document": _landed(scan.shortest, plan),
                "tokens_per_document": _tokens_per_document(writers),
                "warnings": scan.warnings,
                "seconds": round(time.perf_counter() - started, 3),
            },
        }
        write_report(tmp, _report(meta, config, out))
        write_meta(tmp, meta)
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
