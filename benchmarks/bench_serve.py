"""`gpt2kit serve` under 16 concurrent clients, side by side with the same 16 requests served
one after another by Hugging Face `generate`.

Same weights (a GPT-2 124M-shaped model with random weights, saved once by `transformers`, or
--model FOLDER), 16 prompts of different lengths, greedy, --new-tokens tokens each with EOS
ignored. Ours: the real server (uvicorn on 127.0.0.1 in this process, --max-batch 16) and 16
streaming clients started together; time to first token (TTFT) is when a client's first text
arrives. The reference: a loop that answers each request with `model.generate` in turn, as a
server without batching would (its TTFT: when the request's generation ends, since it does not
stream, and it waits behind the requests before it). Aggregate throughput is all new tokens
over the wall time from the first request to the last answer. The runs alternate, the best of
--repeats counts, and the ratio is printed.

    python benchmarks/bench_serve.py                  # CPU (or CUDA when available)
    python benchmarks/bench_serve.py --quick          # a smoke run: a tiny model, few tokens
    python benchmarks/bench_serve.py --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from gpt2kit.formats.hf import load_model
from gpt2kit.runtime import resolve_device, resolve_precision

sys.path.insert(0, str(Path(__file__).parent))
from bench_generate import PROMPTS, make_model


def prompt(i: int) -> str:
    """Request i's prompt: the four base prompts with different tails, so lengths differ."""
    return PROMPTS[i % len(PROMPTS)] + " and then" * (i // len(PROMPTS))


def make_quick_or_full_model(folder: Path, quick: bool) -> Path:
    """Save a randomly initialised GPT-2 124M (or, --quick, a 2-layer, 64-wide one)."""
    return make_model(folder, **(dict(n_layer=2, n_embd=64, n_head=2) if quick else {}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Server:
    """The real app under uvicorn on a free port of 127.0.0.1, in a daemon thread."""

    def __init__(self, model, tokenizer, max_batch: int) -> None:
        import uvicorn

        from gpt2kit.serve.app import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(model, tokenizer, model_name="bench", max_batch=max_batch, max_queue=64)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def run_ours(base: str, clients: int, new_tokens: int) -> tuple[float, list[float], int]:
    """16 streaming clients at once: (wall seconds, TTFTs, new tokens)."""
    import httpx

    async def one(client: httpx.AsyncClient, i: int, start: float) -> tuple[float, int]:
        body = {"prompt": prompt(i), "max_tokens": new_tokens, "temperature": 0}
        body |= {"ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        ttft, tokens = None, 0
        async with client.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
                    ttft = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        return ttft, tokens

    async def all_clients() -> tuple[float, list[float], int]:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
            start = time.perf_counter()
            done = await asyncio.gather(*(one(client, i, start) for i in range(clients)))
            wall = time.perf_counter() - start
        return wall, [t for t, _ in done], sum(n for _, n in done)

    return asyncio.run(all_clients())


def run_hf(hf, tok, clients: int, new_tokens: int) -> tuple[float, list[float], int]:
    """The same requests one after another through HF `generate`: (wall, TTFTs, tokens)."""
    ttfts, tokens = [], 0
    start = time.perf_counter()
    for i in range(clients):
        enc = tok(prompt(i), return_tensors="pt").to(hf.device)
        with torch.inference_mode():
            out = hf.generate(
                **enc,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
        if hf.device.type == "cuda":
            torch.cuda.synchronize()
        ttfts.append(time.perf_counter() - start)  # no streaming: the answer is the first token
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return time.perf_counter() - start, ttfts, tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="A model folder (default: a random GPT-2 124M).")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto).")
    p.add_argument("--clients", type=int, default=16, help="Concurrent clients (default: 16).")
    p.add_argument("--new-tokens", type=int, default=64, help="Tokens per request (default: 64).")
    p.add_argument("--repeats", type=int, default=2, help="Runs of each; the best counts.")
    p.add_argument("--quick", action="store_true", help="A smoke run: tiny model, 8 tokens.")
    p.add_argument("--json", help="Also write the results to this file.")
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = min(args.new_tokens, 8), 1

    import transformers

    device = resolve_device(args.device)
    dtype = resolve_precision("auto", device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (
            Path(args.model)
            if args.model
            else make_quick_or_full_model(Path(tmp) / "m", args.quick)
        )
        model, tokenizer, _ = load_model(folder, device=device, dtype=dtype)
        hf = transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=dtype).to(device)
        hf.eval()
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        server = Server(model, tokenizer, max_batch=args.clients)
        try:
            run_ours(server.base, args.clients, 2)  # warm-up: first allocations
            best: dict[str, tuple[float, list[float], int]] = {}
            for _ in range(args.repeats):
                for name, run in (
                    ("ours", lambda: run_ours(server.base, args.clients, args.new_tokens)),
                    ("hf", lambda: run_hf(hf, tok, args.clients, args.new_tokens)),
                ):
                    result = run()
                    if name not in best or result[0] < best[name][0]:
                        best[name] = result
        finally:
            server.close()

    rows = {}
    for name, (wall, ttfts, tokens) in best.items():
        rows[name] = {
            "tokens_per_s": tokens / wall,
            "wall_s": wall,
            "tokens": tokens,
            "ttft_p50_s": statistics.median(ttfts),
            "ttft_p95_s": percentile(ttfts, 0.95),
        }
    ratio = rows["ours"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
    shape = "tiny (quick)" if args.quick else (args.model or "GPT-2 124M shape, random weights")
    print(f"{args.clients} requests x {args.new_tokens} tokens, greedy, {shape}, on {device}")
    print(f"{'':24}{'tokens/s':>10}{'wall s':>9}{'TTFT p50':>10}{'TTFT p95':>10}")
    labels = {"ours": "gpt2kit serve (16 conc.)", "hf": "HF generate, sequential"}
    for name, r in rows.items():
        print(
            f"{labels[name]:24}{r['tokens_per_s']:>10.1f}{r['wall_s']:>9.2f}"
            f"{r['ttft_p50_s']:>10.3f}{r['ttft_p95_s']:>10.3f}"
        )
    print(f"throughput ratio (serve / sequential HF): {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "ratio": ratio, **rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
