"""`gpt2kit eval` against a perplexity computed directly with transformers."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from conftest import SHAKESPEARE, make_hf_model, run_cli
from gpt2kit import load_model
from gpt2kit.errors import UserError
from gpt2kit.eval import evaluate_text, score_tokens, sliding_windows
from gpt2kit.eval.command import EvalConfig

transformers = pytest.importorskip("transformers")

TEXT = SHAKESPEARE.read_text(encoding="utf-8")[:3500]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "m"
    hf = make_hf_model(folder, n_positions=128)
    model, tokenizer, _ = load_model(folder)
    return hf, model, tokenizer, folder


def hf_guide_perplexity(hf, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """The loop of Hugging Face's perplexity guide, verbatim (labels = -100 outside targets)."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = hf(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += neg_log_likelihood.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


def hf_exact_nats(hf, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """The same windows with transformers' logits, each token's loss summed exactly once."""
    seq_len, nats, count, prev_end = ids.size(1), 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        with torch.no_grad():
            logp = hf(ids[:, begin:end]).logits[0].log_softmax(-1)  # (T, V)
        scored = torch.arange(max(begin + 1, prev_end), end)
        nats -= logp[scored - 1 - begin, ids[0, scored]].double().sum().item()
        count += len(scored)
        prev_end = end
        if end == seq_len:
            break
    return nats, count


@pytest.mark.parametrize("stride", [32, 128])
def test_perplexity_matches_transformers(tiny, stride):
    hf, model, tokenizer, _ = tiny
    ids = torch.tensor([tokenizer.encode(TEXT)])
    ours = evaluate_text(model, tokenizer, TEXT, stride=stride, batch_size=3)
    guide = hf_guide_perplexity(hf, ids, 128, stride)
    assert abs(ours["perplexity"] - guide) / guide < 1e-3
    nats, count = hf_exact_nats(hf, ids, 128, stride)
    unscored = [0] if stride < 128 else list(range(0, ids.size(1), 128))  # no context
    assert ours["tokens"] == count == ids.size(1) - len(unscored)
    assert ours["loss"] == pytest.approx(nats / count, rel=1e-5)
    skipped = sum(len(tokenizer.decode([ids[0, t].item()])) for t in unscored)
    assert ours["chars"] == len(TEXT) - skipped
    assert ours["bits_per_char"] == pytest.approx(nats / ours["chars"] / math.log(2), rel=1e-5)


def test_windows_cover_every_token_once_and_stride_matters(tiny):
    _, model, tokenizer, _ = tiny
    for n, block, stride in [(300, 128, 32), (300, 128, 127), (129, 128, 64), (5, 128, 2)]:
        scored = [
            t for _, end, first in sliding_windows(n, block, stride) for t in range(first, end)
        ]
        assert scored == list(range(1, n))
    disjoint = [t for _, end, first in sliding_windows(300, 128, 128) for t in range(first, end)]
    assert disjoint == [t for t in range(300) if t % 128]  # a window's first token: no context
    ids = tokenizer.encode(TEXT)
    a = score_tokens(model, ids, stride=32, block_size=128, batch_size=1)
    b = score_tokens(model, ids, stride=32, block_size=128, batch_size=5)
    assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-6)
    wider = score_tokens(model, ids, stride=96, block_size=128)  # less context per token
    assert wider[1] == a[1] and wider[0] != pytest.approx(a[0], rel=1e-6)


def test_bad_options_are_refused(tiny):
    with pytest.raises(UserError) as e:
        EvalConfig(model="m", sources=[], stride=0, block_size=1, batch_size=0)
    for text in ("SOURCE", "--stride", "--block-size", "--batch-size"):
        assert text in str(e.value)
    _, model, tokenizer, _ = tiny
    with pytest.raises(UserError, match="exceeds the model's context"):
        evaluate_text(model, tokenizer, TEXT, stride=64, block_size=256)


def test_cli_eval_json_joins_sources_and_records_the_model(tmp_path, tiny):
    _, model, tokenizer, folder = tiny
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT[:1500], encoding="utf-8")
    b.write_text(TEXT[1500:3000], encoding="utf-8")
    r = run_cli("eval", str(folder), str(a), str(b), "--stride", "64", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = evaluate_text(model, tokenizer, TEXT[:1500] + "\n\n" + TEXT[1500:3000], stride=64)
    for key in ("loss", "perplexity", "bits_per_char"):
        assert out[key] == pytest.approx(ref[key], rel=1e-5), key
    assert (out["tokens"], out["chars"], out["stride"], out["block_size"]) == (
        ref["tokens"],
        ref["chars"],
        64,
        128,
    )
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert out["model"]["weights_sha256"] == sha
    text = run_cli("eval", str(folder), str(a), "--stride", "64", "--max-tokens", "200")
    assert text.returncode == 0, text.stderr
    assert "perplexity" in text.stdout and "bits/char" in text.stdout
    bad = run_cli("eval", str(folder), str(tmp_path / "missing.txt"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_prepared_data_dir_scores_its_validation_split(tmp_path, tiny):
    data = pytest.importorskip("gpt2kit.data")
    _, model, _, folder = tiny
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT, encoding="utf-8")
    prepared = data.prepare(
        data.PrepareConfig(sources=[str(src)], out=str(tmp_path / "data"), val_fraction=0.3),
        progress=False,
    )
    r = run_cli("eval", str(folder), str(tmp_path / "data"), "--stride", "64", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    nats, scored = score_tokens(model, prepared.val, stride=64)
    assert out["tokens"] == scored == len(prepared.val) - 1
    assert out["loss"] == pytest.approx(nats / scored, rel=1e-5)
    first = prepared.tokenizer.decode([int(prepared.val[0])])
    assert out["chars"] == prepared.meta["val_chars"] - len(first)


def test_eval_defaults_work_on_a_model_with_a_short_context(tmp_path):
    """The stride defaults to half the window (at most 512): a 64-token model needs no flags."""
    folder = tmp_path / "short"
    make_hf_model(folder, n_positions=64)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    r = run_cli("eval", str(folder), str(text), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["block_size"] == 64 and result["stride"] == 32
    assert EvalConfig(model="m", sources=["x"]).stride is None


def test_max_tokens_counts_the_characters_the_vocabulary_lacks():
    """A char tokenizer maps a character its training text never showed to `<|unk|>`, one id
    for one character: cutting the text to --max-tokens must still count it."""
    from gpt2kit import GPT2, GPT2Config
    from gpt2kit.tokenizer import train_char

    tokenizer = train_char(["abc abc"])
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32)
    config.vocab_size = tokenizer.vocab_size
    model = GPT2(config).eval()
    text = "abc xyz 寶玉 abc " * 4
    assert len(tokenizer.encode(text)) == len(text)
    whole = evaluate_text(model, tokenizer, text)
    cut = evaluate_text(model, tokenizer, text, max_tokens=len(text) - 1)
    assert whole["chars"] == len(text) - 1  # token 0 is not scored
    assert cut["chars"] == len(text) - 2
