"""Training from scratch with gpt2kit's defaults against nanoGPT's character recipe, at equal
wall time, on prose neither was tuned on (issue 8, hole 4).

nanoGPT is not a package, so its CPU recipe for `shakespeare_char` runs through gpt2kit's own
loop, flag for flag: a character vocabulary (`--tokenizer char`), 4 layers x 4 heads x 128,
block 64, batch 12, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW betas
(0.9, 0.99), weight decay 0.1, clipping at 1.0, dropout 0, 2,000 iterations. On tiny
Shakespeare this baseline must reproduce nanoGPT's own figure (1.886 nats = 2.72 bits per
character in ~90 s on our 2-core CPU, ../shared/FACTS.md).

Then gpt2kit trains with nothing but its defaults and the baseline's measured wall time as its
budget: `gpt2kit train CORPUS --init scratch --max-time MINUTES`. Both hold out the last 10% of
the text (`--val-fraction 0.1`, the same characters for both), and both are scored by the same
scorer on that whole split (disjoint windows of each model's block size). Wall time is the
whole command, data preparation and tokenizer training included.

    python benchmarks/bench_scratch_recipe.py                    # the four corpora
    python benchmarks/bench_scratch_recipe.py --corpus zh        # one of them
    python benchmarks/bench_scratch_recipe.py --baseline-steps 200   # a quick smoke run

Run it on an otherwise idle machine: both sides are timed, and PyTorch slows down many times
over when another process competes for the cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpt2kit.runs import RunDir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CORPORA = {
    "shakespeare": REPO / "src" / "gpt2kit" / "assets" / "tinyshakespeare.txt",
    "en": SHARED / "corpora" / "en-frankenstein.txt",
    "es": SHARED / "corpora" / "es-don-quijote.txt",
    "zh": SHARED / "corpora" / "zh-hongloumeng.txt",
}
NANOGPT_CHAR = [
    "--init", "scratch", "--tokenizer", "char", "--n-layer", "4", "--n-head", "4",
    "--n-embd", "128", "--block-size", "64", "--batch-size", "12", "--lr", "1e-3",
    "--warmup-steps", "100", "--min-lr-ratio", "0.1", "--beta1", "0.9", "--beta2", "0.99",
    "--weight-decay", "0.1", "--grad-clip", "1.0", "--dropout", "0",
]  # fmt: skip
COMMON = ["--val-fraction", "0.1", "--samples", "0", "--no-progress"]


def run(args: list[str], out: Path) -> tuple[dict, float]:
    """Run `gpt2kit train ARGS --out OUT`; return its summary.json and the wall time."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "gpt2kit", "train", *args, *COMMON, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"gpt2kit train failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return json.loads(RunDir(out).summary.read_text()), wall


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", action="append", choices=list(CORPORA), help="(repeatable)")
    p.add_argument("--baseline-steps", type=int, default=2000, help="nanoGPT's max_iters")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpt2kit-recipe-"))
    rows = []
    for name in args.corpus or list(CORPORA):
        corpus = CORPORA[name]
        steps = str(args.baseline_steps)
        print(f"[{name}] nanoGPT char recipe, {steps} iterations (load {load()}) ...", flush=True)
        base, base_wall = run(
            [str(corpus), *NANOGPT_CHAR, "--max-steps", steps, "--eval-every", steps],
            work / f"{name}-nanogpt",
        )
        minutes = base_wall / 60
        print(
            f"[{name}] gpt2kit defaults, --max-time {minutes:.3f} (load {load()}) ...", flush=True
        )
        ours, our_wall = run(
            [str(corpus), "--init", "scratch", "--max-time", f"{minutes:.4f}"],
            work / f"{name}-gpt2kit",
        )
        model = json.loads((RunDir(work / f"{name}-gpt2kit").final / "config.json").read_text())
        rows.append(
            (
                name,
                base["last_eval"]["val_bpc"],
                base["last_eval"]["val_loss"],
                base_wall,
                ours["last_eval"]["val_bpc"],
                ours["best_val_bpc"],
                our_wall,
                ours["steps"],
                model["vocab_size"],
            )
        )
        print(f"[{name}] done (load {load()})", flush=True)
    print()
    print(
        "| corpus | nanoGPT char recipe: bpc (nats/char) | time | gpt2kit defaults: bpc "
        "(best) | time | steps, vocab | bpc ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, bb, _nats, bw, ob, obest, ow, steps, vocab in rows:
        nats_per_char = bb * math.log(2)
        print(
            f"| {name} | {bb:.3f} ({nats_per_char:.3f}) | {bw:.0f} s | {ob:.3f} ({obest:.3f}) "
            f"| {ow:.0f} s | {steps:,}, {vocab:,} | **{bb / ob:.2f}x** |"
        )
    print("\nbpc ratio = baseline bpc / gpt2kit bpc (above 1: gpt2kit's defaults win).")


if __name__ == "__main__":
    main()
