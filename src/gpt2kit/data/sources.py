"""Text sources read as a stream of documents, in pieces of bounded size.

A SOURCE is a file (plain text, .csv/.tsv, .json, .jsonl, .parquet, or .gz of the text
formats), a folder or glob (searched recursively, sorted), or `hf:NAME[:CONFIG][@SPLIT]`.
`resolve_sources` turns what the user typed into `Source`s and collects every problem;
`read_pieces` streams one source as `(text, end_of_document, document_number)` pieces.

What a document is:
- a plain-text file is one document, exactly its text (a leading UTF-8 BOM dropped); with
  `--split-on-blank-lines` or `--separator` it is cut into documents, each stripped of
  surrounding whitespace, whitespace-only ones dropped;
- a row (.csv/.tsv/.parquet/hf:) or record (.json/.jsonl) is one document, its text exactly;
  rows whose text is empty, whitespace-only or null are skipped and counted.

A document longer than `PIECE_CHARS` comes in several pieces, cut where GPT-2-style byte-level
BPE tokenization is unchanged (see `safe_cut`), so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import gzip
import hashlib
import json
import os
import re
import stat
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from gpt2kit.data.store import is_prepared_dir
from gpt2kit.errors import UserError

if TYPE_CHECKING:
    from gpt2kit.data.options import ReadOptions

PIECE_CHARS = 1 << 18  # a document longer than this is tokenized in pieces of about this size
BLOCK_BYTES = 1 << 20  # files are read this many bytes at a time
SNIFF_BYTES = 8192  # bytes looked at to tell text from binary in a folder
# Byte-order marks of the encodings whose text is full of NUL bytes (UTF-32's first: it starts
# with UTF-16 LE's), so such a file is named for what it is rather than called binary.
WIDE_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
MAX_JSON_RECORD = 64 << 20  # a .json record larger than this is reported as malformed

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
RECORD_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
# What the document number of each kind counts, for messages and the report.
UNITS = {
    "text": "document",
    "csv": "row",
    "tsv": "row",
    "parquet": "row",
    "hf": "row",
    "json": "record",
    "jsonl": "record",
}
DATA_EXTRA = "pip install gpt2kit[data]"

Advance = Callable[[int], None]  # progress callback: bytes of the source just read


def _no_progress(_n: int) -> None:
    pass


class EmptySource(UserError):
    """A source that holds no document (an empty or whitespace-only file, no non-empty rows)."""


@dataclass(frozen=True, slots=True)
class Source:
    """One input: a local file (`path`) of a `kind`, or a Hugging Face dataset (`hf`).

    `found` is True for files found by expanding a folder or glob: an empty one is skipped
    with a warning instead of stopping the run; `origin` is then that folder or glob.
    """

    kind: str  # text, csv, tsv, json, jsonl, parquet or hf
    path: Path | None = None
    compressed: bool = False
    found: bool = False
    hf: tuple[str, str | None, str] | None = None  # (name, config, split)
    origin: str | None = None

    @property
    def name(self) -> str:
        """How messages and the report name this source."""
        if self.hf is not None:
            name, config, split = self.hf
            return f"hf:{name}" + (f":{config}" if config else "") + f"@{split}"
        return str(self.path)

    @property
    def group(self) -> str:
        """The SOURCE argument this source was found from (the report's unit)."""
        return self.origin or self.name

    @property
    def size(self) -> int | None:
        """Bytes on disk (None for hf: datasets)."""
        return self.path.stat().st_size if self.path is not None else None


# ----------------------------------------------------------------------------- resolving


def _kind_of(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    if compressed:
        name = name[:-3]
    return RECORD_SUFFIXES.get(os.path.splitext(name)[1], "text"), compressed


def _looks_like_text(path: Path, compressed: bool, encoding: str) -> bool:
    """Whether the start of a file of unknown extension is text (no NUL byte, decodes)."""
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return False
    if _ascii_compatible(encoding) and b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


def _not_regular(path: Path) -> str | None:
    """What `path` is when it is neither a regular file nor a folder (a pipe, a device, a
    broken link...), else None. Such a path cannot be read several times like a file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link" if path.is_symlink() else None
    for test, what in (
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return None


def _walk(folder: Path, others: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every non-hidden regular file under `folder`, sorted, skipping prepared DATA_DIRs
    inside it; `others` receives `(path, what it is)` for pipes, devices and broken links."""
    files = []
    for root, dirs, names in os.walk(folder):
        # a prepared DATA_DIR is never a source
        dirs[:] = [d for d in dirs if not d.startswith(".") and not is_prepared_dir(Path(root, d))]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(root, name)
            what = _not_regular(path)
            if what is None:
                files.append(path)
            elif others is not None:
                others.append((path, what))
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


def _parse_hf(spec: str) -> tuple[str, str | None, str]:
    rest = spec[3:]
    rest, _, split = rest.partition("@")
    name, _, config = rest.partition(":")
    return name, (config or None), (split or "train")


def resolve_sources(
    specs: list[str], encoding: str = "utf-8"
) -> tuple[list[Source], list[str], list[str]]:
    """Turn SOURCE arguments into `Source`s, in order.

    Returns `(sources, problems, notes)`: `problems` lists every SOURCE that cannot be used
    (missing path, folder without text files, unsupported format), `notes` the files skipped
    while expanding folders and globs (binary files), for the report.
    """
    sources: list[Source] = []
    problems: list[str] = []
    notes: list[str] = []
    for spec in specs:
        if spec.startswith("hf:"):
            name, config, split = _parse_hf(spec)
            if not name:
                problems.append(f"{spec}: expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:wikitext")
            else:
                sources.append(Source("hf", hf=(name, config, split)))
            continue
        path = Path(spec).expanduser()
        special = _not_regular(path)
        if special is not None and special != "a broken link":
            problems.append(
                f"{spec} is {special}, not a regular file: prepare reads each source more than "
                "once (to hash, check and tokenize it), so save the text to a file and pass that"
            )
            continue
        if path.is_file():
            kind, compressed = _kind_of(path)
            if kind == "parquet" and compressed:
                problems.append(f"{spec}: .parquet.gz is not supported; decompress it first")
            else:
                sources.append(Source(kind, path, compressed))
            continue
        if path.is_dir() and is_prepared_dir(path):
            problems.append(
                f"{spec} is a prepared data folder (the output of prepare), not a text source"
            )
            continue
        others: list[tuple[Path, str]] = []
        if path.is_dir():
            candidates, what = _walk(path, others), f"the folder {spec}"
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(str(path), recursive=True))
            candidates, what = [], f"the pattern {spec!r}"
            for m in map(Path, matches):
                if m.is_dir():
                    candidates += _walk(m, others)
                elif m.is_file() and not m.name.startswith("."):
                    candidates.append(m)
                elif (kind := _not_regular(m)) is not None:
                    others.append((m, kind))
            if not matches:
                problems.append(f"{spec}: no file matches this pattern")
                continue
            candidates = sorted(set(candidates), key=lambda p: p.parts)  # `**/*` lists both
        else:
            problems.append(f"{spec}: no such file or folder")
            continue
        found, skipped = [], []
        origin = str(path) if path.is_dir() else spec
        for file in candidates:
            kind, compressed = _kind_of(file)
            base = file.name.lower().removesuffix(".gz")
            known = kind != "text" or os.path.splitext(base)[1] in TEXT_SUFFIXES
            if kind == "parquet" and compressed:
                skipped.append(file)
            elif known or _looks_like_text(file, compressed, encoding):
                found.append(Source(kind, file, compressed, found=True, origin=origin))
            else:
                skipped.append(file)
        if skipped:
            shown = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            notes.append(f"skipped {len(skipped)} binary file(s) in {what}: {shown}")
        if others:
            others.sort()
            shown = ", ".join(f"{p.name} ({kind})" for p, kind in others[:5])
            notes.append(
                f"skipped {len(others)} entries that are not regular files in {what}: "
                + shown
                + (", ..." if len(others) > 5 else "")
            )
        if not found:
            problems.append(
                f"{what} has no text files"
                + (f" ({len(skipped)} binary file(s) skipped)" if skipped else "")
            )
        sources += found
    return sources, problems, notes


def fingerprint(source: Source, advance: Advance = _no_progress) -> dict[str, Any]:
    """What identifies the content of `source`: its kind, size and SHA-256 of its bytes.

    Reads the file once (about 1 GB/s). A hf: dataset on the hub is identified by name,
    config and split only (re-prepare with --force when it changes upstream); a hf: dataset
    given as a local path is hashed like a folder.
    """
    if source.hf is not None:
        name, config, split = source.hf
        fp: dict[str, Any] = {"kind": "hf", "name": name, "config": config, "split": split}
        local = Path(name).expanduser()
        if local.exists():
            files = [local] if local.is_file() else _walk(local)
            fp["files"] = [fingerprint(Source("text", f), advance)["sha256"] for f in files]
        return fp
    assert source.path is not None
    h = hashlib.sha256()
    size = 0
    with open(source.path, "rb") as f:
        while block := f.read(4 * BLOCK_BYTES):
            h.update(block)
            size += len(block)
            advance(len(block))
    return {
        "kind": source.kind,
        "compressed": source.compressed,
        "bytes": size,
        "sha256": h.hexdigest(),
    }


# ----------------------------------------------------------------------------- cutting


_NEWLINE_CUT = re.compile(r"(?<=\S)\n(?=\S)")
_SPACE_CUT = re.compile(r"(?<=\S) (?=\S)")


def safe_cut(text: str, limit: int) -> int:
    """A position in `(limit // 2, limit]` where `text` can be cut without changing its tokens.

    Prefers just after a newline between two non-space characters, then just before a space
    between two non-space characters: GPT-2's pre-tokenizer (used by byte-level BPEs such as
    `gpt2` and `bpe:N`) always starts a pre-token there, and looks neither further back nor
    across, so encoding the two parts gives the ids of encoding the whole. Falls back to
    `limit` when the window has neither (a very long line without spaces).
    """
    lo = limit // 2
    for pattern, use_end in ((_NEWLINE_CUT, True), (_SPACE_CUT, False)):
        for window in (4096, limit - lo):
            start = max(lo, limit - window)
            last = None
            for last in pattern.finditer(text, start, limit + 1):  # noqa: B007
                pass
            if last is not None:
                cut = last.end() if use_end else last.start()
                if lo < cut <= limit:
                    return cut
    return limit


def split_long(text: str, limit: int | None = None) -> Iterator[str]:
    """`text` in pieces of at most about `limit` (default `PIECE_CHARS`) characters.

    The pieces are cut at `safe_cut` points, so their ids concatenated are the text's ids.
    Each cut looks at a window of `limit + 1` characters (all `safe_cut` reads), so a huge
    text is cut in linear time.
    """
    limit = limit or PIECE_CHARS
    start = 0
    while len(text) - start > 2 * limit:
        cut = safe_cut(text[start : start + limit + 1], limit)
        yield text[start : start + cut]
        start += cut
    yield text[start:]


# ----------------------------------------------------------------------------- decoding


def _ascii_compatible(encoding: str) -> bool:
    name = codecs.lookup(encoding).name
    return not name.startswith(("utf-16", "utf-32"))


def _open_binary(source: Source) -> tuple[BinaryIO, BinaryIO]:
    """(stream of the file's bytes, the raw file for progress): gunzips .gz files."""
    assert source.path is not None
    raw = open(source.path, "rb")  # noqa: SIM115 - closed by the caller
    if source.compressed:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def decoded_blocks(source: Source, reading: ReadOptions, advance: Advance) -> Iterator[str]:
    """The text of a file, decoded block by block with `reading.encoding`/`reading.errors`.

    Raises a `UserError` naming the file and the byte offset for text that does not decode
    (offsets count the decompressed bytes of a .gz), and for binary files (a NUL byte).
    """
    stream, raw = _open_binary(source)
    decoder = codecs.getincrementaldecoder(reading.encoding)(errors=reading.errors)
    check_nul = _ascii_compatible(reading.encoding)
    utf8 = codecs.lookup(reading.encoding).name in ("utf-8", "utf-8-sig")
    offset, first, where = 0, True, raw.tell()
    fix = "pass --encoding (e.g. latin-1) if the file uses another encoding, or --errors replace"
    try:
        while True:
            try:
                block = stream.read(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as e:
                raise UserError(f"{source.path} is not a valid gzip file ({e}).") from None
            now = raw.tell()
            advance(now - where)
            where = now
            if check_nul and b"\x00" in block:
                wide = next((n for bom, n in WIDE_BOMS if block.startswith(bom)), None)
                if offset == 0 and wide is not None:
                    raise UserError(
                        f"{source.path} is {wide.upper()} text (it starts with a {wide.upper()} "
                        f"byte-order mark), not {reading.encoding}: pass --encoding {wide}."
                    )
                at = offset + block.index(b"\x00")
                raise UserError(
                    f"{source.path} looks like a binary file (a NUL byte at byte offset {at}), "
                    "not text; remove it from the sources."
                )
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                bad = " ".join(f"0x{b:02x}" for b in e.object[e.start : e.end])
                raise UserError(
                    f"{source.path} is not valid {reading.encoding} text: {bad} at byte offset "
                    f"{at} cannot be decoded; {fix}."
                ) from None
            if first and utf8 and text.startswith("\ufeff"):
                text = text[1:]
            first = False
            if "\x00" in text:
                raise UserError(
                    f"{source.path} looks like a binary file (it decodes to NUL characters); "
                    "remove it from the sources or pass the right --encoding."
                )
            offset += len(block)
            if text:
                yield text
            if not block:
                return
    finally:
        stream.close()
        raw.close()


def _lines(blocks: Iterable[str]) -> Iterator[str]:
    """Lines of a stream of text blocks, each with its newline (split on '\\n' only).

    The start of a line longer than a block is kept as a list of parts joined once, so a
    record on one huge line costs linear time, not a copy per block.
    """
    rest: list[str] = []
    for block in blocks:
        if "\n" not in block:
            rest.append(block)
            continue
        parts = block.split("\n")
        rest.append(parts[0])
        yield "".join(rest) + "\n"
        for p in parts[1:-1]:
            yield p + "\n"
        rest = [parts[-1]] if parts[-1] else []
    if rest:
        yield "".join(rest)


# ----------------------------------------------------------------------------- plain text


_BLANK_LINES = re.compile(r"[^\S\n]*\n(?:[^\S\n]*\n)+")
_NOT_INLINE_SPACE = re.compile(r"[^ \t\r\f\v]")
Piece = tuple[str, bool, int]  # (text, ends a document, document number in its source)


def _whole_file(blocks: Iterator[str], source: Source) -> Iterator[Piece]:
    buf, seen_text = "", False
    for block in blocks:
        buf += block
        seen_text = seen_text or not buf.isspace()
        if not seen_text:
            continue  # keep leading whitespace until we know the file is not blank
        while len(buf) > 2 * PIECE_CHARS:
            cut = safe_cut(buf, PIECE_CHARS)
            yield buf[:cut], False, 1
            buf = buf[cut:]
    if not seen_text:
        what = "is empty" if not buf else "contains only whitespace"
        raise EmptySource(f"{source.path} {what}; remove it from the sources.")
    yield buf, True, 1


def _split_file(
    blocks: Iterator[str], source: Source, separator: re.Pattern[str], literal: bool
) -> Iterator[Piece]:
    """Documents of a file cut at `separator` matches, each stripped, blank ones dropped."""
    buf, n, started = "", 0, False  # `started`: pieces of the current document were yielded
    guard = len(separator.pattern) if literal else 0

    def finish(text: str) -> Iterator[Piece]:
        nonlocal n, started
        text = text.strip() if not started else text.rstrip()
        if started or text:
            n += 1
            yield text, True, n
        started = False

    for block in blocks:
        buf += block
        pos = 0
        for m in separator.finditer(buf):
            # A blank-line run that reaches the end of the buffer may grow with the next block.
            if not literal and not _NOT_INLINE_SPACE.search(buf, m.end()):
                break
            yield from finish(buf[pos : m.start()])
            pos = m.end()
        buf = buf[pos:]
        while len(buf) > 2 * PIECE_CHARS + guard:
            cut = safe_cut(buf, PIECE_CHARS)
            piece = buf[:cut] if started else buf[:cut].lstrip()
            buf = buf[cut:]
            if piece:
                started = True
                yield piece, False, n + 1
    yield from finish(buf)
    if n == 0:
        raise EmptySource(f"{source.path} has no document: it is empty or only whitespace.")


# ----------------------------------------------------------------------------- records


def _record_text(value: Any, where: str, name: str, flag: str) -> str | None:
    """The document text of one record's value, or None to skip it (null/blank)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(
            f"{where}: {name!r} holds a {type(value).__name__}, not text; pass {flag} to "
            "choose the field that holds the text."
        )
    if not value or value.isspace():
        return None
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _emit(text: str, n: int) -> Iterator[Piece]:
    if len(text) <= 2 * PIECE_CHARS:
        yield text, True, n
        return
    pieces = split_long(text)
    piece = next(pieces)
    for following in pieces:  # one piece ahead: the last one ends the document
        yield piece, False, n
        piece = following
    yield piece, True, n


def _csv_pieces(
    blocks: Iterator[str], source: Source, reading: ReadOptions, stats: dict
) -> Iterator[Piece]:
    column = reading.text_column
    stats["column"] = column
    reader = csv.reader(_lines(blocks), dialect="excel-tab" if source.kind == "tsv" else "excel")
    try:
        header = next(reader, None)
        if header is None:
            raise EmptySource(f"{source.path} is empty; remove it from the sources.")
        if column not in header:
            columns = ", ".join(repr(c) for c in header)
            raise UserError(
                f"{source.path} has no column {column!r}; its columns are: {columns}. "
                "Pass --text-column NAME."
            )
        index, n, skipped = header.index(column), 0, 0
        for row in reader:
            if not row:
                continue  # a blank line
            if index >= len(row):
                raise UserError(
                    f"{source.path} line {reader.line_num}: the row has {len(row)} fields but "
                    f"{column!r} is field {index + 1} of the header."
                )
            text = row[index]
            if not text or text.isspace():
                skipped += 1
                continue
            n += 1
            yield from _emit(text, n)
    except csv.Error as e:
        raise UserError(f"{source.path} line {reader.line_num}: malformed CSV ({e}).") from None
    stats["skipped_records"] = skipped
    if n == 0:
        raise EmptySource(f"{source.path} has no non-empty {column!r} value.")


def _record_value(record: Any, where: str, field: str) -> str | None:
    if isinstance(record, str):
        return _record_text(record, where, field, "--text-field")
    if not isinstance(record, dict):
        raise UserError(
            f"{where}: expected an object with a {field!r} field (or a string), "
            f"got {type(record).__name__}."
        )
    value: Any = record
    for key in [field] if field in record else field.split("."):  # a.b: field b of field a
        if not isinstance(value, dict) or key not in value:
            fields = ", ".join(repr(k) for k in list(record)[:20]) or "none"
            raise UserError(
                f"{where}: the record has no field {field!r} (its fields: {fields}); "
                "pass --text-field NAME (a.b for field b of field a)."
            )
        value = value[key]
    return _record_text(value, where, field, "--text-field")


def _jsonl_records(blocks: Iterator[str], path: Path | None) -> Iterator[tuple[Any, int]]:
    """The records of a JSON Lines file, one a line (blank lines skipped): `(record, line number)`."""
    for line_no, line in enumerate(_lines(blocks), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path} line {line_no}: invalid JSON ({e.msg.removesuffix(' at')} at column "
                f"{e.colno})."
            ) from None
        yield record, line_no


def _json_records(blocks: Iterator[str], path: Path | None) -> Iterator[tuple[Any, int]]:
    """The records of a JSON list, parsed one at a time: `(record, line number)`."""
    decoder = json.JSONDecoder()
    buf, pos, line, more = "", 0, 1, True
    it = iter(blocks)

    def refill() -> bool:
        nonlocal buf, pos, line
        block = next(it, None)
        if block is None:
            return False
        line += buf.count("\n", 0, pos)
        buf, pos = buf[pos:] + block, 0
        return True

    def skip_ws() -> bool:  # False at the end of the input
        nonlocal pos, more
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return True
            if not (more := refill()):
                return False

    def fail(msg: str, at: int) -> UserError:
        return UserError(f"{path} line {line + buf.count(chr(10), 0, at)}: {msg}")

    if not skip_ws():
        raise EmptySource(f"{path} is empty; remove it from the sources.")
    if buf[pos] != "[":
        hint = " (use .jsonl for one record per line)" if buf[pos] == "{" else ""
        raise fail(f"expected a JSON list of records starting with '['{hint}.", pos)
    pos += 1
    first = True
    while True:
        if not skip_ws():
            raise fail("invalid JSON (the list is not closed with ']').", len(buf))
        if buf[pos] == "]":
            pos += 1
            break
        if not first:
            if buf[pos] != ",":
                raise fail(f"invalid JSON (expected ',' or ']', found {buf[pos]!r}).", pos)
            pos += 1
            if not skip_ws():
                raise fail("invalid JSON (the list is not closed with ']').", len(buf))
        first = False
        while True:
            try:
                record, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if len(buf) - pos > MAX_JSON_RECORD or not refill():
                    raise fail(f"invalid JSON ({e.msg.removesuffix(' at')}).", e.pos) from None
        yield record, line + buf.count("\n", 0, pos)
        pos = end
    if skip_ws():
        raise fail("invalid JSON (extra data after the closing ']').", pos)


def _record_pieces(
    records: Iterator[tuple[Any, int]], source: Source, reading: ReadOptions, stats: dict
) -> Iterator[Piece]:
    """One document per record of a .json/.jsonl source: the text of its --text-field."""
    field = reading.text_field
    stats["field"] = field
    n = skipped = 0
    for record, line_no in records:
        text = _record_value(record, f"{source.path} line {line_no}", field)
        if text is None:
            skipped += 1
            continue
        n += 1
        yield from _emit(text, n)
    stats["skipped_records"] = skipped
    if n == 0:
        raise EmptySource(f"{source.path} has no record with a non-empty {field!r}.")


def _parquet_pieces(
    source: Source, reading: ReadOptions, stats: dict, advance: Advance
) -> Iterator[Piece]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            f"Reading {source.path} needs pyarrow: {DATA_EXTRA} (or pip install pyarrow)."
        ) from None
    column = reading.text_column
    stats["column"] = column
    try:
        f = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{source.path} is not a valid Parquet file ({e}).") from None
    names = f.schema_arrow.names
    if column not in names:
        raise UserError(
            f"{source.path} has no column {column!r}; its columns are: "
            f"{', '.join(repr(c) for c in names)}. Pass --text-column NAME."
        )
    ctype = f.schema_arrow.field(column).type
    if pa.types.is_dictionary(ctype):
        ctype = ctype.value_type
    if not (pa.types.is_string(ctype) or pa.types.is_large_string(ctype)):
        raise UserError(
            f"{source.path}: column {column!r} holds {ctype}, not text; pass --text-column NAME."
        )
    size, rows = source.size or 0, max(1, f.metadata.num_rows)
    n = skipped = row_no = 0
    for batch in f.iter_batches(batch_size=4096, columns=[column]):
        for value in batch.column(0).to_pylist():
            row_no += 1
            text = _record_text(value, f"{source.path} row {row_no}", column, "--text-column")
            if text is None:
                skipped += 1
                continue
            n += 1
            yield from _emit(text, n)
        advance(size * batch.num_rows // rows)
    stats["skipped_records"] = skipped
    if n == 0:
        raise EmptySource(f"{source.path} has no non-empty {column!r} value.")


def _hf_pieces(source: Source, reading: ReadOptions, stats: dict) -> Iterator[Piece]:
    assert source.hf is not None
    name, hf_config, split = source.hf
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"Reading {source.name} needs the Hugging Face `datasets` library: pip install datasets pyarrow (gpt2kit's `data` extra)."
        ) from None
    column = reading.text_column
    stats["column"] = column
    try:
        ds = datasets.load_dataset(name, hf_config, split=split, streaming=True)
        rows = iter(ds)
        n = skipped = 0
        for row_no, row in enumerate(rows, 1):
            if column not in row:
                raise UserError(
                    f"{source.name} has no column {column!r}; its columns are: "
                    f"{', '.join(repr(c) for c in row)}. Pass --text-column NAME."
                )
            text = _record_text(row[column], f"{source.name} row {row_no}", column, "--text-column")
            if text is None:
                skipped += 1
                continue
            n += 1
            yield from _emit(text, n)
    except UserError:
        raise
    except (OSError, ValueError, ConnectionError, FileNotFoundError) as e:
        raise UserError(f"Could not read {source.name}: {type(e).__name__}: {e}") from None
    except Exception as e:  # datasets raises its own error types (DatasetNotFoundError, ...)
        if type(e).__module__.split(".")[0] != "datasets":
            raise
        raise UserError(f"Could not read {source.name}: {type(e).__name__}: {e}") from None
    stats["skipped_records"] = skipped
    if n == 0:
        raise EmptySource(f"{source.name} has no non-empty {column!r} value.")


# ----------------------------------------------------------------------------- public


def read_pieces(
    source: Source,
    reading: ReadOptions,
    stats: dict | None = None,
    advance: Advance = _no_progress,
) -> Iterator[Piece]:
    """Stream the documents of one source as `(text, ends_document, document_number)`.

    Concatenating the pieces up to one that ends a document gives that document's text.
    `stats` receives the column/field used and the number of skipped empty records; `advance`
    is called with the bytes read, for progress bars. Bad input raises `UserError` (or its
    subclass `EmptySource` for a source without any document).
    """
    stats = {} if stats is None else stats
    if source.kind == "hf":
        yield from _hf_pieces(source, reading, stats)
    elif source.kind == "parquet":
        yield from _parquet_pieces(source, reading, stats, advance)
    else:
        blocks = decoded_blocks(source, reading, advance)
        with contextlib.closing(blocks):
            if source.kind in ("csv", "tsv"):
                csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
                yield from _csv_pieces(blocks, source, reading, stats)
            elif source.kind == "jsonl":
                yield from _record_pieces(
                    _jsonl_records(blocks, source.path), source, reading, stats
                )
            elif source.kind == "json":
                yield from _record_pieces(
                    _json_records(blocks, source.path), source, reading, stats
                )
            elif reading.split_on_blank_lines:
                yield from _split_file(blocks, source, _BLANK_LINES, literal=False)
            elif reading.separator:
                sep = re.compile(re.escape(reading.separator))
                yield from _split_file(blocks, source, sep, literal=True)
            else:
                yield from _whole_file(blocks, source)


def iter_documents(sources: list[str], reading: ReadOptions) -> Iterator[str]:
    """Every document of SOURCE arguments, as whole strings, in order.

    Uses exactly the rules of `gpt2kit prepare` (formats, `--text-column`/`--text-field`,
    splitting, encoding), as `reading` sets them.
    Files found in folders that hold no document are skipped. Each document is built in
    memory, so a single huge document costs its size; `prepare` itself streams pieces instead.
    """
    resolved, problems, _notes = resolve_sources(sources, reading.encoding)
    if problems:
        raise UserError("Cannot read the sources:", problems)
    for source in resolved:
        parts: list[str] = []
        try:
            for text, end, _n in read_pieces(source, reading):
                parts.append(text)
                if end:
                    yield "".join(parts)
                    parts = []
        except EmptySource:
            if not source.found:
                raise
