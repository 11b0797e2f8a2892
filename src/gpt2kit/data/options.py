"""The options of `gpt2kit prepare` (`PrepareConfig`) and how sources are read into documents
(`ReadOptions`, a group of options that prepare, train and eval share)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Literal

from gpt2kit.config import flat_names, group, option
from gpt2kit.errors import raise_if_problems
from gpt2kit.tokenizer import TokenizerSpec

# The validation split, shared by prepare and train.
DEFAULT_VAL_FRACTION = 0.05
VAL_FRACTION_HELP = (
    "Fraction of whole documents held out for validation, chosen with --seed; a corpus that is "
    "a single document gives this fraction of its tail instead."
)


@dataclass
class ReadOptions:
    """How text sources are read into documents: shared by prepare, train and eval (a
    `group` of each command's options), and part of a prepared DATA_DIR's cache key."""

    text_column: str = option(
        "text", help="Column that holds the text in .csv/.tsv/.parquet files and hf: datasets."
    )
    text_field: str = option(
        "text", help="Field that holds the text in .json/.jsonl records (a.b: field b of field a)."
    )
    split_on_blank_lines: bool = option(
        False,
        help="Cut plain-text files into documents at blank lines (surrounding whitespace of each "
        "document is stripped). By default a whole file is one document.",
    )
    separator: str | None = option(
        None,
        help="Cut plain-text files into documents at this exact string (for example "
        "'<|endoftext|>'); surrounding whitespace of each document is stripped.",
    )
    encoding: str = option("utf-8", help="Text encoding of the input files (e.g. latin-1).")
    errors: Literal["strict", "replace", "ignore"] = option(
        "strict",
        help="What to do with bytes that are not valid in --encoding: stop with an error "
        "(strict), or replace them with U+FFFD, or drop them.",
    )

    def problems(self) -> list[str]:
        """What is wrong with these options, one message per problem (none: fine)."""
        problems: list[str] = []
        if not self.text_column:
            problems.append("--text-column cannot be empty")
        if not self.text_field:
            problems.append("--text-field cannot be empty")
        if self.separator is not None and not self.separator:
            problems.append("--separator cannot be empty (leave it out to keep whole files)")
        if self.separator and self.split_on_blank_lines:
            problems.append("use either --separator or --split-on-blank-lines, not both")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            problems.append(f"--encoding {self.encoding!r} is not a known text encoding")
        if self.errors not in ("strict", "replace", "ignore"):
            problems.append(f"--errors must be strict, replace or ignore, got {self.errors!r}")
        return problems


@flat_names
@dataclass
class PrepareConfig:
    """Options of `gpt2kit prepare` (and of the data step of `gpt2kit train SOURCE...`)."""

    sources: list[str] = option(
        [],
        help="Text to prepare: .txt/.md files, folders or globs (searched recursively), "
        ".csv/.tsv, .json/.jsonl, .parquet, .gz of those, or hf:NAME[:CONFIG][@SPLIT].",
        positional=True,
        metavar="SOURCE",
    )
    out: str | None = option(
        None, help="The folder to write the prepared data to (required).", metavar="DATA_DIR"
    )
    tokenizer: str = option(
        "gpt2",
        help="gpt2 (GPT-2's own BPE), a tokenizer.json or model folder, or one trained on the "
        "training sources first: bpe:VOCAB_SIZE (a byte-level BPE), auto (a BPE sized to the "
        "corpus: about 2 x sqrt(bytes), 512-16,384) or char (one id per character).",
    )
    val: list[str] = option(
        [],
        help="Explicit validation sources (same kinds as SOURCE); put them after the sources. "
        "Without it, --val-fraction of the documents is held out.",
        metavar="SOURCE",
    )
    val_fraction: float = option(DEFAULT_VAL_FRACTION, help=VAL_FRACTION_HELP)
    seed: int = option(1337, help="Seed of the validation split: the same seed, the same split.")
    reading: ReadOptions = group(ReadOptions, "reading the sources")
    block_size: int | None = option(
        None,
        help="Training block size, only used to warn when the corpus is too small "
        "(none: GPT-2's context, 1,024).",
    )
    batch_size: int | None = option(
        None, help="Training batch size, only to warn when the corpus is smaller than one batch."
    )
    num_threads: int | None = option(
        None, help="Tokenizer threads (none: every CPU core this process may use)."
    )
    force: bool = option(False, help="Prepare again even when DATA_DIR is up to date.")

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.sources:
            problems.append(
                "give at least one SOURCE (a file, a folder, a glob or hf:NAME[:CONFIG])"
            )
        if not self.out:
            problems.append("--out DATA_DIR is required: the folder to write the prepared data to")
        tokenizer_problem = TokenizerSpec.parse(self.tokenizer).problem
        if tokenizer_problem:
            problems.append(tokenizer_problem)
        if not 0 < self.val_fraction < 1:
            problems.append(
                f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}"
            )
        for name in ("block_size", "batch_size", "num_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        problems += self.reading.problems()
        raise_if_problems(problems, "Invalid options for prepare:")
