"""The README quickstart, timed: train from scratch on the bundled corpus, then generate.

Runs the commands of the README's quickstart block exactly as written (in a temporary folder),
times each, and compares the validation bits per character with nanoGPT's CPU recipe on the
same corpus (`train_shakespeare_char`, 4 layers x 128, block 64, batch 12, 2,000 iterations:
~90 s on a 2-core machine of ours, val loss 1.886 nats/char = 2.72 bpc on the last 10%; figure
from ../shared/FACTS.md, measured by the project). Goal: finish within 3 minutes on 2 cores with
at most 2.3 bpc.

    python benchmarks/bench_demo.py
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpt2kit.runs import RunDir

README = Path(__file__).resolve().parents[1] / "README.md"
NANOGPT_BPC = 1.886 / math.log(2)  # 2.72
NANOGPT_SECONDS = 90


def quickstart_commands() -> list[str]:
    """The shell commands of the first ```bash block under '## Quickstart' in README.md."""
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md has no ```bash block under '## Quickstart'")
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")
    ]


def main() -> None:
    commands = quickstart_commands()
    work = Path(tempfile.mkdtemp(prefix="gpt2kit-demo-"))
    total = 0.0
    for cmd in commands:
        args = shlex.split(cmd)
        if args[0] == "gpt2kit":
            args = [sys.executable, "-m", "gpt2kit", *args[1:]]
        t0 = time.perf_counter()
        result = subprocess.run(args, cwd=work, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        total += dt
        print(f"$ {cmd}\n  -> exit {result.returncode} in {dt:.1f} s")
        if result.returncode != 0:
            print(result.stdout[-2000:], result.stderr[-2000:])
            raise SystemExit(1)
        if "generate" in args[:4]:
            print("  " + result.stdout.strip().replace("\n", "\n  ")[:600])
    out = next(a for a in shlex.split(commands[0]) if a.startswith("runs/"))
    summary = json.loads(RunDir(work / out).summary.read_text())
    bpc = summary["last_eval"]["val_bpc"]
    print()
    print(f"{'':28}{'gpt2kit quickstart':>20}{'nanoGPT CPU recipe':>20}")
    print(f"{'val bits per character':28}{bpc:>20.3f}{NANOGPT_BPC:>20.3f}")
    print(f"{'wall time, all commands (s)':28}{total:>20.1f}{NANOGPT_SECONDS:>20}")
    print(f"{'training time (s)':28}{summary['train_seconds']:>20.1f}")
    print(
        f"bpc ratio (nanoGPT / gpt2kit): {NANOGPT_BPC / bpc:.3f}x; goal <= 2.3 bpc within 180 s: "
        f"{'met' if bpc <= 2.3 and total <= 180 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
