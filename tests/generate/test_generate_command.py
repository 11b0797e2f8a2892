"""`gpt2kit generate` end to end: JSONL records, stdin, streaming, refused options, memory bounds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import run_cli

from .conftest import refused


def test_cli_seeded_samples_are_the_same_for_any_batch_size(tmp_path, peaky):
    _, _, folder = peaky
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hi\nA much longer prompt than the first one\nThree words here\n")
    texts = []
    for batch_size in ("1", "4"):
        out = tmp_path / f"out{batch_size}.jsonl"
        r = run_cli(
            "generate",
            str(folder),
            "--prompts-file",
            str(prompts),
            "--num-samples",
            "2",
            "--seed",
            "9",
            "--max-new-tokens",
            "8",
            "--ignore-eos",
            "--batch-size",
            batch_size,
            "--output",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        texts.append([json.loads(line)["text"] for line in out.read_text().splitlines()])
    assert len(texts[0]) == 6 and len(set(texts[0])) == 6
    assert texts[0] == texts[1]


def test_cli_prompts_file_writes_complete_jsonl_records(tmp_path, peaky):
    _, gen, folder = peaky
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "One\ntwo"}) + "\n\n" + json.dumps("Three") + "\n")
    out = tmp_path / "out.jsonl"
    args = ["--prompts-file", str(prompts), "--output", str(out), "--num-samples", "2"]
    controls = ["--top-k", "30", "--top-p", "0.95", "--min-p", "0.01", "--seed", "5"]
    controls += ["--repetition-penalty", "1.1", "--no-repeat-ngram-size", "3"]
    controls += ["--max-new-tokens", "12", "--stop", "zzz", "--stop", "\\n", "--temperature", "0.9"]
    result = run_cli("generate", str(folder), *args, *controls)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    expected = gen.generate(
        ["One\ntwo", "Three"],
        seed=5,
        num_samples=2,
        batch_size=16,
        max_new_tokens=12,
        temperature=0.9,
        top_k=30,
        top_p=0.95,
        min_p=0.01,
        repetition_penalty=1.1,
        no_repeat_ngram_size=3,
        stop=["zzz", "\n"],
    )
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    for r, c in zip(records, expected, strict=True):
        assert (r["prompt"], r["text"], r["finish_reason"]) == (c.prompt, c.text, c.finish_reason)
        assert r["num_tokens"] == len(c.token_ids) and r["seed"] == 5
        assert "\n" not in r["text"] and r["finish_reason"] in ("stop", "eos", "length")
        assert r["parameters"] == dict(
            max_new_tokens=12,
            temperature=0.9,
            top_k=30,
            top_p=0.95,
            min_p=0.01,
            repetition_penalty=1.1,
            no_repeat_ngram_size=3,
            stop=["zzz", "\n"],
            ignore_eos=False,
            num_samples=2,
            batch_size=16,
        )
        assert r["model"]["weights_sha256"] == sha
        assert r["model"]["path"] == str(folder.resolve())
    assert [(r["prompt_index"], r["sample_index"]) for r in records] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]


def test_cli_stdin_prompt_stream_and_plain_prompts_file(tmp_path, hf_model_dir):
    common = ["--temperature", "0", "--max-new-tokens", "8"]
    plain = run_cli("generate", str(hf_model_dir), "Hello world", *common)
    piped = run_cli("generate", str(hf_model_dir), "-", *common, "--stream", input="Hello world\n")
    assert plain.returncode == piped.returncode == 0, plain.stderr + piped.stderr
    assert plain.stdout == piped.stdout and plain.stdout.startswith("Hello world")
    lines = tmp_path / "prompts.txt"
    lines.write_text("Hello world\nSecond prompt\n")
    many = run_cli("generate", str(hf_model_dir), "--prompts-file", str(lines), *common)
    assert many.returncode == 0, many.stderr
    assert many.stdout.count("--- prompt") == 2 and plain.stdout in many.stdout


def test_cli_refuses_conflicting_options(tmp_path, hf_model_dir):
    (tmp_path / "p.txt").write_text("x\n")
    r = run_cli(
        "generate",
        str(hf_model_dir),
        "hi",
        "--prompts-file",
        str(tmp_path / "p.txt"),
        "--stream",
        "--num-samples",
        "2",
        "--top-p",
        "0",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for text in ("not both", "--stream", "--top-p"):
        assert text in r.stderr


def test_cli_output_that_is_the_prompts_file_is_refused_before_overwriting_it(tmp_path, peaky):
    _, _, folder = peaky
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Hi"\n')
    args = ["--prompts-file", str(prompts), "--output", str(prompts), "--max-new-tokens", "2"]
    refused(run_cli("generate", str(folder), *args), "is the --prompts-file")
    assert prompts.read_text() == '"Hi"\n'


def test_cli_refuses_controls_that_give_garbage_and_takes_any_seed(peaky):
    _, _, folder = peaky
    m = str(folder)
    refused(
        run_cli("generate", m, "Hi", "--temperature", "nan", "--repetition-penalty", "inf"),
        "--temperature must be 0 (greedy) or from 1e-06 to a finite number, got nan",
        "--repetition-penalty must be > 0",
    )
    # So small a temperature overflows the logits (every token came out as id 0).
    refused(run_cli("generate", m, "Hi", "--temperature", "1e-45"), "got 1e-45")
    big = run_cli("generate", m, "Hi", "--seed", str(2**70 + 7), "--max-new-tokens", "4")
    same = run_cli("generate", m, "Hi", "--seed", str((2**70 + 7) % 2**64), "--max-new-tokens", "4")
    assert big.returncode == same.returncode == 0, big.stderr
    assert big.stdout == same.stdout  # seeds are taken modulo 2**64


def test_huge_max_new_tokens_allocates_only_what_is_generated(peaky):
    _, gen, folder = peaky
    (first,) = gen.generate("Hi", max_new_tokens=3, temperature=0, ignore_eos=True)
    stop = gen.tokenizer.decode(first.token_ids[2:3])  # the third greedy token's text
    r = run_cli(
        "generate",
        str(folder),
        "Hi",
        "--temperature",
        "0",
        "--max-new-tokens",
        str(10**12),
        "--stop",
        stop,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hi" + first.text[: first.text.index(stop)] + "\n"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_cli_many_samples_are_written_as_they_come_in_bounded_memory(tmp_path, peaky):
    _, _, folder = peaky
    out = tmp_path / "samples.jsonl"
    args = ["--num-samples", str(10**12), "--max-new-tokens", "1", "--output", str(out)]
    cmd = [sys.executable, "-m", "gpt2kit", "generate", str(folder), "Hi", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def rss_mb() -> float:
        with open(f"/proc/{proc.pid}/status") as f:
            line = next(line for line in f if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def written() -> int:
        return out.read_text().count("\n") if out.exists() else 0

    try:
        deadline = time.monotonic() + 120
        while written() < 48 and proc.poll() is None and time.monotonic() < deadline:
            assert rss_mb() < 1500, "the rows are built up front"
            time.sleep(0.1)
        assert written() >= 48, proc.stderr.read().decode() if proc.poll() is not None else ""
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_decoding(peaky):
    _, _, folder = peaky
    r = run_cli(
        "generate",
        str(folder),
        "Hi",
        "--num-samples",
        "1000000",
        "--batch-size",
        "1000000",
        "--max-new-tokens",
        "1",
    )
    refused(r, "--batch-size 1000000 needs at least", "use --batch-size")
