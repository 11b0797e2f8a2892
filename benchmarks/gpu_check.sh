#!/usr/bin/env bash
# The GPU check: gpt2kit's GPU tests, then training and decoding side by side with the
# references (benchmarks/bench_train.py, benchmarks/bench_generate.py), then one table.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine: GPT-2 124M, under 8 minutes
#   bash benchmarks/gpu_check.sh --tiny     # any machine: a 2-layer model, a few steps (the
#                                           # test suite runs this on the CPU)
#
# Results (JSON from each benchmark and the table) go to $GPU_CHECK_OUT, default a new folder
# under /tmp. Each part has its own time limit, so one that hangs cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."

tiny=0
if [ "${1:-}" = "--tiny" ]; then tiny=1; fi
out="${GPU_CHECK_OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
mkdir -p "$out"
python=${PYTHON:-python}
status=0

part() {  # part NAME SECONDS COMMAND...: run one part under a time limit, keep its log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    if [ "$rc" -ne 0 ]; then status=1; fi
}

$python - <<'EOF'
import torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpu}")
EOF

if [ "$tiny" = 1 ]; then
    part tests 120 $python -m pytest -q -m gpu -p no:cacheprovider tests/generate tests/training
    part train 240 $python benchmarks/bench_train.py --n-layer 2 --n-embd 64 --block-size 32 \
        --batch-size 2 --steps 2 --warmup 1 --sides hf lean ours --json "$out/train.json"
    part seed 120 $python benchmarks/bench_train.py --n-layer 2 --n-embd 64 --block-size 32 \
        --batch-size 2 --steps 2 --warmup 1 --sides seed --json "$out/train-seed.json"
    part decode 120 $python benchmarks/bench_generate.py --n-layer 2 --n-embd 64 \
        --new-tokens 4 --batch-sizes 1 2 --repeats 1 --no-int8 --no-bf16 --json "$out/decode.json"
else
    part tests 80 $python -m pytest -q -m gpu -p no:cacheprovider tests
    part train 230 $python benchmarks/bench_train.py --n-layer 12 --n-embd 768 \
        --block-size 1024 --batch-size 16 --steps 30 --warmup 10 --sides hf lean ours \
        --json "$out/train.json"
    # the seed recipe (fp32, uncompiled) in a part of its own, so that its run cannot take
    # time from the compiled sides' start-up and compilation
    part seed 40 $python benchmarks/bench_train.py --n-layer 12 --n-embd 768 \
        --block-size 1024 --batch-size 16 --steps 10 --warmup 3 --sides seed \
        --json "$out/train-seed.json"
    part decode 125 $python benchmarks/bench_generate.py --batch-sizes 1 32 --new-tokens 256 \
        --repeats 2 --json "$out/decode.json"
fi

$python - "$out" <<'EOF' | tee "$out/table.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print("\n| part | side | figure | gpt2kit / side |\n| --- | --- | --- | --- |")
rates, device = {}, None
for name in ("train.json", "train-seed.json"):  # the compiled sides, then the seed recipe
    if (out / name).is_file():
        train = json.loads((out / name).read_text())
        rates.update({r["side"]: r for r in train["results"]})
        device = train["device"]
if rates:
    ours = rates.get("ours", {}).get("tokens_per_s")
    for side, r in rates.items():
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        ratio = f"{ours / r['tokens_per_s']:.2f}x" if ours and side != "ours" else ""
        print(f"| train ({device}) | {side} | {r['tokens_per_s']:,.0f} tokens/s{mfu} | {ratio} |")
if (out / "decode.json").is_file():
    decode = json.loads((out / "decode.json").read_text())
    for row in decode["results"]:
        for key, value in row.items():
            if key.endswith("_tok_s"):
                side = key.removesuffix("_tok_s")
                ratio = f"{row['ours_tok_s'] / value:.2f}x" if side != "ours" else ""
                print(f"| decode batch {row['batch']} ({decode['device']}) | {side} | {value:,.1f} tokens/s | {ratio} |")
        print(f"| decode batch {row['batch']} | same greedy tokens as HF | {row['same_tokens_as_hf']} | |")
EOF
echo "results in $out"
exit $status
