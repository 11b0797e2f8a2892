"""`gpt2kit generate`: its options (`GenerateConfig`) and the command (`run_generate`).

The sampling options are `GenerationParams`' own fields (a `group` of the command's options),
so their flags, help and defaults are declared once, in `params.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from gpt2kit.config import group, model_option, option
from gpt2kit.errors import UserError
from gpt2kit.generate.generator import QUANTIZE, Generator
from gpt2kit.generate.params import GenerationParams
from gpt2kit.generate.processors import new_seed
from gpt2kit.generate.prompts import read_prompts
from gpt2kit.runtime import (
    decode_precision_option,
    device_option,
    device_problem,
    precision_name,
    precision_problem,
)


class SamplingOptions(GenerationParams):
    """`GenerationParams` as given on the command line: the same options and defaults, not
    validated on creation but by `GenerateConfig`, with the command's other options, so that
    one message lists every problem."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class GenerateConfig:
    """Options of `gpt2kit generate`."""

    model: str = model_option()
    prompt: str = option(
        "",
        help="The text to continue ('-' reads it from stdin; empty starts from <|endoftext|>).",
        positional=True,
        metavar="PROMPT",
    )
    sampling: SamplingOptions = group(SamplingOptions, "sampling")
    seed: int | None = option(
        None,
        help="Random seed: the same seed and options give the same text (none: a fresh random "
        "seed, recorded in --output).",
    )
    num_samples: int = option(
        1, help="How many samples to draw per prompt, each with its own seed derived from --seed."
    )
    prompts_file: str | None = option(
        None,
        help="Read prompts from a file: one prompt a line, or JSONL (.jsonl/.json: a JSON "
        'string or an object with a "prompt" key per line).',
        metavar="FILE",
    )
    output: str | None = option(
        None,
        help="Write one JSON line per sample (text, prompt, every sampling parameter, seed, "
        "model path and weights hash, token count, finish reason) to this file.",
        metavar="FILE.jsonl",
    )
    stream: bool | None = option(
        None,
        help="Print tokens as they are produced; none: when stdout is a terminal and there is "
        "one sample to show (--no-stream never streams).",
    )
    batch_size: int = option(
        16,
        help="Rows (samples of any prompt) decoded together; it changes the speed and memory "
        "use, not the samples a --seed gives.",
    )
    device: str = device_option()
    precision: str = decode_precision_option()
    cuda_graph: bool = option(
        True,
        help="On CUDA, capture the one-token decode step in a CUDA graph (--no-cuda-graph: run it eagerly).",
    )
    quantize: str = option(
        "none",
        help="CPU only: 'int8' stores the linear layers' weights as int8 (dynamic quantization), "
        "reading 4x fewer bytes per token: about 3x faster decoding (2.7-3.2x measured at "
        "batch 1), tokens may differ slightly from fp32. 'none' keeps full precision.",
    )

    def __post_init__(self) -> None:
        problems = []
        try:
            self.params()
        except UserError as e:
            problems += e.problems
        if self.num_samples < 1:
            problems.append(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        prompts = None if self.prompts_file is None else Path(self.prompts_file).expanduser()
        if prompts is not None:
            if self.prompt:
                problems.append("give either PROMPT or --prompts-file, not both")
            if prompts.is_dir():
                problems.append(
                    f"--prompts-file {self.prompts_file} is a folder; give a file with one "
                    "prompt a line (or a .jsonl file)"
                )
            elif not prompts.exists():
                problems.append(f"--prompts-file {self.prompts_file} does not exist")
        output = None if self.output is None else Path(self.output).expanduser()
        if output is not None:
            if not output.parent.is_dir():
                problems.append(
                    f"--output {self.output}: its folder does not exist; create it first"
                )
            elif prompts is not None and _same_file(prompts, output):
                problems.append(
                    f"--output {self.output} is the --prompts-file: writing the samples would "
                    "overwrite the prompts; write them to another file"
                )
        if self.stream and (self.num_samples > 1 or self.prompts_file is not None):
            problems.append(
                "--stream shows one sample as it is produced; it cannot be combined with "
                "--num-samples > 1 or --prompts-file (drop --stream, or use --output)"
            )
        if self.quantize not in QUANTIZE:
            problems.append(
                f"--quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )
        problems += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        if problems:
            raise UserError("Invalid options for generate:", problems)

    def params(self) -> GenerationParams:
        """The decoding controls of this config (`--stop` escapes \\n, \\t, \\\\ resolved)."""
        values = {f.name: getattr(self.sampling, f.name) for f in dataclasses.fields(self.sampling)}
        values["stop"] = tuple(_unescape(s) for s in self.sampling.stop)
        return GenerationParams(**values)


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one existing regular file."""
    try:
        return a.is_file() and b.is_file() and os.path.samefile(a, b)
    except OSError:
        return False


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def provenance(generator: Generator, config: GenerateConfig, params: GenerationParams) -> dict:
    """The fields shared by every JSONL record of a run: parameters, model identity, device."""
    from gpt2kit import __version__

    return {
        "parameters": {
            **asdict(params),
            "stop": list(params.stop),
            "num_samples": config.num_samples,
            "batch_size": config.batch_size,
        },
        "model": {
            "spec": config.model,
            "path": str(generator.folder.resolve()) if generator.folder else None,
            "weights_sha256": generator.weights_sha256,
        },
        "device": str(generator.device),
        "precision": precision_name(generator.dtype),
        "quantize": generator.quantize,
        "gpt2kit_version": __version__,
    }


def run_generate(config: GenerateConfig) -> None:
    """Continue a prompt (or every prompt of --prompts-file) and print or record the samples.

    Greedy with --temperature 0, else sampled with the given controls. Text streams to the
    terminal as it is produced; with --output each sample becomes one JSON line recording the
    prompt, the text, every sampling parameter, the seed, the model's path and weights hash,
    the number of tokens and the finish reason (stop, eos or length).
    """
    prompts = read_prompts(config.prompt, config.prompts_file)
    params = config.params()
    n_rows = len(prompts) * config.num_samples
    stream = config.stream if config.stream is not None else sys.stdout.isatty() and n_rows == 1
    generator = Generator.from_pretrained(
        config.model,
        config.device,
        config.precision,
        cuda_graph=config.cuda_graph,
        quantize=config.quantize,
    )
    seed = config.seed if config.seed is not None else new_seed()
    record_base = provenance(generator, config, params) if config.output else None
    show = config.output is None or stream

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    written = 0
    with contextlib.ExitStack() as stack:
        out = None
        if config.output is not None:
            path = Path(config.output).expanduser()
            out = stack.enter_context(open(path, "w", encoding="utf-8"))
        if stream:
            write(prompts[0])
        for c in generator.iter_generate(
            prompts,
            params,
            seed=seed,
            num_samples=config.num_samples,
            batch_size=config.batch_size,
            on_text=(lambda _, piece: write(piece)) if stream else None,
        ):
            written += 1
            if stream:
                write("\n")
            elif show:
                if n_rows > 1:
                    sys.stdout.write(
                        f"--- prompt {c.prompt_index + 1}, sample {c.sample_index + 1} "
                        f"({c.finish_reason}) ---\n"
                    )
                sys.stdout.write(c.prompt + c.text + "\n")
            if out is not None:
                record = {
                    "prompt": c.prompt,
                    "text": c.text,
                    "prompt_index": c.prompt_index,
                    "sample_index": c.sample_index,
                    "finish_reason": c.finish_reason,
                    "num_tokens": len(c.token_ids),
                    "prompt_tokens": c.prompt_tokens,
                    "seed": c.seed,
                    **record_base,
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
        sys.stdout.flush()
    if config.output is not None:
        sys.stderr.write(f"Wrote {written} samples to {config.output}\n")
