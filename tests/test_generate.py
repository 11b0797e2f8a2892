"""Generation controls against Hugging Face, stop strings, streaming, sliding window, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_hf_model, run_cli
from gpt2kit import GPT2, Generator, GPT2Config
from gpt2kit.errors import UserError
from gpt2kit.generate import (
    GenerationParams,
    _Noise,
    apply_repetition_penalty,
    ngram_bans,
    sample_seed,
    sample_token,
    warp_logits,
)
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer

transformers = pytest.importorskip("transformers")
lp = pytest.importorskip("transformers.generation.logits_process")

PROMPT = "Hello there, my friend"


@pytest.fixture(scope="module")
def peaky(tmp_path_factory):
    """A tiny HF model with large random weights, so its next-token distributions are peaked
    (a control then visibly changes what is sampled), and our Generator over the same folder."""
    folder = tmp_path_factory.mktemp("peaky") / "m"
    hf = make_hf_model(folder, initializer_range=0.5)
    return hf, Generator.from_pretrained(folder, device="cpu"), folder


# --------------------------------------------------------------------------- logits controls


def test_warpers_equal_hf_warpers_exactly():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=g) * 3
    logits[0, :10] = 2.0  # ties at the top-k boundary
    cases = [
        dict(temperature=0.7),
        dict(top_k=7),
        dict(top_p=0.6),
        dict(min_p=0.15),
        dict(temperature=1.3, top_k=50, top_p=0.9, min_p=0.02),
    ]
    for c in cases:
        hf = lp.LogitsProcessorList()
        if "temperature" in c:
            hf.append(lp.TemperatureLogitsWarper(c["temperature"]))
        if "top_k" in c:
            hf.append(lp.TopKLogitsWarper(c["top_k"]))
        if "top_p" in c:
            hf.append(lp.TopPLogitsWarper(c["top_p"]))
        if "min_p" in c:
            hf.append(lp.MinPLogitsWarper(c["min_p"]))
        ours = warp_logits(logits, **c)
        assert torch.equal(ours, hf(None, logits.clone())), c
        assert not torch.equal(ours, logits), c  # the control changed something


def test_repetition_penalty_equals_hf():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, generator=g)
    ids = torch.randint(0, 50, (3, 12), generator=g)
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, ids, True)
    ref = lp.RepetitionPenaltyLogitsProcessor(1.7)(ids, logits.clone())
    ours = apply_repetition_penalty(logits, seen, 1.7)
    assert torch.equal(ours, ref) and not torch.equal(ours, logits)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_bans_equal_hf(n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 6, (4, 30), generator=g)  # a small vocabulary repeats n-grams
    scores = torch.zeros(4, 6)
    ref = lp.NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()) == float("-inf")
    ours = ngram_bans(ids, 30, n, torch.zeros(4, dtype=torch.long), 6)
    assert torch.equal(ours, ref) and ours.any()


def test_ngram_bans_ignore_padding():
    ids = torch.tensor([[5, 1, 2, 1]])  # "5" is padding: (5, 1) must not ban 1 after the last 1
    assert ngram_bans(ids, 4, 2, torch.tensor([0]), 6)[0, 2]  # (1, 2) occurred: 2 is banned
    assert ngram_bans(ids, 4, 2, torch.tensor([1]), 6)[0].tolist() == [
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    ids = torch.tensor([[1, 1, 2, 1]])
    assert ngram_bans(ids, 4, 2, torch.tensor([0]), 6)[0, 1]  # (1, 1) occurred: 1 is banned
    assert not ngram_bans(ids, 4, 2, torch.tensor([1]), 6)[0, 1]  # ... but only with padding


def test_sample_token_draws_like_torch_multinomial():
    probs = torch.softmax(torch.randn(5, 1000) * 2, dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=torch.Generator().manual_seed(3))
    a = sample_token(probs, noise)
    b = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- end to end vs HF

# name: (sampled?, the control, the same call without the control under test)
CONTROLS = {
    "top-k": (True, dict(top_k=5), {}),
    "top-p": (True, dict(top_p=0.8), {}),
    "min-p": (True, dict(min_p=0.2), {}),
    "repetition-penalty": (True, dict(repetition_penalty=1.8), {}),
    "repetition-penalty-greedy": (False, dict(repetition_penalty=1.8), {}),
    "no-repeat-ngram-greedy": (False, dict(no_repeat_ngram_size=2), {}),
    "no-repeat-ngram-sampled": (True, dict(no_repeat_ngram_size=2, min_p=0.2), dict(min_p=0.2)),
    "all-together": (True, dict(temperature=0.6, top_k=20, top_p=0.9, min_p=0.05), {}),
}


@pytest.mark.parametrize("sample, control, without", CONTROLS.values(), ids=CONTROLS.keys())
def test_each_control_matches_hf_generate_and_changes_the_output(peaky, sample, control, without):
    """Same seed, same weights: our tokens equal HF's generate with the same control; and
    without the control they differ, so the test fails if the control were ignored."""
    hf, gen, _ = peaky
    prompt = gen.tokenizer.encode(PROMPT)
    hf_kw = {"top_k": 0, **control}  # HF's default top_k is 50; ours is off
    torch.manual_seed(7)
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]),
            do_sample=sample,
            max_new_tokens=24,
            eos_token_id=None,
            pad_token_id=0,
            **hf_kw,
        )[0, len(prompt) :].tolist()

    def ours(kw: dict) -> list[int]:
        kw = {"temperature": 1.0 if sample else 0.0, **kw}
        ((ids, _),) = gen.generate_ids([prompt], 24, seed=7, stop_at_eos=False, **kw)
        return ids

    assert ours(control) == ref
    assert ours(control) != ours(without)


def test_batched_sampling_of_different_lengths_matches_hf(peaky):
    """Each row of a left-padded batch samples what HF samples for that padded row with the
    row's own seed (one generator per row: a row's draws do not depend on the others)."""
    hf, gen, folder = peaky
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    prompts = ["Hi", "A much longer prompt than the first one", "Three words here"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    ref = []
    for i in range(len(prompts)):
        torch.manual_seed(sample_seed(11, i, 0))
        with torch.no_grad():
            out = hf.generate(
                input_ids=enc.input_ids[i : i + 1],
                attention_mask=enc.attention_mask[i : i + 1],
                do_sample=True,
                top_p=0.85,
                top_k=0,
                max_new_tokens=10,
                eos_token_id=None,
                pad_token_id=tok.eos_token_id,
            )
        ref.append(out[0, enc.input_ids.shape[1] :].tolist())
    ours = gen.generate_ids(
        [gen.tokenizer.encode(p) for p in prompts], 10, 1.0, seed=11, stop_at_eos=False, top_p=0.85
    )
    assert [ids for ids, _ in ours] == ref


def test_static_cache_path_gives_the_eager_tokens(peaky):
    """The static-shape step (what CUDA graphs capture) computes what the eager step does."""
    _, gen, _ = peaky
    static = Generator(gen.model, gen.tokenizer, static_cache=True)
    prompts = [gen.tokenizer.encode(p) for p in ("Hi", "A much longer prompt", "Three words")]
    for kw in (dict(temperature=0), dict(temperature=1.0, top_k=10, seed=5)):
        a = gen.generate_ids(prompts, 20, stop_at_eos=False, **kw)
        b = static.generate_ids(prompts, 20, stop_at_eos=False, **kw)
        assert a == b


# --------------------------------------------------------------------------- sampling API


def test_same_seed_same_text_and_samples_differ(peaky):
    _, gen, _ = peaky
    a = gen.generate(PROMPT, max_new_tokens=15, seed=3, num_samples=4, ignore_eos=True)
    b = gen.generate(PROMPT, max_new_tokens=15, seed=3, num_samples=4, ignore_eos=True)
    c = gen.generate(PROMPT, max_new_tokens=15, seed=4, num_samples=4, ignore_eos=True)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    assert len({x.text for x in a}) == 4  # four different samples from one batch
    assert [x.sample_index for x in a] == [0, 1, 2, 3] and {x.seed for x in a} == {3}


def test_batch_size_splits_prompts_but_keeps_each_row_correct(peaky):
    _, gen, _ = peaky
    prompts = ["Hi", "A much longer prompt than the first one", "Three words here"]
    one = gen.generate(prompts, max_new_tokens=8, temperature=0, num_samples=2)
    split = gen.generate(prompts, max_new_tokens=8, temperature=0, num_samples=2, batch_size=2)
    assert [c.text for c in one] == [c.text for c in split]
    assert [(c.prompt_index, c.sample_index) for c in one] == [
        (p, s) for p in range(3) for s in range(2)
    ]


def test_noise_drawn_in_blocks_of_steps_equals_one_step_at_a_time():
    """Off the CPU each row draws 8 steps of noise per call; on the CPU a block of draws is
    the same numbers, so the block bookkeeping (refill, step index) is checked here."""
    one = _Noise([5, 6, 7], 50, torch.device("cpu"), steps=1)
    eight = _Noise([5, 6, 7], 50, torch.device("cpu"), steps=8)
    rows = [one.next().clone() for _ in range(20)]
    assert all(torch.equal(a, eight.next()) for a in rows)
    alone = _Noise([6], 50, torch.device("cpu"), steps=8)  # row 1 drawn without the others
    assert all(torch.equal(a[1], alone.next()[0]) for a in rows)


def test_seeded_samples_do_not_depend_on_how_the_rows_are_batched(peaky):
    """The same seed gives the same samples whether all rows are one batch or split over
    several, even when a prompt's samples land in different batches."""
    _, gen, _ = peaky
    prompts = ["Hi", "A much longer prompt than the first one", "Three words here", "Four"]
    kw = dict(max_new_tokens=10, seed=5, num_samples=2, top_k=40, ignore_eos=True)
    whole = gen.generate(prompts, **kw)
    assert len({tuple(c.token_ids) for c in whole}) == 8  # every sample is its own draw
    for batch_size in (1, 2, 3, 4):
        split = gen.generate(prompts, batch_size=batch_size, **kw)
        assert [c.token_ids for c in split] == [c.token_ids for c in whole], batch_size
    # A sample is the same as its prompt drawn alone with that sample's own seed.
    for c in whole:
        seed = sample_seed(5, c.prompt_index, c.sample_index)
        (alone,) = gen.generate(c.prompt, **{**kw, "seed": seed, "num_samples": 1})
        assert alone.token_ids == c.token_ids
    assert sample_seed(5, 0, 0) == 5  # so one prompt, one sample: the seed itself


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


