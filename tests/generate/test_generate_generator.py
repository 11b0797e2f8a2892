"""The Generator API: each control against Hugging Face's generate, seeds, batching, stop strings,
streaming, EOS, the sliding window, int8 weights."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_hf_model, run_cli
from gpt2kit import GPT2, GPT2Config
from gpt2kit.generate import Generator
from gpt2kit.generate.processors import sample_seed
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer

transformers = pytest.importorskip("transformers")

PROMPT = "Hello there, my friend"


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
