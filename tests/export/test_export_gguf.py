"""GGUF files proven by the runtime: llama.cpp (through `llama-cpp-python`) loads what
`write_gguf` writes and gives our greedy tokens, our logits (within a stated tolerance), our
tokenization, and for q8_0 a perplexity within 1% of f32.

Two tiny models: a random one with GPT-2's own 50,257-token vocabulary, and one with a BPE of
512 tokens trained on Shakespeare and an untied output head, trained for a few seconds so its
weights are not noise (see `trained_bpe_model`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import SHAKESPEARE, make_hf_model
from gpt2kit.errors import UserError
from gpt2kit.export.gguf import write_gguf
from gpt2kit.formats.hf import load_model, save_model
from gpt2kit.generate import Generator
from gpt2kit.model import GPT2, GPT2Config
from gpt2kit.tokenizer import train_bpe, train_char

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

PROMPTS = [
    "The history of the city begins",
    "Once upon a time",
    "ROMEO:\nWhat light",
    "In 1999, the café's owner said:",
]
TOKENIZER_TEXTS = [
    "Hello, world!",
    "  leading spaces, two  inside,   three and trailing   ",
    "tabs\tand\nnewlines\n\n\r\n end",
    "Unicode: héllo wörld, naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "emoji 🎉🦙 and 😶\u200d🌫️ joined, math ∑∫√ and ｆｕｌｌｗｉｄｔｈ",
    "contractions: don't I'll we've she'd they're it's 'S 'LL",
    "numbers 3 33 333 3333 3.14 1,000,000 and 2024-01-01",
    "one doc<|endoftext|>the next<|endoftext|><|endoftext|>",
    "",
]
# llama.cpp's logits against ours over a whole prompt and its continuation: the largest
# difference, over the standard deviation of our logits. Measured: 1.1e-3 (f32) and 2.3e-3
# (f16) for the random model, 3e-4 and 7e-4 for the trained one. Even f32 is not exact:
# llama.cpp's GELU reads an f16 table.
LOGIT_TOLERANCE = {"f32": 5e-3, "f16": 1e-2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """PyTorch and llama.cpp on one thread each: on a shared 2-core machine, two threads that
    spin-wait for each other run ~10x slower than one (0.6 s a training step against 0.045)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def llama(path: Path, monkeypatch: pytest.MonkeyPatch, n_ctx: int = 128):
    """llama.cpp on `path`, keeping the logits of every position (for perplexity).

    The CPU's extra weight layouts (repacking, AMX) are switched off: on AMX CPUs llama.cpp
    segfaults in q8_0 matrix products with them (ggml-org/llama.cpp#20824; the same with a
    file quantized by llama.cpp itself), and our tests check the file, not those kernels.
    """
    default = llama_cpp.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", params)
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, logits_all=True, n_threads=1, verbose=False
    )


def export(folder: Path, dtype: str) -> Path:
    model, tokenizer, _ = load_model(folder)
    path = folder.parent / f"{folder.name}-{dtype}.gguf"
    if not path.exists():
        write_gguf(model, tokenizer, path, dtype)
    return path


@pytest.fixture(scope="module")
def gpt2_vocab_model(tmp_path_factory) -> Path:
    """A random 2-layer, 64-wide GPT-2 with GPT-2's tokenizer (tied head)."""
    folder = tmp_path_factory.mktemp("gguf") / "gpt2-vocab"
    make_hf_model(folder, n_embd=64, n_head=2)
    return folder