def _spanning_stop(gen: Generator, ids: list[int]) -> tuple[str, int]:
    """A stop string made of the end of token i and the start of token i+1 (i >= 2)."""
    pieces = [gen.tokenizer.decode([t]) for t in ids]
    for i in range(2, len(ids) - 1):
        a, b = pieces[i], pieces[i + 1]
        if len(a) >= 2 and len(b) >= 2 and "\ufffd" not in a + b:
            stop = a[-2:] + b[:2]
            text = gen.tokenizer.decode(ids)
            if text.find(stop) == len("".join(pieces[:i])) + len(a) - 2:
                return stop, i + 2  # the stop is complete after token i+1
    raise AssertionError("no suitable token pair")


def test_stop_string_spanning_tokens_cuts_the_text(peaky):
    _, gen, _ = peaky
    (full,) = gen.generate(PROMPT, max_new_tokens=30, temperature=0, ignore_eos=True)
    stop, n_tokens = _spanning_stop(gen, full.token_ids)
    (c,) = gen.generate(PROMPT, max_new_tokens=30, temperature=0, stop=["NEVER", stop])
    assert c.finish_reason == "stop"
    assert c.text == full.text[: full.text.index(stop)]
    assert c.token_ids == full.token_ids[:n_tokens]
    # The earliest of several stop strings wins; the stream shows exactly the cut text.
    first = full.text[1:3]
    (d,) = gen.generate(PROMPT, max_new_tokens=30, temperature=0, stop=[stop, first])
    assert d.text == full.text[: full.text.index(first)]
    streamed = "".join(gen.stream(PROMPT, max_new_tokens=30, temperature=0, stop=[stop]))
    assert streamed == c.text


