"""The prompts of `gpt2kit generate`: PROMPT, stdin (`-`) or the lines of --prompts-file.

Stdin and prompt files are read once, block by block (so pipes work like files), and at most
`MAX_PROMPT_BYTES` and `MAX_PROMPTS` prompts are read, so that endless input (a pipe from
`yes`, /dev/zero) stops with a message instead of filling memory.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gpt2kit.errors import UserError

MAX_PROMPT_BYTES = 64 << 20
MAX_PROMPTS = 1_000_000
_SPLIT_PROMPTS = (
    f"split it into files of at most {MAX_PROMPT_BYTES >> 20} MB and {MAX_PROMPTS:,} prompts"
)


def _text_blocks(stream: BinaryIO, what: str) -> Iterator[str]:
    """The UTF-8 text of `stream`, block by block, read once (so pipes work like files).

    Raises `UserError` for binary data (a NUL byte), bytes that are not UTF-8, and input
    longer than `MAX_PROMPT_BYTES`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while True:
        block = stream.read(1 << 20)
        if b"\x00" in block:
            raise UserError(
                f"{what} is not text (a NUL byte at byte offset {offset + block.index(0)}); "
                "give a text file with one prompt a line."
            )
        if offset + len(block) > MAX_PROMPT_BYTES:
            raise UserError(
                f"{what} holds more than {MAX_PROMPT_BYTES >> 20} MB of prompts; {_SPLIT_PROMPTS}."
            )
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise UserError(
                f"{what} is not UTF-8 text: byte offset {offset - pending + e.start} cannot be "
                "decoded; save the prompts as UTF-8."
            ) from None
        offset += len(block)
        if text:
            yield text
        if not block:
            return


def _prompt_lines(stream: BinaryIO, what: str) -> Iterator[tuple[int, str]]:
    """`(line number, line)` of every non-blank line of `stream` ('\\r\\n' ends a line too)."""
    rest, number = "", 0
    for block in _text_blocks(stream, what):
        lines = (rest + block).split("\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            if line.strip():
                yield number, line.removesuffix("\r")
    if rest.strip():
        yield number + 1, rest.removesuffix("\r")


def read_prompts(prompt: str, prompts_file: str | None) -> list[str]:
    """The prompts of a `generate` command: `prompt`, stdin (`prompt` is `-`) or the lines of
    `prompts_file` (plain text, or JSONL for .jsonl/.json).

    Stdin and `prompts_file` are read once and may be pipes; at most `MAX_PROMPT_BYTES` and
    `MAX_PROMPTS` prompts are read. Every bad line is reported at once (the first ten).
    """
    if prompts_file is None:
        if prompt == "-":
            text = "".join(_text_blocks(sys.stdin.buffer, "stdin"))
            return [text[:-1] if text.endswith("\n") else text]
        return [prompt]
    path = Path(prompts_file).expanduser()
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    prompts: list[str] = []
    problems: list[str] = []
    try:
        with open(path, "rb") as f:
            for number, line in _prompt_lines(f, str(path)):
                if len(prompts) == MAX_PROMPTS:
                    raise UserError(
                        f"{path} holds more than {MAX_PROMPTS:,} prompts; {_SPLIT_PROMPTS}."
                    )
                if not jsonl:
                    prompts.append(line)
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(f"line {number}: not valid JSON ({e.msg})")
                    continue
                if isinstance(item, dict) and isinstance(item.get("prompt"), str):
                    prompts.append(item["prompt"])
                elif isinstance(item, str):
                    prompts.append(item)
                else:
                    problems.append(
                        f'line {number}: expected a JSON string or an object with a "prompt"'
                    )
    except OSError as e:
        raise UserError(f"Could not read --prompts-file {path}: {e.strerror or e}.") from None
    if problems:
        raise UserError(f"Could not read the prompts in {path}:", problems[:10])
    if not prompts:
        raise UserError(f"{path} holds no prompts (blank lines are skipped).")
    return prompts
