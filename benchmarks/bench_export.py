"""CPU decode speed at batch 1 of our exported files in their runtimes, side by side with
gpt2kit itself and Hugging Face `generate`.

One GPT-2 124M-shaped model with random weights (built locally by `bench_generate.make_model`,
or --model FOLDER) is exported with `gpt2kit export`'s writers to GGUF f16 and q8_0 and to
ONNX f32, then each contender continues the same prompt greedily for --new-tokens tokens with
EOS ignored:

- llama.cpp (`llama-cpp-python`) on our f16 and q8_0 GGUF files;
- ONNX Runtime on our ONNX file, driven by a plain greedy loop over its KV-cache inputs;
- gpt2kit's `Generator`, fp32 and int8 (`--quantize int8`);
- Hugging Face `generate` (fp32), the reference.

Every runtime gets the same number of threads (--threads, default PyTorch's). The runs
alternate, the best of --repeats counts, and tokens/s counts the new tokens over the whole call
(prompt included), as in bench_generate.py. The table gives each one's ratio to HF and how many
leading greedy tokens it shares with gpt2kit fp32 (random weights: near-ties are common, so
quantized files part ways early; the tests prove the files on trained and tiny models).

On CPUs with AMX, llama.cpp's extra weight layouts (AMX, repacking) are switched off: there,
llama.cpp crashes in q8_0 matrix products with them (ggml-org/llama.cpp#20824), for a file
quantized by llama.cpp itself as much as for ours.

    python benchmarks/bench_export.py                       # 128 new tokens, best of 2
    python benchmarks/bench_export.py --new-tokens 64 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import PROMPTS, make_model, run_hf, run_ours

from gpt2kit import Generator
from gpt2kit.export.gguf import write_gguf
from gpt2kit.export.onnx import write_onnx
from gpt2kit.formats.hf import load_model


def has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def load_llama(path: Path, threads: int, n_ctx: int, plain_cpu: bool):
    """llama.cpp on `path`; `plain_cpu` switches off its extra weight layouts (see above)."""
    import llama_cpp

    default = llama_cpp.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = not plain_cpu
        return p

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
            verbose=False,
        )  # fmt: skip
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default


def run_llama(llm, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    t = time.perf_counter()
    out = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == new_tokens:
            break
    return time.perf_counter() - t, out


class OrtGreedy:
    """Greedy decoding over the ONNX file's inputs: the prompt with an empty past, then one
    token a step with the presents fed back as the past."""

    def __init__(self, folder: Path, threads: int, n_layer: int, n_head: int, head_dim: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.past_names = [
            f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")
        ]
        self.empty = np.zeros((1, n_head, 0, head_dim), np.float32)

    def __call__(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        t = time.perf_counter()
        ids = np.array([prompt], np.int64)
        past = {name: self.empty for name in self.past_names}
        length, out = 0, []
        while True:
            n = ids.shape[1]
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones((1, length + n), np.int64),
                "position_ids": np.arange(length, length + n, dtype=np.int64)[None],
                **past,
            }
            logits, *presents = self.session.run(None, feed)
            token = int(logits[0, -1].argmax())
            out.append(token)
            if len(out) == new_tokens:
                return time.perf_counter() - t, out
            past = dict(zip(self.past_names, presents, strict=True))
            length += n
            ids = np.array([[token]], np.int64)


def shared_prefix(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A model folder (default: a random GPT-2 124M).")
    parser.add_argument("--new-tokens", type=int, default=128, help="New tokens per run.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs of each; best counts.")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    import llama_cpp
    import onnxruntime
    import transformers

    torch.set_num_threads(args.threads)
    plain_cpu = has_amx()
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    folder = Path(args.model) if args.model else make_model(work / "gpt2-random")
    model, tokenizer, _ = load_model(folder)
    config = model.config
    files = {"f16": work / "model-f16.gguf", "q8_0": work / "model-q8_0.gguf"}
    for dtype, path in files.items():
        write_gguf(model, tokenizer, path, dtype)
    write_onnx(model, tokenizer, work / "onnx", "f32")
    del model

    gen = Generator.from_pretrained(folder, device="cpu", precision="fp32")
    gen8 = Generator.from_pretrained(folder, device="cpu", quantize="int8")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    llamas = {
        d: load_llama(p, args.threads, config.n_positions, plain_cpu) for d, p in files.items()
    }
    ort_run = OrtGreedy(
        work / "onnx", args.threads, config.n_layer, config.n_head, config.n_embd // config.n_head
    )
    prompt_text = PROMPTS[0]
    prompt = tokenizer.encode(prompt_text)
    n = args.new_tokens

    contenders = {
        ("llama.cpp", "GGUF f16"): lambda: run_llama(llamas["f16"], prompt, n),
        ("llama.cpp", "GGUF q8_0"): lambda: run_llama(llamas["q8_0"], prompt, n),
        ("onnxruntime", "ONNX f32"): lambda: ort_run(prompt, n),
        ("gpt2kit", "fp32"): lambda: _first(run_ours(gen, [prompt_text], n)),
        ("gpt2kit", "int8"): lambda: _first(run_ours(gen8, [prompt_text], n)),
        ("HF generate", "fp32"): lambda: _first(run_hf(hf, tok, [prompt_text], n, static=False)),
    }
    sizes = {
        ("llama.cpp", "GGUF f16"): files["f16"].stat().st_size,
        ("llama.cpp", "GGUF q8_0"): files["q8_0"].stat().st_size,
        ("onnxruntime", "ONNX f32"): sum(
            p.stat().st_size for p in (work / "onnx").glob("model.onnx*")
        ),
    }
    print(
        f"CPU, {args.threads} threads, batch 1, greedy, {len(prompt)}-token prompt, {n} new "
        f"tokens, best of {args.repeats}; {sum(p.numel() for p in gen.model.parameters()) / 1e6:.0f}M "
        f"parameters (random weights); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, llama-cpp-python {llama_cpp.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; llama.cpp extra CPU layouts "
        f"{'off (AMX CPU)' if plain_cpu else 'on'}"
    )
    load_before = os.getloadavg()[0]
    for run in contenders.values():  # warm-up
        run()
    best = dict.fromkeys(contenders, float("inf"))
    tokens = {}
    for _ in range(args.repeats):
        for key, run in contenders.items():
            seconds, tokens[key] = run()
            best[key] = min(best[key], seconds)
    rates = {key: n / s for key, s in best.items()}
    load_after = os.getloadavg()[0]
    hf_rate = rates[("HF generate", "fp32")]
    reference = tokens[("gpt2kit", "fp32")]
    print()
    print(
        "| runtime | weights | file | tokens/s | vs HF generate | greedy tokens shared with gpt2kit fp32 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key, rate in rates.items():
        size = f"{sizes[key] / 1e6:.0f} MB" if key in sizes else "-"
        shared = shared_prefix(tokens[key], reference)
        print(
            f"| {key[0]} | {key[1]} | {size} | {rate:.1f} | {rate / hf_rate:.2f}x | {shared}/{n} |"
        )
    print(
        f"\n1-minute load average {load_before:.1f} before, {load_after:.1f} after "
        f"({os.cpu_count()} CPUs; the machine may be shared)"
    )
    for llm in llamas.values():
        llm.close()
    tmp.cleanup()
    return 0


def _first(result: tuple[float, list]) -> tuple[float, list[int]]:
    seconds, rows = result
    return seconds, rows[0]


if __name__ == "__main__":
    sys.exit(main())
