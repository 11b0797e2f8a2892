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
