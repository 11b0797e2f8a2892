"""Training throughput: gpt2kit's loop against the seed recipe's Hugging Face `Trainer`.

Both fine-tune the same GPT-2-shaped model (random weights saved once by `transformers`;
--n-layer/--n-embd set its size) on the bundled tiny Shakespeare, tokenized with GPT-2's BPE,
with the seed's settings: fp32, blocks of 128 tokens, batch 4, AdamW, the same number of
steps. The seed side is the recipe as it ran before `TextDataset` was removed: fixed
128-token blocks + `DataCollatorForLanguageModeling(mlm=False)` + `Trainer.train()`. The
gpt2kit side is `gpt2kit.train` with evaluation and checkpoints pushed past the end, timed to
its last step's log line (before the final evaluation and the three model saves), so both
time the training loop. Each runs in its own subprocess; tokens/s counts the training tokens
over the loop's wall time.

    python benchmarks/bench_train.py                 # 2 layers x 128, 300 steps, on the CPU
    python benchmarks/bench_train.py --n-layer 12 --n-embd 768 --steps 50
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

SEED = textwrap.dedent("""
    import json, sys, time, torch, transformers
    from gpt2kit.tokenizer import gpt2_tokenizer
    folder, corpus, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ids = gpt2_tokenizer().encode(open(corpus).read())
    blocks = [ids[i:i + 128] for i in range(0, len(ids) - 127, 128)]  # what TextDataset did
    dataset = [{"input_ids": torch.tensor(b)} for b in blocks]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    args = transformers.TrainingArguments(
        output_dir=folder + "-seed", per_device_train_batch_size=4, max_steps=steps,
        learning_rate=5e-5, save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=10**9, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
        data_collator=transformers.DataCollatorForLanguageModeling(tok, mlm=False))
    t = time.perf_counter()
    trainer.train()
    print(json.dumps({"seconds": time.perf_counter() - t, "tokens": steps * 4 * 128}))
""")

OURS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import gpt2kit
    from gpt2kit.runs import RunDir
    folder, corpus, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    summary = gpt2kit.train(gpt2kit.TrainConfig(
        sources=[corpus], out=out, init=folder, block_size=128, batch_size=4, max_steps=steps,
        lr=5e-5, eval_every=10**9, eval_tokens=128, save_every=10**9, samples=0,
        progress=False, resume="never", overwrite=True, log_every=10**9))
    # the loop's own time: the last step's log line, before the final evaluation and saves
    logs = [json.loads(line) for line in open(RunDir(Path(out)).metrics)]
    last = [r for r in logs if r["type"] == "train"][-1]
    print(json.dumps({"seconds": last["elapsed_s"], "tokens": last["tokens_seen"]}))
""")


def run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layer", type=int, default=2, help="Layers of the model (default 2).")
    parser.add_argument("--n-embd", type=int, default=128, help="Width of the model (default 128).")
    parser.add_argument("--steps", type=int, default=300, help="Optimizer steps for each side.")
    args = parser.parse_args()

    import torch
    import transformers

    from gpt2kit.tokenizer import gpt2_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64)
        )
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        gpt2_tokenizer().save(folder)
        seed = run(SEED, str(folder), str(CORPUS), str(args.steps))
        ours = run(OURS, str(folder), str(CORPUS), str(args.steps), str(Path(tmp) / "run"))
    rate = {k: v["tokens"] / v["seconds"] for k, v in (("seed", seed), ("ours", ours))}
    print(
        f"model {args.n_layer} layers x {args.n_embd}, fp32, batch 4 x block 128, {args.steps} steps, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'} ({torch.get_num_threads()} threads)"
    )
    print(f"seed recipe (HF Trainer): {rate['seed']:9,.0f} tokens/s ({seed['seconds']:.1f} s)")
    print(f"gpt2kit train:            {rate['ours']:9,.0f} tokens/s ({ours['seconds']:.1f} s)")
    print(f"ratio: {rate['ours'] / rate['seed']:.2f}x")


if __name__ == "__main__":
    main()