def test_stream_yields_the_same_text_as_generate(peaky):
    _, gen, _ = peaky
    pieces = list(gen.stream(PROMPT, max_new_tokens=25, seed=9, top_k=40, ignore_eos=True))
    (c,) = gen.generate(PROMPT, max_new_tokens=25, seed=9, top_k=40, ignore_eos=True)
    assert len(pieces) > 5 and "".join(pieces) == c.text
    seen = []
    gen.generate(["a", "b"], max_new_tokens=5, temperature=0, on_text=lambda i, t: seen.append(i))
    assert set(seen) == {0, 1}


def test_eos_stops_by_default_and_ignore_eos_goes_on(peaky):
    _, gen, _ = peaky
    prompt = gen.tokenizer.encode(PROMPT)
    ((full, _),) = gen.generate_ids([prompt], 20, temperature=0, stop_at_eos=False)
    # Pretend the 6th greedy token is the end-of-text token.
    tokenizer = Tokenizer(gpt2_tokenizer().backend, "gpt2")
    tokenizer.eos_id = full[5]
    g = Generator(gen.model, tokenizer)
    ((ids, reason),) = g.generate_ids([prompt], 20, temperature=0)
    assert reason == "eos" and ids == full[: full.index(full[5])]
    ((ids, reason),) = g.generate_ids([prompt], 20, temperature=0, stop_at_eos=False)
    assert reason == "length" and ids == full
    # In a batch, a row that ends early stops alone; the others go on as they would alone.
    other = gen.tokenizer.encode("Something else entirely")
    batched = g.generate_ids([prompt, other], 20, temperature=0)
    alone = [g.generate_ids([p], 20, temperature=0)[0] for p in (prompt, other)]
    assert batched == alone and batched[0][1] == "eos"


