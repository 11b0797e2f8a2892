"""Decode speed of `gpt2kit.Generator` side by side with Hugging Face `generate`.

Same weights (a GPT-2 124M-shaped model with random weights, saved once by `transformers`, or
--model FOLDER), same prompts, greedy, --new-tokens new tokens with EOS ignored, for each batch
size (batch > 1 uses prompts of different lengths, left-padded in both). The runs alternate
ours / HF, the best of --repeats counts, and the ratio is printed, so a noisy machine still
gives an honest comparison. Tokens/s counts new tokens of all rows over the whole `generate`
call (prompt included), as a user sees it.

On the CPU both run in fp32; ours also runs with `quantize="int8"` (int8 weights, a quarter of
the bytes to read per token) and `precision="bf16"` (half the bytes), reported as `ours-int8`
and `ours-bf16` with the number of leading greedy tokens each shares with fp32 (both change the
logits slightly), and the precision `--precision auto` picks on this machine. With CUDA both run in bf16: ours with a static cache and the
decode step in a CUDA graph, HF with its default dynamic cache and, unless --no-hf-static,
also with `cache_implementation="static"` (which `generate` compiles).

    python benchmarks/bench_generate.py                       # CPU if no GPU: batch 1 and 16
    python benchmarks/bench_generate.py --batch-sizes 1 --repeats 3
    python benchmarks/bench_generate.py --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpt2kit import Generator
from gpt2kit.tokenizer import gpt2_tokenizer

PROMPTS = [
    "The history of the city begins in the early middle ages, when a small settlement grew "
    "around the river crossing and the market that formed there.",
    "Once upon a time",
    "In this paper we study the problem of",
    "She opened the door and",
]


def make_model(folder: Path, **sizes: int) -> Path:
    """Save a randomly initialised GPT-2 124M (n_layer 12, n_embd 768), or the `sizes` given,
    with GPT-2's tokenizer."""
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes))
    model.save_pretrained(folder)
    gpt2_tokenizer().save(folder)
    return folder


def prompts_for(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(gen: Generator, prompts: list[str], new_tokens: int) -> tuple[float, list]:
    ids = [gen.tokenizer.encode(p) for p in prompts]
    sync(gen.device)
    t = time.perf_counter()
    out = gen.generate_ids(ids, new_tokens, temperature=0, stop_at_eos=False)
    sync(gen.device)
    return time.perf_counter() - t, [o for o, _ in out]


def run_hf(hf, tok, prompts: list[str], new_tokens: int, static: bool) -> tuple[float, list]:
    enc = tok(prompts, return_tensors="pt", padding=True).to(hf.device)
    kwargs = dict(cache_implementation="static") if static else {}
    sync(hf.device)
    t = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tok.eos_token_id,
            **kwargs,
        )
    sync(hf.device)
    return time.perf_counter() - t, out[:, enc.input_ids.shape[1] :].tolist()


