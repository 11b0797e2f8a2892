"""Hugging Face folders both ways: our GPT-2 module against Hugging Face's with the same logits and
greedy tokens, the original key layout, and hub ids resolved through the local cache."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from conftest import make_hf_model, run_cli
from gpt2kit import GPT2, Generator, GPT2Config, load_model, save_model
from gpt2kit.errors import UserError
from gpt2kit.tokenizer import gpt2_tokenizer

transformers = pytest.importorskip("transformers")

# Verbatim config.json files of the hub's GPT-2 checkpoints (provenance in the folder's README).
HUB_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hub_configs"
HUB_MODELS = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"]
SIZE_KEYS = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")

CONFIGS = {
    "default": {},
    "inverse-layer-idx": dict(scale_attn_by_inverse_layer_idx=True),
    "n-inner-relu": dict(n_inner=48, activation_function="relu"),
    "upcast-unscaled": dict(reorder_and_upcast_attn=True, scale_attn_weights=False, n_layer=3),
    "exact-gelu-eps": dict(activation_function="gelu", layer_norm_epsilon=1e-6, n_head=4),
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_hf_folder_loads_with_identical_logits_and_greedy_tokens(tmp_path, overrides):
    hf = make_hf_model(tmp_path / "m", **overrides)
    model, tokenizer, _ = load_model(tmp_path / "m")
    x = torch.randint(0, 50257, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
    assert diff <= 1e-4

    prompt = tokenizer.encode("The quick brown fox")
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=30,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    ((ours, reason),) = Generator(model, tokenizer).generate_ids(
        [prompt], 30, temperature=0, stop_at_eos=False
    )
    assert ours == ref and reason == "length"


def test_saved_folder_loads_in_transformers_without_warnings(tmp_path):
    torch.manual_seed(0)
    model = GPT2(
        GPT2Config(
            n_layer=2,
            n_head=2,
            n_embd=32,
            n_positions=64,
            n_inner=40,
            scale_attn_by_inverse_layer_idx=True,
        )
    ).eval()
    folder = save_model(model, gpt2_tokenizer(), tmp_path / "out")
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
    ):
        assert (folder / name).is_file(), name
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randint(0, 50257, (2, 30))
    with torch.no_grad():
        assert (hf.eval()(x).logits - model(x)).abs().max().item() <= 1e-4
    # and back again into gpt2kit, weight for weight
    again, _, _ = load_model(folder)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_saved_weights_are_as_readable_as_the_other_files(tmp_path):
    # safetensors writes through a 0600 temporary file (safetensors#782); the weights follow
    # the umask as config.json does, or another user (a server, a container) cannot load them.
    from gpt2kit.model.lora import LoraSpec, add_lora

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32)).eval()
    umask = os.umask(0o022)
    try:
        full = save_model(model, gpt2_tokenizer(), tmp_path / "full")
        add_lora(model, LoraSpec(r=2, alpha=4))
        adapter = save_model(model, gpt2_tokenizer(), tmp_path / "adapter")
    finally:
        os.umask(umask)
    for folder in (full, adapter):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert set(modes.values()) == {0o644}, modes


def test_pipeline_greedy_equals_cli_greedy(tmp_path):
    torch.manual_seed(3)
    model = GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128)).eval()
    folder = save_model(model, gpt2_tokenizer(), tmp_path / "out")
    prompt = "Once upon a time"
    pipe = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    ref = pipe(prompt, max_new_tokens=20, do_sample=False)[0]["generated_text"]
    result = run_cli(
        "generate", str(folder), prompt, "--temperature", "0", "--max-new-tokens", "20"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == ref


def test_batched_prompts_of_different_lengths_match_hf_greedy(hf_model_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_model_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    prompts = ["Hi", "A much longer prompt than the first one", "Three words here"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = hf.generate(
            **enc,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tok.eos_token_id,
        )[:, enc.input_ids.shape[1] :].tolist()
    gen = Generator.from_pretrained(hf_model_dir, device="cpu")
    ours = gen.generate_ids(
        [gen.tokenizer.encode(p) for p in prompts], 12, temperature=0, stop_at_eos=False
    )
    assert [ids for ids, _ in ours] == ref


def test_original_checkpoint_key_layout_and_pytorch_bin(tmp_path):
    """Old hub checkpoints: no `transformer.` prefix, attn.bias buffers, pytorch_model.bin."""
    hf = make_hf_model(tmp_path / "m")
    folder = tmp_path / "legacy"
    folder.mkdir()
    state = {
        k.removeprefix("transformer."): v
        for k, v in hf.state_dict().items()
        if k != "lm_head.weight"
    }
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    model, tokenizer, _ = load_model(folder)  # no tokenizer files: GPT-2's is assumed by vocab size
    x = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4
    assert tokenizer.is_gpt2


def test_unsupported_config_is_refused_with_the_reason(tmp_path):
    make_hf_model(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["activation_function"] = "mish"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="activation_function='mish' is not supported"):
        load_model(tmp_path / "m")


def test_hub_id_resolves_through_the_local_cache_offline(tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub; here it finds the folder in a prepared cache."""
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-gpt2" / "snapshots" / "0123456789abcdef"
    make_hf_model(snap)
    (cache / "models--acme--tiny-gpt2" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-gpt2" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    model, _, folder = load_model("acme/tiny-gpt2")
    assert folder == snap and model.config.n_layer == 2


def test_unreachable_hub_gives_a_clear_error_without_traceback(tmp_path):
    result = run_cli(
        "generate",
        "acme/not-here",
        "hello",
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Hugging Face Hub" in result.stderr and "--init scratch" in result.stderr


@pytest.mark.parametrize("name", ["distilgpt2", "gpt2-medium"])
def test_generate_runs_on_a_folder_with_a_hub_config_file(tmp_path, name):
    """The hub file with only its sizes shrunk: every other key stays as the hub wrote it."""
    hub = json.loads((HUB_CONFIGS / f"{name}.json").read_text())
    tiny = {**hub, "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "n_ctx": 64}
    assert tiny.keys() == hub.keys()
    torch.manual_seed(0)
    folder = save_model(
        GPT2(GPT2Config(**{k: tiny[k] for k in SIZE_KEYS})), gpt2_tokenizer(), tmp_path / name
    )
    (folder / "config.json").write_text(json.dumps(tiny, indent=2) + "\n")
    result = run_cli(
        "generate", str(folder), "Hello", "--temperature", "0", "--max-new-tokens", "4"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello") and len(result.stdout) > len("Hello\n")
    assert "note" not in result.stderr and "Traceback" not in result.stderr
