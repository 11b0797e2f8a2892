"""GPT2Config read from Hugging Face config.json files: the hub's own files load quietly with their
sizes, aliases are honoured, and a config that would change the computation is refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpt2kit import GPT2Config
from gpt2kit.errors import UserError

transformers = pytest.importorskip("transformers")

# Verbatim config.json files of the hub's GPT-2 checkpoints (provenance in the folder's README).
HUB_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hub_configs"
HUB_MODELS = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"]
SIZE_KEYS = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")


def test_every_hub_config_file_loads_quietly_with_its_sizes(capsys):
    for name in HUB_MODELS:
        d = json.loads((HUB_CONFIGS / f"{name}.json").read_text())
        config = GPT2Config.from_hf_dict(d)
        for key in SIZE_KEYS:
            assert getattr(config, key) == d[key], (name, key)
        assert config.activation_function == d["activation_function"] == "gelu_new", name
        assert config.mlp_width == 4 * d["n_embd"], name
        assert capsys.readouterr().err == "", name  # known inert keys need no note


def test_unknown_config_key_is_ignored_with_one_note(capsys):
    d = json.loads((HUB_CONFIGS / "gpt2.json").read_text())
    config = GPT2Config.from_hf_dict({**d, "my_custom_flag": 1, "another_one": "x"})
    assert config.n_layer == 12
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another_one, my_custom_flag" in err


def test_transformers_aliases_of_sizes_are_honoured():
    config = GPT2Config.from_hf_dict(
        {
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 3,
            "max_position_embeddings": 32,
        }
    )
    assert (config.n_embd, config.n_head, config.n_layer, config.n_positions) == (64, 4, 3, 32)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt_neo"}, "model_type is 'gpt_neo'"),
        ({"add_cross_attention": True}, "add_cross_attention=true"),
        ({"activation_function": "mish"}, "activation_function='mish' is not supported"),
        ({"pruned_heads": {"0": [1, 2]}}, "pruned_heads="),
        ({"hidden_size": 1024}, "hidden_size=1024 and n_embd=768 disagree"),
    ],
)
def test_a_config_that_changes_the_computation_is_refused_by_name(change, message):
    d = json.loads((HUB_CONFIGS / "distilgpt2.json").read_text())
    with pytest.raises(UserError, match=re.escape(message)):
        GPT2Config.from_hf_dict({**d, **change})


def test_every_refusal_is_reported_at_once():
    d = json.loads((HUB_CONFIGS / "gpt2.json").read_text())
    with pytest.raises(UserError) as e:
        GPT2Config.from_hf_dict({**d, "pruned_heads": {"1": [0]}, "activation_function": "mish"})
    assert "pruned_heads" in str(e.value) and "'mish'" in str(e.value)