def shared_prefix(rows: list, reference: list) -> int:
    """The fewest leading tokens any row of `rows` shares with the same row of `reference`."""
    return min(
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), len(x))
        for x, y in zip(rows, reference, strict=True)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A model folder (default: a random GPT-2 124M).")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto).")
    parser.add_argument("--new-tokens", type=int, default=256, help="New tokens per row.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs of each; best counts.")
    parser.add_argument(
        "--no-hf-static", action="store_true", help="On CUDA, skip HF's static-cache run."
    )
    parser.add_argument("--no-int8", action="store_true", help="On the CPU, skip the int8 run.")
    parser.add_argument("--no-bf16", action="store_true", help="On the CPU, skip the bf16 run.")
    parser.add_argument(
        "--n-layer", type=int, default=12, help="Layers of the random model (default 12)."
    )
    parser.add_argument(
        "--n-embd", type=int, default=768, help="Width of the random model (default 768)."
    )
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args(argv)

    import transformers

    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else make_model(
            Path(tmp) / "gpt2-random",
            n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64),
        )  # fmt: skip
        gen = Generator.from_pretrained(
            folder, device=device.type, precision="bf16" if dtype == torch.bfloat16 else "fp32"
        )
        gen8 = None
        if device.type == "cpu" and not args.no_int8:
            gen8 = Generator.from_pretrained(folder, device="cpu", quantize="int8")
        gen16 = None
        if device.type == "cpu" and not args.no_bf16:
            gen16 = Generator.from_pretrained(folder, device="cpu", precision="bf16")
            auto = Generator.from_pretrained(folder, device="cpu", precision="auto").dtype
            print(f"--precision auto decodes this model in {str(auto).removeprefix('torch.')} here")
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        hf = hf.to(device).eval()
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        tok.pad_token, tok.padding_side = tok.eos_token, "left"

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {where} ({torch.get_num_threads()} threads), {str(dtype).removeprefix('torch.')}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{gen.model.num_parameters() / 1e6:.0f}M parameters, greedy, {args.new_tokens} new "
        f"tokens, cuda graph: {gen.cuda_graph}"
    )
    contenders = {"ours": lambda p: run_ours(gen, p, args.new_tokens)}
    contenders["hf"] = lambda p: run_hf(hf, tok, p, args.new_tokens, static=False)
    if gen8 is not None:
        contenders["ours-int8"] = lambda p: run_ours(gen8, p, args.new_tokens)
    if gen16 is not None:
        contenders["ours-bf16"] = lambda p: run_ours(gen16, p, args.new_tokens)
    if device.type == "cuda" and not args.no_hf_static:
        contenders["hf-static"] = lambda p: run_hf(hf, tok, p, args.new_tokens, static=True)

    results = []
    for batch in args.batch_sizes:
        prompts = prompts_for(batch)
        for run in contenders.values():  # warm-up (and CUDA graph capture / compilation)
            run(prompts)
        best = {name: float("inf") for name in contenders}
        tokens = {}
        for _ in range(args.repeats):
            for name, run in contenders.items():
                seconds, tokens[name] = run(prompts)
                best[name] = min(best[name], seconds)
        same = tokens["ours"] == tokens["hf"]
        rates = {name: batch * args.new_tokens / s for name, s in best.items()}
        row = {"batch": batch, **{f"{k}_tok_s": round(v, 1) for k, v in rates.items()}}
        row["ratio"] = round(rates["ours"] / rates["hf"], 2)
        row["same_tokens_as_hf"] = same
        for kind in ("int8", "bf16"):
            if f"ours-{kind}" in rates:
                row[f"{kind}_ratio"] = round(rates[f"ours-{kind}"] / rates["hf"], 2)
                row[f"{kind}_tokens_shared_with_fp32"] = shared_prefix(
                    tokens[f"ours-{kind}"], tokens["ours"]
                )
        results.append(row)
        extra = "".join(
            f"  {k} {v:8.1f} tok/s" for k, v in rates.items() if k not in ("ours", "hf")
        )
        print(
            f"batch {batch:3d}: ours {rates['ours']:8.1f} tok/s  HF {rates['hf']:8.1f} tok/s"
            f"{extra}  ratio {rates['ours'] / rates['hf']:.2f}x  "
            f"({1e3 * best['ours'] / args.new_tokens:.1f} vs "
            f"{1e3 * best['hf'] / args.new_tokens:.1f} ms/step; same tokens: {same})"
        )
        for kind in ("int8", "bf16"):
            if f"{kind}_ratio" in row:
                print(
                    f"           {kind}: {row[f'{kind}_ratio']:.2f}x HF; the first "
                    f"{row[f'{kind}_tokens_shared_with_fp32']} greedy tokens of every row "
                    "equal fp32's"
                )
        if args.json:  # after every batch size: a time limit keeps what was measured
            Path(args.json).write_text(json.dumps({"device": where, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
