"""Training throughput: gpt2kit's loop side by side with Hugging Face `Trainer` and a lean loop.

Every side fine-tunes the same GPT-2-shaped model (random weights saved once by `transformers`;
--n-layer/--n-embd set its size) on the bundled tiny Shakespeare tokenized with GPT-2's BPE,
with the same block, batch and number of optimizer steps. Each side runs in its own subprocess
and reports tokens/s over the steps after --warmup (compilation and first allocations are not
counted); the ratio of gpt2kit to each reference is printed.

Sides (--sides, default: all that apply to the device):
- `seed`:   the seed recipe as it ran before `TextDataset` was removed: fixed blocks +
            `DataCollatorForLanguageModeling(mlm=False)` + `Trainer.train()`, fp32.
- `hf`:     HF `Trainer` tuned: bf16 (on CUDA), `torch_compile`, fused AdamW
            (`adamw_torch_fused`), the same block and batch as the others.
- `lean`:   a nanoGPT-style loop written here: a minimal GPT-2 module (fused QKV, SDPA, tied
            head), fused AdamW, autocast, `torch.compile`, one `.item()` per step. It
            loads the same weights, so it is the "how fast can a bare loop go" reference.
- `ours`:   `gpt2kit.train` with --precision and --compile as given.

    python benchmarks/bench_train.py                                   # CPU: 2 x 128, fp32
    python benchmarks/bench_train.py --n-layer 12 --n-embd 768 --steps 30 --sides seed ours
    python benchmarks/bench_train.py --device cuda --n-layer 12 --n-embd 768 \\
        --block-size 1024 --batch-size 16 --steps 60 --warmup 15      # the GPU comparison

On CUDA the default precision is bf16 and compile is on for `hf`, `lean` and `ours`; on the CPU
fp32 and compile off (pass --precision / --compile to change both sides alike). MFU is printed
on CUDA against --peak-tflops (989 for an H100/H200 in dense bf16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "src" / "gpt2kit" / "assets" / "tinyshakespeare.txt"

# Shared by the three scripts below: the corpus as GPT-2 ids, and a timer of steps that counts
# only those after the warm-up. `mark()` is called at the end of every optimizer step.
COMMON = textwrap.dedent("""
    import json, sys, time, torch
    from gpt2kit.tokenizer import gpt2_tokenizer
    args = json.loads(sys.argv[1])
    B, T, steps, warmup = args["batch"], args["block"], args["steps"], args["warmup"]
    cuda = args["device"] == "cuda"
    bf16 = args["precision"] == "bf16"
    ids = gpt2_tokenizer().encode(open(args["corpus"]).read())
    blocks = [ids[i:i + T] for i in range(0, len(ids) - T + 1, T)]
    marks = []
    def mark():
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
    def report():
        timed = marks[warmup:]
        seconds = timed[-1] - timed[0]
        n = len(timed) - 1
        print(json.dumps({"seconds": seconds, "tokens": n * B * T, "steps": n}))
""")

SEED = COMMON + textwrap.dedent("""
    import transformers
    dataset = [{"input_ids": torch.tensor(b)} for b in blocks]
    tok = transformers.AutoTokenizer.from_pretrained(args["folder"])
    tok.pad_token = tok.eos_token
    model = transformers.GPT2LMHeadModel.from_pretrained(args["folder"])
    tuned = args["side"] == "hf"
    class Marks(transformers.TrainerCallback):
        def on_step_end(self, *a, **k):
            mark()
    targs = transformers.TrainingArguments(
        output_dir=args["out"], per_device_train_batch_size=B, max_steps=steps + warmup,
        learning_rate=5e-5, save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=10**9, use_cpu=not cuda, disable_tqdm=True,
        bf16=tuned and bf16, torch_compile=tuned and args["compile"],
        optim="adamw_torch_fused" if tuned else "adamw_torch",
        dataloader_pin_memory=cuda)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=dataset,
        data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False),
        callbacks=[Marks()])
    marks.append(time.perf_counter())
    trainer.train()
    report()
