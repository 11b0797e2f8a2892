"""LoRA against full fine-tuning, side by side, through the real `gpt2kit train`.

1. Cost (`--shapes`, default 124M and 355M): a GPT-2-shaped model with random weights (saved
   once by `transformers`; the values do not change the cost) is fine-tuned for --steps steps
   at the same batch and block, once with every weight training and once with `--lora-r 8` on
   c_attn, c_proj and c_fc. Each run is its own process; its peak RSS (`ru_maxrss` of the
   child), its tokens/s (median of the steps after the first two, from `metrics.jsonl`) and
   the size of its last checkpoint are printed with the LoRA / full ratios.
2. Quality: no pretrained GPT-2 can be downloaded here, so a base is pretrained first (the
   `small` preset with GPT-2's tokenizer on tiny Shakespeare, --pretrain-minutes), then
   fine-tuned on another book (Frankenstein, the same prepared data and validation split for
   both) for the same --finetune-minutes each, every method at its default learning rate
   (5e-5 full, 1e-3 LoRA) and at the other learning rates of --lrs-full / --lrs-lora. Printed:
   the validation loss of the base and the best each reaches, with the steps each fitted into
   the budget.

    python benchmarks/bench_lora.py                          # both parts, ~30 min on 2 cores
    python benchmarks/bench_lora.py --parts cost --shapes 124M --steps 4
    python benchmarks/bench_lora.py --device cuda --shapes 774M --parts cost   # on a GPU
    python benchmarks/bench_lora.py --quick                  # a smoke run of the script

On CUDA, peak GPU memory (`torch.cuda.max_memory_allocated`, from the run's own report) would
be the figure that matters; this script records peak RSS, which on a GPU measures the host side
only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_generate import make_model  # the same random GPT-2 as the other benchmarks

from gpt2kit.training.config import FINETUNE_LR, LORA_LR

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "src" / "gpt2kit" / "assets" / "tinyshakespeare.txt"
BOOK = ROOT.parent / "shared" / "data" / "corpora" / "en-frankenstein.txt"
SHAPES = {
    "124M": dict(n_layer=12, n_head=12, n_embd=768),
    "355M": dict(n_layer=24, n_head=16, n_embd=1024),
    "774M": dict(n_layer=36, n_head=20, n_embd=1280),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),  # --quick: a smoke run of the script
}
LORA = ["--lora-r", "8", "--lora-targets", "c_attn,c_proj,c_fc"]


def gpt2kit(*args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run `gpt2kit ARGS` in a child of a fresh wrapper process: (result, seconds, peak RSS in
    bytes of that one child)."""
    wrapper = (
        "import resource, subprocess, sys, json; "
        "r = subprocess.run([sys.executable, '-m', 'gpt2kit', *sys.argv[1:]], capture_output=True, text=True); "
        "print(json.dumps({'rc': r.returncode, 'out': r.stdout, 'err': r.stderr, "
        "'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))"
    )
    t = time.perf_counter()
    w = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    info = json.loads(w.stdout)
    r = subprocess.CompletedProcess(args, info["rc"], info["out"], info["err"])
    if r.returncode != 0:
        sys.exit(f"gpt2kit {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r, seconds, info["rss"]


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["type"] == kind]


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def cost(args: argparse.Namespace, tmp: Path, data: Path) -> list[dict]:
    rows = []
    for shape in args.shapes:
        base = make_model(tmp / f"base-{shape}", **SHAPES[shape])
        for method, extra in (("full", []), ("lora", LORA)):
            run = tmp / f"cost-{shape}-{method}"
            _, seconds, rss = gpt2kit(
                "train", str(data), "--init", str(base), "--out", str(run), "--resume", "never",
                "--overwrite", "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
                "--block-size", str(args.block_size), "--log-every", "1", "--eval-every", "100000",
                "--eval-tokens", "256", "--samples", "0", "--save-every", "100000",
                "--device", args.device, "--no-progress", *extra,
            )  # fmt: skip
            tps = [m["tokens_per_s"] for m in records(run, "train") if m["step"] > 2]
            ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
            row = dict(
                shape=shape,
                method=method,
                tokens_per_s=statistics.median(tps),
                peak_rss_gb=rss / 1e9,
                checkpoint_mb=folder_mb(ckpt),
                seconds=seconds,
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def quality(args: argparse.Namespace, tmp: Path) -> list[dict]:
    pre = tmp / "pretrain"
    gpt2kit(
        "train", str(SHAKESPEARE), "--init", "scratch", "--preset", "small", "--tokenizer",
        "gpt2", "--block-size", "128", "--max-time", str(args.pretrain_minutes), "--out",
        str(pre), "--samples", "0", "--eval-every", "100000", "--no-progress", "--device",
        args.device,
    )  # fmt: skip
    base = pre / "final"
    data = tmp / "book"
    gpt2kit("prepare", str(BOOK), "--out", str(data), "--tokenizer", str(base))
    rows = []
    runs = [("full", [], lr) for lr in [None, *args.lrs_full]]
    runs += [("lora", LORA, lr) for lr in [None, *args.lrs_lora]]
    for method, extra, lr in runs:
        run = tmp / f"quality-{method}-{lr}"
        lr_flag = ["--lr", str(lr)] if lr else []
        gpt2kit(
            "train", str(data), "--init", str(base), "--out", str(run), "--resume", "never",
            "--overwrite", "--block-size", "128", "--batch-size", "8", "--max-time",
            str(args.finetune_minutes), "--eval-every", str(args.eval_every), "--samples", "0",
            "--device", args.device, "--no-progress", *lr_flag, *extra,
        )  # fmt: skip
        evals = records(run, "eval")
        summary = json.loads((run / "summary.json").read_text())
        row = dict(
            method=method,
            base_val_loss=evals[0]["val_loss"],
            best_val_loss=summary["best_val_loss"],
            steps=summary["steps"],
            lr=lr or f"{FINETUNE_LR if method == 'full' else LORA_LR:g} (default)",
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["cost", "quality"], choices=["cost", "quality"])
    ap.add_argument("--shapes", nargs="+", default=["124M", "355M"], choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=6, help="Optimizer steps of each cost run.")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pretrain-minutes", type=float, default=5.0)
    ap.add_argument("--finetune-minutes", type=float, default=3.0)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--lrs-full", type=float, nargs="*", default=[2e-4])
    ap.add_argument("--lrs-lora", type=float, nargs="*", default=[2e-4])
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    ap.add_argument("--quick", action="store_true", help="A smoke run: tiny model, seconds.")
    args = ap.parse_args()
    if args.quick:
        args.shapes, args.steps = ["tiny"], 4
        args.pretrain_minutes = args.finetune_minutes = 0.25
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "cost" in args.parts:
            data = tmp / "shakespeare"
            gpt2kit("prepare", str(SHAKESPEARE), "--out", str(data), "--tokenizer", "gpt2")
            results["cost"] = cost(args, tmp, data)
        if "quality" in args.parts:
            results["quality"] = quality(args, tmp)

    if "cost" in results:
        print("\n| shape | method | tokens/s | peak RSS | checkpoint |")
        print("| --- | --- | --- | --- | --- |")
        by = {(r["shape"], r["method"]): r for r in results["cost"]}
        for shape in args.shapes:
            full, lora = by[(shape, "full")], by[(shape, "lora")]
            for r in (full, lora):
                print(
                    f"| {shape} | {r['method']} | {r['tokens_per_s']:,.0f} | "
                    f"{r['peak_rss_gb']:.2f} GB | {r['checkpoint_mb']:,.1f} MB |"
                )
            print(
                f"| {shape} | LoRA / full | {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x | "
                f"{lora['peak_rss_gb'] / full['peak_rss_gb']:.2f}x | "
                f"{lora['checkpoint_mb'] / full['checkpoint_mb']:.4f}x |"
            )
    if "quality" in results:
        print("\n| method | lr | steps in budget | base val loss | best val loss |")
        print("| --- | --- | --- | --- | --- |")
        for r in results["quality"]:
            print(
                f"| {r['method']} | {r['lr']} | {r['steps']} | {r['base_val_loss']:.4f} | "
                f"{r['best_val_loss']:.4f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
