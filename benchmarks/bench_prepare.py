"""Data preparation side by side: the seed recipe's data path vs `gpt2kit prepare`.

Both tokenize the same generated corpus (English prose: lines of the bundled Shakespeare drawn
at random into paragraphs, so it has no long exact repeats) with GPT-2's BPE:

(a) seed: what Hugging Face's `run_clm.py` does - `datasets.load_dataset("text")`, then
    `map(tokenize, batched=True)`, then `map(group_texts, batched=True)` into blocks of 1,024,
    with `GPT2TokenizerFast` built from the same bundled vocab.json/merges.txt;
(b) gpt2kit: `gpt2kit.data.prepare` on the same file (train/val split, .bin files, report).

Each runs alone in a fresh subprocess, timed from after its imports to the end of its work;
peak memory is that subprocess's peak resident set size (`resource.getrusage(RUSAGE_SELF)`
`.ru_maxrss`, read by the subprocess at its end; RSS right after the imports is shown too).
The machine load (1-minute load average) is printed before and after each run, since other
work on the machine slows both. Run from the repository root:

    python benchmarks/bench_prepare.py --size-mb 200

`--shape` measures gpt2kit alone on many small documents instead of one file of prose, to show
whether memory grows with the number of documents: `jsonl` writes --docs records of one to
three lines of the same prose into one .jsonl file, `files` writes --docs small .txt files
(the same paragraphs) into one folder:

    python benchmarks/bench_prepare.py --shape jsonl --docs 3000000
    python benchmarks/bench_prepare.py --shape files --docs 50000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "src" / "gpt2kit" / "assets" / "tinyshakespeare.txt"
BLOCK_SIZE = 1024


def make_corpus(path: Path, size_mb: float, seed: int = 0) -> int:
    """Write about `size_mb` MB of prose to `path`, streaming; returns its size in bytes."""
    lines = [ln for ln in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rng = random.Random(seed)
    target, written = int(size_mb * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            para = "\n".join(rng.choice(lines) for _ in range(rng.randint(4, 40))) + "\n\n"
            f.write(para)
            written += len(para.encode("utf-8"))
    return path.stat().st_size


def _lines() -> list[str]:
    return [ln for ln in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if ln.strip()]


def make_records(path: Path, docs: int, seed: int = 0) -> int:
    """Write `docs` JSON Lines records of 1-3 lines of prose each; returns the file's bytes."""
    lines, rng = _lines(), random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(docs):
            text = "\n".join(rng.choice(lines) for _ in range(rng.randint(1, 3)))
            f.write(json.dumps({"text": text}) + "\n")
    return path.stat().st_size


def make_files(folder: Path, docs: int, seed: int = 0) -> int:
    """Write `docs` small .txt files (4-40 lines of prose each) in `folder`; returns bytes."""
    lines, rng = _lines(), random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    size = 0
    for i in range(docs):
        text = "\n".join(rng.choice(lines) for _ in range(rng.randint(4, 40))) + "\n"
        (folder / f"{i:07d}.txt").write_text(text, encoding="utf-8")
        size += len(text.encode("utf-8"))
    return size


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_seed(corpus: Path, work: Path) -> dict:
    """(a) The seed recipe's data path, as in HF run_clm.py."""
    from itertools import chain

    import datasets
    import transformers

    datasets.disable_progress_bars()
    assets = REPO / "src" / "gpt2kit" / "assets" / "gpt2-tokenizer"
    tokenizer = transformers.GPT2TokenizerFast(
        vocab=str(assets / "vocab.json"), merges=str(assets / "merges.txt")
    )
    transformers.logging.set_verbosity_error()  # "sequence longer than 1024" warnings
    after_imports = _rss_mb()
    start = time.perf_counter()
    raw = datasets.load_dataset(
        "text",
        data_files={"train": str(corpus)},
        keep_linebreaks=True,
        cache_dir=str(work / "hf-cache"),
    )

    def tokenize_function(examples):
        return tokenizer(examples["text"])

    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"]) // BLOCK_SIZE * BLOCK_SIZE
        result = {
            k: [t[i : i + BLOCK_SIZE] for i in range(0, total, BLOCK_SIZE)]
            for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    lm = tokenized.map(group_texts, batched=True)
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for ids in tokenized["train"]["input_ids"])
    blocks = len(lm["train"])
    return {
        "seconds": seconds,
        "tokens": tokens,
        "blocks": blocks,
        "rss_after_imports_mb": after_imports,
    }


