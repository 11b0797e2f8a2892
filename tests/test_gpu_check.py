"""`benchmarks/gpu_check.sh --tiny`: the GPU check script runs end to end on any machine (here
the CPU, with a 2-layer model), so the script a GPU session runs once has been run before."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_gpu_check_tiny_runs_every_part_and_prints_the_table(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny"],
        capture_output=True, text=True, env=env, timeout=540,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for side in ("hf", "lean", "ours", "seed"):
        assert f"| {side} |" in table and "tokens/s" in table
    assert "| decode batch 1 (" in table and "| decode batch 2 (" in table
    assert "| same greedy tokens as HF | True |" in table
    assert "gpt2kit / side" in table
    for part in ("tests", "train", "seed", "decode"):
        assert f"== {part}: exit 0" in result.stdout
