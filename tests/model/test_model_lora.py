"""LoRA layers on GPT2: the layer computes base + B A x * alpha / r, a new adapter changes
nothing, only the adapters (and with bias "all" the biases) train, and merging gives a plain
GPT2 with the same logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gpt2kit.model import GPT2, GPT2Config
from gpt2kit.model.lora import (
    LoraLinear,
    LoraSpec,
    add_lora,
    lora_layers,
    lora_spec,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
)

TINY = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=64)


def _model(seed: int = 0) -> GPT2:
    torch.manual_seed(seed)
    return GPT2(TINY).eval()


def _randomize_b(model: GPT2) -> None:
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.5)


def test_layer_computes_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoraLinear(base, r=3, alpha=12.0, dropout=0.0)
    assert layer.lora_A.weight.shape == (3, 6) and layer.lora_B.weight.shape == (5, 3)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(2, 4, 6)
    A, B = layer.lora_A.weight, layer.lora_B.weight
    expected = x @ base.weight.T + base.bias + (x @ A.T @ B.T) * 4.0
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), B @ A * 4.0)


def test_dropout_applies_to_the_adapter_input_only_in_training():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(8, 8), r=2, alpha=2.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(4, 8)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    torch.manual_seed(1)
    a = layer(x)
    torch.manual_seed(2)
    assert not torch.equal(a, layer(x))  # dropped differently: dropout is on
    # the base path never sees dropout: with B = 0 the output is the base layer's exactly
    nn.init.zeros_(layer.lora_B.weight)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_new_adapters_change_nothing_and_only_they_train():
    model, ref = _model(), _model()
    idx = torch.randint(0, 64, (2, 10))
    add_lora(model, LoraSpec(r=4, alpha=8, targets=["c_attn", "c_proj", "c_fc"]))
    assert torch.equal(model(idx), ref(idx))  # B starts at zero
    assert len(lora_layers(model)) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    trainable = trainable_parameters(model)
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not model.transformer.wte.weight.requires_grad  # the tied embeddings stay frozen
    assert model.lm_head.weight is model.transformer.wte.weight
    model(idx, idx).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == set(trainable)


def test_targets_pick_layers_by_name_like_peft():
    model = _model()
    add_lora(model, LoraSpec(r=2, alpha=2, targets=["mlp.c_proj", "c_attn"]))
    assert sorted(lora_layers(model)) == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.0.mlp.c_proj",
        "transformer.h.1.attn.c_attn",
        "transformer.h.1.mlp.c_proj",
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        (LoraSpec(r=0, alpha=8), "rank r must be at least 1"),
        (LoraSpec(r=4, alpha=8, targets=["c_attn", "q_proj"]), "q_proj does not exist"),
        (LoraSpec(r=4, alpha=8, targets=["lm_head"]), "never adapted"),
        (LoraSpec(r=4, alpha=8, bias="some"), "bias must be one of"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    assert any(message in p for p in spec.problems())
    with pytest.raises(ValueError, match=message):
        add_lora(_model(), spec)


def test_bias_all_trains_every_bias_and_saves_them_with_the_adapters():
    model = _model()
    add_lora(model, LoraSpec(r=2, alpha=4, targets=["c_attn"], bias="all"))
    trainable = trainable_parameters(model)
    assert "transformer.h.0.attn.c_attn.base_layer.bias" in trainable
    assert "transformer.h.0.ln_1.bias" in trainable and "transformer.ln_f.bias" in trainable
    assert not any(n.endswith(".weight") and ".lora_" not in n for n in trainable)
    assert set(lora_state_dict(model)) == set(trainable)


def test_merge_gives_a_plain_gpt2_with_the_same_logits():
    model = _model()
    add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.1))
    _randomize_b(model)
    model.eval()
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        before = model(idx)
    state = lora_state_dict(model)
    assert set(state) == {n for n in trainable_parameters(model)}
    merge_lora(model)
    assert lora_spec(model) is None and not lora_layers(model)
    assert all(type(m) is not LoraLinear for m in model.modules())
    plain = GPT2(TINY).eval()
    plain.load_state_dict(model.state_dict())  # the parameter names of a model without adapters
    with torch.no_grad():
        torch.testing.assert_close(plain(idx), before, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain(idx), _model()(idx), atol=1e-3)  # the update is in