def child_gpt2kit(corpus: Path, work: Path) -> dict:
    """(b) gpt2kit prepare, then the same call again (the cache hit)."""
    from gpt2kit.data import PrepareConfig, prepare
    from gpt2kit.data.encode import fast_encoder
    from gpt2kit.tokenizer import gpt2_tokenizer

    fast_encoder(gpt2_tokenizer())  # build the tiktoken encoding (0.3 s) outside the timing
    after_imports = _rss_mb()
    config = PrepareConfig(sources=[str(corpus)], out=str(work / "data"))
    start = time.perf_counter()
    data = prepare(config, progress=False)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = prepare(config, progress=False)
    cached = time.perf_counter() - start
    assert again.reused
    return {
        "seconds": seconds,
        "tokens": int(data.meta["train_tokens"] + data.meta["val_tokens"]),
        "documents": int(data.meta["train_documents"] + data.meta["val_documents"]),
        "encoder": data.report["encoder"],
        "cache_hit_seconds": cached,
        "rss_after_imports_mb": after_imports,
    }


def run_child(which: str, corpus: Path, work: Path) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", which, "--corpus", str(corpus), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{which} failed:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_before"], result["load_after"] = load, os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=200, help="corpus size (default 200)")
    parser.add_argument("--only", choices=["seed", "gpt2kit"], help="run one side only")
    parser.add_argument(
        "--shape",
        choices=["text", "jsonl", "files"],
        default="text",
        help="text: one file of prose (both sides); jsonl: --docs short records in one .jsonl; "
        "files: --docs small .txt files in a folder (gpt2kit only for these two)",
    )
    parser.add_argument(
        "--docs", type=int, default=2_000_000, help="documents for --shape jsonl/files"
    )
    parser.add_argument("--workdir", help="where to write the corpus and outputs (default: tmp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = child_seed if args.child == "seed" else child_gpt2kit
        result = fn(Path(args.corpus), Path(args.work))
        result["peak_rss_mb"] = _peak_mb()
        print(json.dumps(result))
        return

    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prepare-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.shape == "text":
            corpus = root / "corpus.txt"
            size = make_corpus(corpus, args.size_mb)
            what = "of prose in one file"
        elif args.shape == "jsonl":
            corpus = root / "corpus.jsonl"
            size = make_records(corpus, args.docs)
            what = f"in {args.docs:,} .jsonl records"
        else:
            corpus = root / "corpus"
            size = make_files(corpus, args.docs)
            what = f"in {args.docs:,} .txt files"
        print(f"corpus: {size / 1e6:.1f} MB {what}, {os.cpu_count()} CPUs")
        results = {}
        for which in ("seed", "gpt2kit"):
            if (args.only and args.only != which) or (args.shape != "text" and which == "seed"):
                continue
            work = root / which
            work.mkdir(exist_ok=True)
            r = results[which] = run_child(which, corpus, work)
            mbs, tps = size / 1e6 / r["seconds"], r["tokens"] / r["seconds"]
            extra = (
                f", {r['documents']:,} documents, cache hit {r['cache_hit_seconds']:.2f} s, "
                f"encoder {r['encoder']}"
                if which == "gpt2kit"
                else f", {r['blocks']:,} blocks"
            )
            print(
                f"{which:8s} {r['seconds']:7.1f} s  {mbs:6.2f} MB/s  {tps / 1e6:5.2f} M tokens/s  "
                f"peak RSS {r['peak_rss_mb']:6.0f} MB (after imports {r['rss_after_imports_mb']:.0f})"
                f"  {r['tokens']:,} tokens{extra}  [load {r['load_before']:.1f} -> "
                f"{r['load_after']:.1f}]"
            )
        if len(results) == 2:
            s, g = results["seed"], results["gpt2kit"]
            print(
                f"gpt2kit / seed: throughput x{s['seconds'] / g['seconds']:.1f}, "
                f"peak memory x{g['peak_rss_mb'] / s['peak_rss_mb']:.2f}"
            )
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
