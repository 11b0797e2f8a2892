"""The data report of `gpt2kit prepare`: counts, split, duplicates and warnings that matter.

`build_report` derives it from a DATA_DIR's meta.json; the warnings that depend on the
training shape (`--block-size`, `--batch-size`) are recomputed each time, so a reused
DATA_DIR is judged against the run at hand. `format_report` prints it for people.
"""

from __future__ import annotations

from typing import Any

# GPT-2's context (`GPT2Config.n_positions`, checked by a test), the block size assumed when
# --block-size is not given. Not imported from gpt2kit.model to keep PyTorch out of prepare.
GPT2_CONTEXT = 1024


def _n(x: int) -> str:
    return f"{x:,}"


def _doc(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return f"{_n(d['characters'])} characters ({d['where']})"


def training_warnings(
    meta: dict[str, Any], block_size: int | None, batch_size: int | None
) -> list[str]:
    """Warnings about a corpus too small for the training shape (block x batch)."""
    block = block_size or GPT2_CONTEXT
    train, val = meta["train_tokens"], meta["val_tokens"]
    warnings = []
    if train <= block:
        warnings.append(
            f"the training split has {_n(train)} tokens, fewer than one block of {_n(block)} "
            f"(+1 for the shifted targets): use --block-size {max(1, train - 1)} or smaller"
        )
    elif batch_size and train < batch_size * block:
        warnings.append(
            f"the corpus has {_n(train)} training tokens, smaller than one batch of "
            f"{batch_size} x {_n(block)}: use a smaller --block-size or --batch-size"
        )
    if val <= block and train > block:
        warnings.append(
            f"the validation split has {_n(val)} tokens, fewer than one block of {_n(block)}: "
            "validation loss will rest on little text; raise --val-fraction or pass --val"
        )
    return warnings


def build_report(
    meta: dict[str, Any], block_size: int | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """The data report (the content of report.json) of a prepared DATA_DIR's `meta`."""
    stats = meta["stats"]
    docs = meta["train_documents"] + meta["val_documents"]
    tokens = meta["train_tokens"] + meta["val_tokens"]
    chars = meta["train_chars"] + meta["val_chars"]
    text_tokens = tokens - docs  # without the <|endoftext|> after each document
    warnings = training_warnings(meta, block_size, batch_size)
    shared = stats["train_val_shared_documents"]
    if shared:
        warnings.append(
            f"train and val share {_n(shared)} identical document(s): validation loss will "
            "look better than it is; deduplicate the sources"
        )
    dups = stats["duplicate_documents"]
    if dups and dups >= 0.01 * docs:
        warnings.append(
            f"{_n(dups)} of {_n(docs)} documents ({dups / docs:.0%}) are exact duplicates of "
            "another one: the model will see them more often"
        )
    warnings += stats.get("warnings", [])
    return {
        "data_dir": meta.get("data_dir"),
        "tokenizer": meta["tokenizer"],
        "encoder": stats.get("encoder"),
        "vocab_size": meta["vocab_size"],
        "dtype": meta["dtype"],
        "sources": [
            {k: s[k] for k in s if k not in ("sha256", "bytes", "compressed")}
            for s in meta["sources"]
        ],
        "documents": docs,
        "characters": chars,
        "tokens": tokens,
        "characters_per_token": round(chars / text_tokens, 3) if text_tokens else None,
        "split": meta["split"]["description"],
        "train": {
            "documents": meta["train_documents"],
            "characters": meta["train_chars"],
            "tokens": meta["train_tokens"],
        },
        "val": {
            "documents": meta["val_documents"],
            "characters": meta["val_chars"],
            "tokens": meta["val_tokens"],
        },
        "longest_document": stats["longest_document"],
        "shortest_document": stats["shortest_document"],
        "tokens_per_document": stats["tokens_per_document"],
        "duplicate_documents": dups,
        "train_val_shared_documents": shared,
        "seconds": stats.get("seconds"),
        "warnings": warnings,
    }


def format_report(report: dict[str, Any], reused: bool = False) -> str:
    """The report as a few aligned lines of text, warnings last."""
    lines = []
    where = report.get("data_dir") or "DATA_DIR"
    if reused:
        lines.append(f"{where} is up to date (same sources and options): reused it.")
    else:
        secs = report.get("seconds")
        mb = sum(s.get("characters", 0) for s in report["sources"]) / 1e6
        took = f" in {secs:.1f} s ({mb / secs:.1f} M characters/s)" if secs else ""
        lines.append(f"Prepared {where}{took}.")
    enc = f", encoded with {report['encoder']}" if report.get("encoder") else ""
    rows = [
        (
            "tokenizer",
            f"{report['tokenizer']} ({_n(report['vocab_size'])} ids, {report['dtype']}{enc})",
        ),
    ]
    for s in report["sources"]:
        col = s.get("column") or s.get("field")
        col = f", text in {'column' if 'column' in s else 'field'} {col!r}" if col else ""
        skipped = f", {_n(s['skipped_records'])} empty skipped" if s.get("skipped_records") else ""
        files = s.get("files")
        files = f", {_n(files)} files" if isinstance(files, int) and files > 1 else ""
        rows.append(
            (
                f"{s['role']} source",
                f"{s['source']} ({s['kind']}{col}{files}): {_n(s['documents'])} "
                f"document(s){skipped}",
            )
        )
    rows += [
        ("documents", _n(report["documents"])),
        ("characters", _n(report["characters"])),
        ("tokens", f"{_n(report['tokens'])} (<|endoftext|> after each document included)"),
        ("chars/token", str(report["characters_per_token"])),
        ("split", report["split"]),
    ]
    for name in ("train", "val"):
        s = report[name]
        rows.append(
            (
                name,
                f"{_n(s['documents'])} document(s), {_n(s['characters'])} characters, "
                f"{_n(s['tokens'])} tokens",
            )
        )
    tpd = report["tokens_per_document"]
    rows += [
        ("longest", _doc(report["longest_document"])),
        ("shortest", _doc(report["shortest_document"])),
        ("tokens/doc", f"mean {tpd['mean']:,.1f}, min {_n(tpd['min'])}, max {_n(tpd['max'])}"),
        (
            "duplicates",
            f"{_n(report['duplicate_documents'])} exact duplicate document(s), "
            f"{_n(report['train_val_shared_documents'])} shared by train and val",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
