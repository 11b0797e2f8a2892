"""PEFT adapter folders both ways: an adapter gpt2kit writes loads in `peft` on a `transformers`
GPT-2 with the same logits, one `peft` trained loads in gpt2kit with the same logits, an adapter
folder is a MODEL for generate and eval (merged into its base), and a changed base is refused."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_adapter, make_hf_model, run_cli
from gpt2kit import Generator, load_model
from gpt2kit.errors import UserError
from gpt2kit.eval import evaluate_text
from gpt2kit.formats.peft import BASE_REF
from gpt2kit.model.lora import LoraLinear, LoraSpec, lora_layers

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

IDS = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))


def _peft_logits(base_dir, adapter_dir) -> torch.Tensor:
    hf = transformers.GPT2LMHeadModel.from_pretrained(base_dir)
    peft_model = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
    with torch.no_grad():
        return peft_model(IDS).logits


SPECS = {
    "attn-only": LoraSpec(r=4, alpha=8, targets=["c_attn"]),
    "all-layers-bias-all": LoraSpec(r=2, alpha=16, dropout=0.1, bias="all"),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_our_adapter_loads_in_peft_with_the_same_logits(tmp_path, hf_model_dir, spec):
    ours = make_adapter(hf_model_dir, tmp_path / "adapter", spec)
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == sorted(["adapter_config.json", "adapter_model.safetensors", BASE_REF])
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    a = keys["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    assert a.shape == (spec.r, 32)  # nn.Linear orientation (r, in) though HF's layer is Conv1D
    assert keys["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (96, spec.r)
    with torch.no_grad():
        unmerged = ours(IDS)
    theirs = _peft_logits(hf_model_dir, tmp_path / "adapter")
    assert (theirs - unmerged).abs().max().item() <= 1e-5
    with torch.no_grad():
        base = transformers.GPT2LMHeadModel.from_pretrained(hf_model_dir)(IDS).logits
    assert (theirs - base).abs().max().item() > 1e-2  # the adapter does change the model

    merged, tokenizer, folder = load_model(tmp_path / "adapter")
    assert folder == tmp_path / "adapter" and tokenizer.vocab_size == 50257
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())  # a plain GPT2
    with torch.no_grad():
        assert (merged(IDS) - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_modules=["c_attn"]),
        dict(target_modules=["c_attn", "c_proj", "c_fc"], bias="all", use_rslora=True),
    ],
    ids=["c_attn", "all-bias-rslora"],
)
def test_peft_trained_adapter_loads_in_gpt2kit_with_the_same_logits(tmp_path, kwargs):
    hf = make_hf_model(tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **kwargs)
    peft_model = peft.get_peft_model(hf, config)
    torch.manual_seed(3)
    with torch.no_grad():  # as if trained: B away from zero, biases moved
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
            elif p.requires_grad and name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps(
            {
                **json.loads((tmp_path / "adapter" / "adapter_config.json").read_text()),
                "base_model_name_or_path": str(tmp_path / "base"),
            }
        )
    )
    with torch.no_grad():
        theirs = peft_model.eval()(IDS).logits
    model, _, _ = load_model(tmp_path / "adapter")
    with torch.no_grad():
        assert (model(IDS) - theirs).abs().max().item() <= 1e-5
    unmerged, _, _ = load_model(tmp_path / "adapter", merge=False)
    assert len(lora_layers(unmerged)) == (2 if len(kwargs["target_modules"]) == 1 else 8)
    with torch.no_grad():
        assert (unmerged(IDS) - theirs).abs().max().item() <= 1e-5


@pytest.fixture
def peaky_adapter(tmp_path):
    """A peaked tiny base (so greedy text shows any change) and an adapter of it."""
    base = tmp_path / "base"
    make_hf_model(base, initializer_range=0.5)
    make_adapter(base, tmp_path / "adapter", LoraSpec(r=4, alpha=32))
    return base, tmp_path / "adapter"


def test_generate_and_eval_accept_an_adapter_folder(tmp_path, peaky_adapter):
    base, adapter = peaky_adapter
    merged, tokenizer, _ = load_model(adapter)
    plain, _, _ = load_model(base)
    prompt = tokenizer.encode("The king")

    def greedy(model) -> str:
        ((ids, _),) = Generator(model, tokenizer).generate_ids([prompt], 12, temperature=0)
        return tokenizer.decode(ids)

    r = run_cli(
        "generate", str(adapter), "The king", "--temperature", "0", "--max-new-tokens", "12"
    )
    assert r.returncode == 0, r.stderr
    assert greedy(merged) in r.stdout and greedy(plain) not in r.stdout

    text = "Now is the winter of our discontent made glorious summer. " * 20
    (tmp_path / "t.txt").write_text(text)
    r = run_cli("eval", str(adapter), str(tmp_path / "t.txt"), "--stride", "64", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = evaluate_text(merged, tokenizer, text, stride=64)
    assert out["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert out["loss"] != pytest.approx(evaluate_text(plain, tokenizer, text, stride=64)["loss"])
    sha = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert out["model"]["weights_sha256"] == sha


def test_an_adapter_whose_base_changed_is_refused(tmp_path, peaky_adapter):
    base, adapter = peaky_adapter
    make_hf_model(base, seed=1, initializer_range=0.5)  # other weights in the same folder
    with pytest.raises(UserError, match="SHA-256"):
        load_model(adapter)
    r = run_cli("generate", str(adapter), "hi", "--max-new-tokens", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "its weights changed since" in r.stderr


def test_an_adapter_whose_base_is_gone_is_refused(tmp_path, peaky_adapter):
    base, adapter = peaky_adapter
    for f in base.iterdir():
        f.unlink()
    base.rmdir()
    with pytest.raises(UserError, match=r"base model of the adapter .* cannot be found"):
        load_model(adapter)


def test_export_writes_the_adapter_merged_into_a_full_model(tmp_path, peaky_adapter):
    from gpt2kit.export.command import run_export
    from gpt2kit.export.config import ExportConfig

    base, adapter = peaky_adapter
    run_export(ExportConfig(model=str(adapter), to="hf", out=str(tmp_path / "hf")))
    assert (tmp_path / "hf" / "config.json").is_file()  # a whole model, not an adapter
    merged, _, _ = load_model(adapter)
    exported = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (exported(IDS).logits - merged(IDS)).abs().max().item() <= 1e-5
        plain = transformers.GPT2LMHeadModel.from_pretrained(base)(IDS).logits
        assert (exported(IDS).logits - plain).abs().max().item() > 1e-2