@pytest.fixture(scope="module")
def trained_bpe_model(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide GPT-2 with a 512-token BPE trained on Shakespeare and an untied head,
    trained for 150 steps (~6 s): its held-out perplexity (~110) is ~4.5x below the uniform 512, so its
    weights decide its predictions and an error in quantizing them moves the perplexity that
    the q8_0 check measures. A random model's perplexity stays near the vocabulary size
    whatever its weights, so it would pass a 1% check even with broken quantization."""
    text = SHAKESPEARE.read_text()
    train_text = text[:200_000]
    tokenizer = train_bpe([train_text], 512)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=2,
        tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = GPT2(config)
    ids = torch.tensor(tokenizer.encode(train_text))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=generator)
        batch = torch.stack([ids[s : s + 65] for s in starts.tolist()])
        loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("gguf") / "trained-bpe"
    save_model(model.eval(), tokenizer, folder)
    return folder


@pytest.fixture(params=["gpt2_vocab_model", "trained_bpe_model"])
def model_folder(request) -> Path:
    return request.getfixturevalue(request.param)


def held_out_ids(folder: Path) -> list[int]:
    """128 tokens of Shakespeare the trained model never saw."""
    _, tokenizer, _ = load_model(folder)
    return tokenizer.encode(SHAKESPEARE.read_text()[-20_000:])[:128]


def llama_perplexity(llm, ids: list[int]) -> float:
    llm.reset()
    llm.eval(ids)
    logits = torch.tensor(llm.scores[: len(ids)])
    return math.exp(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item())


def test_the_file_holds_gpt2s_hyper_parameters_names_tokenizer_and_types(trained_bpe_model):
    path = export(trained_bpe_model, "q8_0")
    reader = gguf.GGUFReader(path)

    def value(key):
        field = reader.fields[key]
        return field.contents()

    assert value("general.architecture") == "gpt2"
    assert value("gpt2.context_length") == 128
    assert value("gpt2.embedding_length") == 64
    assert value("gpt2.block_count") == 2
    assert value("gpt2.feed_forward_length") == 256
    assert value("gpt2.attention.head_count") == 2
    assert value("gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert value("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "gpt-2"
    spec = json.loads((trained_bpe_model / "tokenizer.json").read_text())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == 512 and tokens[: len(vocab)] == [t for t, _ in vocab]
    eos = tokens.index("<|endoftext|>")
    assert value("tokenizer.ggml.token_type")[eos] == gguf.TokenType.CONTROL
    assert value("tokenizer.ggml.merges") == [" ".join(m) for m in spec["model"]["merges"]]
    assert value("tokenizer.ggml.bos_token_id") == value("tokenizer.ggml.eos_token_id") == eos

    Q = gguf.GGMLQuantizationType
    types = {t.name: t.tensor_type for t in reader.tensors}
    expected = {"token_embd.weight": Q.Q8_0, "position_embd.weight": Q.F32,
                "output_norm.weight": Q.F32, "output_norm.bias": Q.F32, "output.weight": Q.Q8_0}  # fmt: skip
    for i in range(2):
        for part in ("attn_norm", "ffn_norm"):
            expected |= {f"blk.{i}.{part}.weight": Q.F32, f"blk.{i}.{part}.bias": Q.F32}
        for part in ("attn_qkv", "attn_output", "ffn_up", "ffn_down"):
            expected |= {f"blk.{i}.{part}.weight": Q.Q8_0, f"blk.{i}.{part}.bias": Q.F32}
    assert types == expected


def test_a_tied_head_writes_no_output_tensor(gpt2_vocab_model):
    reader = gguf.GGUFReader(export(gpt2_vocab_model, "f16"))
    names = {t.name for t in reader.tensors}
    assert "token_embd.weight" in names and "output.weight" not in names
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_qkv.bias"] == gguf.GGMLQuantizationType.F32


def test_llama_cpp_tokenizes_as_we_do(model_folder, monkeypatch):
    _, tokenizer, _ = load_model(model_folder)
    llm = llama(export(model_folder, "f16"), monkeypatch)
    for text in TOKENIZER_TEXTS:
        ours = tokenizer.encode(text)
        theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert theirs == ours, text
        if "<|endoftext|>" not in text:
            assert llm.detokenize(ours).decode() == text


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_llama_cpp_gives_our_greedy_tokens_and_logits(model_folder, dtype, monkeypatch):
    generator = Generator.from_pretrained(model_folder, device="cpu", precision="fp32")
    llm = llama(export(model_folder, dtype), monkeypatch)
    prompts = [generator.tokenizer.encode(p) for p in PROMPTS]
    ours = generator.generate_ids(prompts, max_new_tokens=24, temperature=0, stop_at_eos=False)
    for prompt, (expected, _) in zip(prompts, ours, strict=True):
        theirs = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            theirs.append(token)
            if len(theirs) == len(expected):
                break
        assert theirs == expected, generator.tokenizer.decode(prompt)

    ids = prompts[0] + ours[0][0]
    llm.reset()
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[: len(ids)])
    with torch.no_grad():
        logits = generator.model(torch.tensor([ids]))[0]
    error = (theirs - logits).abs().max().item() / logits.std().item()
    assert error < LOGIT_TOLERANCE[dtype], error


def test_q8_0_perplexity_is_within_1_percent_of_f32(trained_bpe_model, monkeypatch):
    ids = held_out_ids(trained_bpe_model)
    model, _, _ = load_model(trained_bpe_model)
    with torch.no_grad():
        ours = math.exp(model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])).item())
    f32 = llama_perplexity(llama(export(trained_bpe_model, "f32"), monkeypatch), ids)
    q8 = llama_perplexity(llama(export(trained_bpe_model, "q8_0"), monkeypatch), ids)
    assert f32 < 512 / 3, f"the model is barely trained (perplexity {f32:.1f})"
    assert f32 == pytest.approx(ours, rel=1e-3)
    assert q8 != f32  # the weights were quantized
    assert abs(q8 / f32 - 1) < 0.01, (q8, f32)  # measured: 110.93 vs 110.94 (ours 110.95)


def test_a_char_tokenizer_is_refused_before_anything_is_written(tmp_path):
    tokenizer = train_char(["to be or not to be"])
    model = GPT2(GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=32,
                            n_layer=1, n_head=2))  # fmt: skip
    path = tmp_path / "char.gguf"
    with pytest.raises(UserError, match=r"char tokenizer .*byte-level BPE"):
        write_gguf(model, tokenizer, path, "f16")
    assert not path.exists()