def test_generation_past_the_context_window_slides(tmp_path):
    torch.manual_seed(0)
    model = GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32)).eval()
    gen = Generator(model, gpt2_tokenizer())
    for prompt_len in (10, 40):  # a prompt shorter, and one longer, than the window
        prompt = torch.randint(0, 50257, (prompt_len,)).tolist()
        ((ours, reason),) = gen.generate_ids([prompt], 60, temperature=0, stop_at_eos=False)
        # Reference: recompute the whole window every step with the documented rule.
        seq, start = list(prompt), max(0, prompt_len - 32)
        with torch.no_grad():
            for _ in range(60):
                if len(seq) - start > 32:
                    start = len(seq) - 16
                logits = model(torch.tensor([seq[start:]]))[0, -1]
                seq.append(int(logits.argmax()))
        assert reason == "length" and ours == seq[prompt_len:]


def test_bad_controls_are_refused_with_their_flags():
    with pytest.raises(UserError) as e:
        GenerationParams(top_p=0, top_k=-1, min_p=2, repetition_penalty=0, stop=("",))
    for flag in ("--top-p", "--top-k", "--min-p", "--repetition-penalty", "--stop"):
        assert flag in str(e.value)


# --------------------------------------------------------------------------- the command


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


# --------------------------------------------------------------------------- bad input


