"""`--precision auto` on the CPU: bf16 only where this machine measures it faster, cached."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_hf_model
from gpt2kit import runtime


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2KIT_CACHE", str(tmp_path / "cache"))


def timings(monkeypatch, fp32: float, bf16: float) -> list[tuple[int, str]]:
    """Make the block measurement return these seconds; returns the list of calls made."""
    calls = []

    def fake(width, task, repeats=3):
        calls.append((width, task))
        return fp32, bf16

    monkeypatch.setattr(runtime, "_block_seconds", fake)
    return calls


def test_auto_picks_bf16_only_when_measured_faster(monkeypatch):
    timings(monkeypatch, fp32=2.0, bf16=1.0)
    assert runtime.auto_cpu_precision("train", 768) == torch.bfloat16
    timings(monkeypatch, fp32=1.0, bf16=1.0)
    assert runtime.auto_cpu_precision("train", 1024) == torch.float32  # a tie keeps fp32
    timings(monkeypatch, fp32=1.0, bf16=2.6)  # emulated bf16: much slower
    assert runtime.auto_cpu_precision("decode", 768) == torch.float32


def test_narrow_models_stay_fp32_without_measuring(monkeypatch):
    calls = timings(monkeypatch, fp32=9.0, bf16=1.0)
    assert runtime.auto_cpu_precision("train", runtime.CPU_MEASURE_MIN_WIDTH - 1) == torch.float32
    assert calls == []


def test_the_measurement_is_cached_per_machine_task_and_width(monkeypatch, tmp_path):
    calls = timings(monkeypatch, fp32=3.0, bf16=1.5)
    assert runtime.cpu_bf16_speedup("train", 768) == 2.0
    assert runtime.cpu_bf16_speedup("train", 768) == 2.0
    assert calls == [(768, "train")]  # the second call read the cache
    runtime.cpu_bf16_speedup("decode", 768)
    runtime.cpu_bf16_speedup("train", 1024)
    assert calls == [(768, "train"), (768, "decode"), (1024, "train")]
    cached = json.loads((tmp_path / "cache" / "cpu-precision.json").read_text())
    assert len(cached) == 3 and all(torch.__version__ in key for key in cached)


def test_a_corrupt_cache_is_measured_again(monkeypatch, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cpu-precision.json").write_text("{not json")
    timings(monkeypatch, fp32=1.0, bf16=0.5)
    assert runtime.cpu_bf16_speedup("decode", 512) == 2.0


def test_the_real_measurement_times_both_precisions():
    fp32, bf16 = runtime._block_seconds(256, "decode", repeats=1)
    assert fp32 > 0 and bf16 > 0
    fp32, bf16 = runtime._block_seconds(256, "train", repeats=1)
    assert fp32 > 0 and bf16 > 0


def test_generator_auto_decodes_in_the_measured_precision(tmp_path, monkeypatch):
    from gpt2kit.generate import generator as generator_module

    make_hf_model(tmp_path / "m")
    asked = []

    def measured(task, width):
        asked.append((task, width))
        return torch.bfloat16

    monkeypatch.setattr(generator_module, "auto_cpu_precision", measured)
    gen = generator_module.Generator.from_pretrained(tmp_path / "m", device="cpu")
    assert asked == [("decode", 32)] and gen.dtype == torch.bfloat16
    assert len(gen.generate_ids([[1, 2, 3]], max_new_tokens=4, temperature=0)[0][0]) == 4
    fixed = generator_module.Generator.from_pretrained(tmp_path / "m", "cpu", "fp32")
    assert fixed.dtype == torch.float32 and len(asked) == 1  # an explicit precision is kept


# --------------------------------------------------------------------------------------------
# CPU memory reuse

_FAULTS = """
import json, resource, sys, torch
from gpt2kit import runtime
applied = runtime.keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # warm up: the heap settles after a few rounds
    torch.ones(16 * 2**20)
before = faults()
for _ in range(20):  # a training step's pattern: the same 64 MB buffer, allocated again
    torch.ones(16 * 2**20)
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _faults(mode: str, **env: str) -> dict:
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
        env={**environ, **env},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only"
)  # fmt: skip
def test_freed_cpu_buffers_are_reused_without_page_faults():
    # Without it, glibc unmaps every large block on free and the next step faults it in again
    # (16,384 faults per 64 MB); kept, the same pages come back.
    plain, kept = _faults("plain"), _faults("keep")
    assert kept["applied"] is True
    assert plain["faults"] > 20 * 10_000
    assert kept["faults"] < plain["faults"] / 20
    # a user's own malloc settings, or GPT2KIT_MALLOC=system, are left alone
    assert _faults("keep", GPT2KIT_MALLOC="system")["applied"] is False
    assert _faults("keep", MALLOC_ARENA_MAX="2")["applied"] is False