""")

LEAN = COMMON + textwrap.dedent("""
    import math, transformers
    import torch.nn as nn, torch.nn.functional as F
    from safetensors.torch import load_file
    cfg = json.load(open(args["folder"] + "/config.json"))
    L, C, H, V, P = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"], cfg["n_positions"]
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, H, C // H).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, C))
            return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
    class Lean(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
            self.h, self.ln_f = nn.ModuleList(Layer() for _ in range(L)), nn.LayerNorm(C)
        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
            for layer in self.h:
                x = layer(x)
            logits = self.ln_f(x) @ self.wte.weight.t()
            return F.cross_entropy(logits.float().view(-1, V), targets.reshape(-1))
    model = Lean()
    hf = load_file(args["folder"] + "/model.safetensors")
    rename = {"attn.c_attn": "qkv", "attn.c_proj": "proj", "mlp.c_fc": "fc", "mlp.c_proj": "out"}
    state = {}
    for name, w in hf.items():
        name = name.removeprefix("transformer.")
        for a, b in rename.items():
            if a in name:
                name, w = name.replace(a, b), (w.t() if name.endswith("weight") else w)
        state[name] = w
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    device = torch.device(args["device"])
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    step_model = torch.compile(model) if args["compile"] else model
    data = torch.tensor(blocks)
    g = torch.Generator().manual_seed(0)
    marks.append(time.perf_counter())
    for step in range(steps + warmup):
        rows = data[torch.randint(len(data), (B,), generator=g)]
        x, y = rows.to(device, non_blocking=True), rows.roll(-1, 1).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        mark()
    report()
""")

OURS = COMMON + textwrap.dedent("""
    import gpt2kit
    from gpt2kit.runs import RunDir
    summary = gpt2kit.train(gpt2kit.TrainConfig(
        sources=[args["corpus"]], out=args["out"], init=args["folder"], block_size=T,
        batch_size=B, max_steps=steps + warmup, lr=5e-5, eval_every=10**9, eval_tokens=T,
        save_every=10**9, samples=0, progress=False, resume="never", overwrite=True,
        log_every=1, precision=args["precision"], device=args["device"],
        compile="on" if args["compile"] else "off"))
    # the loop's own clock, per logged step: train seconds at the end of each step
    logs = [json.loads(line) for line in open(RunDir(__import__("pathlib").Path(args["out"])).metrics)]
    marks[:] = [0.0] + [r["elapsed_s"] for r in logs if r["type"] == "train"]
    report()
""")

SCRIPTS = {"seed": SEED, "hf": SEED, "lean": LEAN, "ours": OURS}
LABELS = {
    "seed": "seed recipe (HF Trainer, fp32)",
    "hf": "HF Trainer tuned",
    "lean": "lean nanoGPT-style loop",
    "ours": "gpt2kit train",
}


def run(side: str, args: dict) -> dict | None:
    """Run one side in a fresh subprocess and return its {"seconds", "tokens", "steps"}, or
    None (its error printed) when it fails."""
    payload = json.dumps({**args, "side": side})
    result = subprocess.run(
        [sys.executable, "-c", SCRIPTS[side], payload], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"{side} failed:\n{result.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def flops_per_token(n_layer: int, n_embd: int, block: int, params: int) -> float:
    """Training FLOPs per token: 6N for the weights plus 12 L H Q T for attention (H*Q = C)."""
    return 6 * params + 12 * n_layer * n_embd * block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layer", type=int, default=2, help="Layers of the model (default 2).")
    parser.add_argument("--n-embd", type=int, default=128, help="Width of the model (default 128).")
    parser.add_argument("--block-size", type=int, default=128, help="Tokens per row (default 128).")
    parser.add_argument("--batch-size", type=int, default=4, help="Rows per step (default 4).")
    parser.add_argument("--steps", type=int, default=300, help="Timed optimizer steps per side.")
    parser.add_argument(
        "--warmup", type=int, default=3, help="Steps run before timing starts (default 3)."
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda.")
    parser.add_argument(
        "--precision", default="auto", help="fp32 or bf16 (auto: bf16 on CUDA, fp32 on the CPU)."
    )
    parser.add_argument(
        "--compile", default="auto", help="on, off (auto: on for CUDA, off on the CPU)."
    )
    parser.add_argument(
        "--sides", nargs="+", choices=list(SCRIPTS), help="Which sides to run (default: all)."
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="The GPU's dense bf16 peak, for MFU."
    )
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    a = parser.parse_args(argv)

    import torch
    import transformers

    from gpt2kit.tokenizer import gpt2_tokenizer

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    precision = a.precision if a.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    compile_ = a.compile == "on" or (a.compile == "auto" and device == "cuda")
    # gpt2kit first, and the JSON rewritten after every side: under a time limit (the GPU
    # check's), or when a reference fails, what was measured is kept
    sides = sorted(a.sides or list(SCRIPTS), key=lambda side: side != "ours")
    where = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    results, rows, failed = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            n_layer=a.n_layer, n_embd=a.n_embd, n_head=max(1, a.n_embd // 64),
            n_positions=max(1024, a.block_size),
        )  # fmt: skip
        model = transformers.GPT2LMHeadModel(config)
        params = sum(p.numel() for p in model.parameters())
        fpt = flops_per_token(a.n_layer, a.n_embd, a.block_size, params)
        model.save_pretrained(folder)
        gpt2_tokenizer().save(folder)
        for side in sides:
            args = dict(
                folder=str(folder), corpus=str(CORPUS), out=str(Path(tmp) / side),
                batch=a.batch_size, block=a.block_size, steps=a.steps, warmup=a.warmup,
                device=device, precision="fp32" if side == "seed" else precision,
                compile=compile_ and side != "seed",
            )  # fmt: skip
            result = run(side, args)
            if result is None:
                failed.append(side)
                continue
            results[side] = result
            rate = result["tokens"] / result["seconds"]
            mfu = rate * fpt / (a.peak_tflops * 1e12) if device == "cuda" else None
            rows.append({"side": side, "tokens_per_s": round(rate, 1), "mfu": mfu})
            print(f"{side}: {rate:,.0f} tokens/s", flush=True)
            if a.json:
                Path(a.json).write_text(json.dumps({"device": where, "results": rows}, indent=2))
    print(
        f"{where}, torch {torch.__version__}, transformers {transformers.__version__}; model "
        f"{a.n_layer} x {a.n_embd} ({params / 1e6:.0f}M), batch {a.batch_size} x block "
        f"{a.block_size}, {a.steps} timed steps after {a.warmup}; {precision}, compile "
        f"{'on' if compile_ else 'off'} (the seed recipe: fp32, no compile)"
    )
    for row in rows:
        side, rate, mfu = row["side"], row["tokens_per_s"], row["mfu"]
        line = f"{LABELS[side]:32s} {rate:12,.0f} tokens/s ({results[side]['seconds']:.2f} s)"
        print(line + (f"  MFU {100 * mfu:.1f}%" if mfu is not None else ""))
    if "ours" in results:
        ours = results["ours"]["tokens"] / results["ours"]["seconds"]
        for side, r in results.items():
            if side != "ours":
                print(f"ratio gpt2kit / {side}: {ours / (r['tokens'] / r['seconds']):.2f}x")
    if failed:
        print(f"failed: {', '.join(failed)} (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