def _refused(result: subprocess.CompletedProcess, *texts: str) -> None:
    """The command stopped with status 2 and a message holding every text, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr


def _bash(command: str) -> subprocess.CompletedProcess:
    """Run `command` with bash (for <(...) pipes); GPT2KIT stands for `python -m gpt2kit`."""
    command = command.replace("GPT2KIT", f"'{sys.executable}' -m gpt2kit")
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)


def test_cli_prompts_file_that_is_a_device_or_a_folder(tmp_path, peaky):
    _, _, folder = peaky
    m = str(folder)
    _refused(run_cli("generate", m, "--prompts-file", "/dev/null"), "/dev/null holds no prompts")
    _refused(
        run_cli("generate", m, "--prompts-file", str(tmp_path)),
        f"--prompts-file {tmp_path} is a folder",
    )
    _refused(
        run_cli("generate", m, "--prompts-file", "/dev/zero"),
        "/dev/zero is not text (a NUL byte at byte offset 0)",
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
def test_cli_prompts_from_a_pipe_and_endless_input_in_bounded_memory(peaky):
    _, _, folder = peaky
    opts = "--temperature 0 --max-new-tokens 3"
    common = f"'{folder}' {opts}"
    r = _bash(f"GPT2KIT generate {common} --prompts-file <(printf 'Hi\\nThere\\n')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("--- prompt") == 2  # a pipe is read like a file
    # Endless input is cut off after a bounded amount, whatever its shape.
    _refused(
        _bash(f"GPT2KIT generate {common} --prompts-file <(yes 'a prompt')"),
        "holds more than 1,000,000 prompts",
    )
    _refused(
        _bash(f"GPT2KIT generate {common} --prompts-file <(yes | tr -d '\\n')"),
        "holds more than 64 MB of prompts",
    )
    _refused(
        _bash(f"head -c 70000000 /dev/zero | tr '\\0' a | GPT2KIT generate '{folder}' - {opts}"),
        "stdin holds more than 64 MB of prompts",
    )


def test_cli_output_that_is_the_prompts_file_is_refused_before_overwriting_it(tmp_path, peaky):
    _, _, folder = peaky
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Hi"\n')
    args = ["--prompts-file", str(prompts), "--output", str(prompts), "--max-new-tokens", "2"]
    _refused(run_cli("generate", str(folder), *args), "is the --prompts-file")
    assert prompts.read_text() == '"Hi"\n'


def test_cli_refuses_controls_that_give_garbage_and_takes_any_seed(peaky):
    _, _, folder = peaky
    m = str(folder)
    _refused(
        run_cli("generate", m, "Hi", "--temperature", "nan", "--repetition-penalty", "inf"),
        "--temperature must be 0 (greedy) or from 1e-06 to a finite number, got nan",
        "--repetition-penalty must be > 0",
    )
    # So small a temperature overflows the logits (every token came out as id 0).
    _refused(run_cli("generate", m, "Hi", "--temperature", "1e-45"), "got 1e-45")
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
    _refused(r, "--batch-size 1000000 needs at least", "use --batch-size")


def test_int8_quantization_swaps_the_linear_layers_and_keeps_logits_close(tmp_path):
    folder = tmp_path / "m"
    make_hf_model(folder, n_embd=64, n_head=4)
    fp32 = Generator.from_pretrained(folder, device="cpu")
    int8 = Generator.from_pretrained(folder, device="cpu", quantize="int8")
    quantized = torch.ao.nn.quantized.dynamic.Linear
    linears = [m for m in int8.model.modules() if isinstance(m, quantized)]
    assert len(linears) == 2 * 4 + 1  # c_attn, c_proj, c_fc, c_proj per block, and lm_head
    assert not any(isinstance(m, quantized) for m in fp32.model.modules())
    x = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = fp32.model(x), int8.model(x)
    assert not torch.equal(a, b)  # really quantized ...
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # ... and still close
    ((ids, reason),) = int8.generate_ids([[464, 2068]], 10, temperature=0, stop_at_eos=False)
    assert len(ids) == 10 and reason == "length"
    out = tmp_path / "out.jsonl"
    r = run_cli(
        "generate",
        str(folder),
        "Hi",
        "--quantize",
        "int8",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--output",
        str(out),
        "--seed",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text().splitlines()[0])["quantize"] == "int8"
    r = run_cli("generate", str(folder), "Hi", "--quantize", "int4")
    assert r.returncode == 2 and "--quantize must be one of none, int8" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_decode_matches_eager_on_gpu(peaky):
    _, cpu_gen, _ = peaky
    model = cpu_gen.model.to("cuda")
    try:
        prompts = [cpu_gen.tokenizer.encode(p) for p in ("Hi", "A longer prompt here")]
        graph = Generator(model, cpu_gen.tokenizer, cuda_graph=True)
        eager = Generator(model, cpu_gen.tokenizer, cuda_graph=False, static_cache=False)
        assert graph.cuda_graph
        a = graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
        b = eager.generate_ids(prompts, 40, temperature=0, stop_at_eos=False)
        assert a == b
        assert graph.generate_ids(prompts, 40, temperature=0, stop_at_eos=False) == a  # replay
    finally:
        cpu_gen.model.to("cpu")
