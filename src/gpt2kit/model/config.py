"""The model's configuration: `GPT2Config` (Hugging Face's field names and defaults, read from
and written to `config.json`), the named presets, and the activation functions we compute.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from gpt2kit.errors import UserError

# Activation names used by Hugging Face configs that we compute exactly.
ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "tanh": torch.tanh,
}

# Hugging Face `GPT2Config` keys that change nothing in the forward pass of a causal LM
# (they configure heads we do not have, tokenization, generation defaults, or are leftovers of
# older `transformers` versions still found in hub files). They are ignored silently; any other
# key is ignored too, as `transformers` does, but named in one note on stderr.
_IGNORED_HF_KEYS = {
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "summary_last_dropout",
    "classifier_dropout",
    "hidden_dropout",
    "initializer_range",
    "task_specific_params",
    "n_ctx",
    "n_special",  # OpenAI GPT's special-token count; GPT-2 has none (gpt2-medium's file)
    "predict_special_tokens",  # same origin
    "_num_labels",  # old name of num_labels (distilgpt2's file)
    "num_labels",
    "_name_or_path",
    "_commit_hash",
    "_attn_implementation",
    "attn_implementation",
    "pad_token_id",
    "unk_token_id",
    "output_past",
    "gradient_checkpointing",
    "return_dict",
    "use_return_dict",
    "output_hidden_states",
    "output_attentions",
    "id2label",
    "label2id",
    "problem_type",
    "max_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_beams",
    "min_length",
    "no_repeat_ngram_size",
    "length_penalty",
    "early_stopping",
    "bad_words_ids",
    "decoder_start_token_id",
    "prefix",
    "sep_token_id",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "finetuning_task",
    "tokenizer_class",
    "torchscript",
    "tf_legacy_loss",
    "use_bfloat16",
    "typical_p",
    "diversity_penalty",
    "num_beam_groups",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "encoder_no_repeat_ngram_size",
    "transformers.js_config",
}

# Other names `transformers` accepts for GPT-2's own fields (`GPT2Config.attribute_map`).
_HF_ALIASES = {
    "hidden_size": "n_embd",
    "max_position_embeddings": "n_positions",
    "num_attention_heads": "n_head",
    "num_hidden_layers": "n_layer",
}


@dataclass
class GPT2Config:
    """Every `GPT2Config` field of Hugging Face that changes the computation, with its defaults.

    Field names are Hugging Face's, so `config.json` maps one to one. Unsupported values
    (an unknown activation, cross-attention) are refused in `__post_init__`.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def __post_init__(self) -> None:
        problems = []
        if self.activation_function not in ACTIVATIONS:
            problems.append(
                f"activation_function={self.activation_function!r} is not supported "
                f"(supported: {', '.join(sorted(ACTIVATIONS))})"
            )
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_head > 0 and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if problems:
            raise UserError("The model configuration is not supported:", problems)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_hf_dict(cls, d: dict) -> GPT2Config:
        """Build a config from a Hugging Face `config.json` dict, refusing what we cannot compute.

        Refused: another `model_type`, cross-attention, pruned heads, values that contradict
        each other, and (in `__post_init__`) unsupported values. Keys that do not change a causal
        LM's forward pass are ignored, as `transformers`' GPT-2 ignores them; keys we do not
        know are ignored as well and named in one note on stderr.
        """
        problems = []
        if d.get("model_type", "gpt2") != "gpt2":
            problems.append(
                f"model_type is {d.get('model_type')!r}; gpt2kit runs GPT-2 models (model_type 'gpt2')"
            )
        if d.get("add_cross_attention"):
            problems.append("add_cross_attention=true (encoder-decoder GPT-2) is not supported")
        if d.get("pruned_heads"):
            problems.append(
                f"pruned_heads={d['pruned_heads']!r}: models with pruned attention heads are not supported"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for alias, name in _HF_ALIASES.items():
            if alias not in d:
                continue
            if name in kwargs and kwargs[name] != d[alias]:
                problems.append(
                    f"{alias}={d[alias]!r} and {name}={kwargs[name]!r} disagree "
                    f"(both set the same size; keep one)"
                )
            kwargs[name] = d[alias]
        if kwargs.get("bos_token_id") is None:
            kwargs.pop("bos_token_id", None)
        if kwargs.get("eos_token_id") is None:
            kwargs.pop("eos_token_id", None)
        config = None
        try:
            config = cls(**kwargs)
        except UserError as e:  # unsupported values: reported with the problems above
            problems += e.problems
        if problems or config is None:
            raise UserError(
                "The model's config.json describes a model gpt2kit cannot run:", problems
            )
        handled = (
            known | _IGNORED_HF_KEYS | _HF_ALIASES.keys() | {"add_cross_attention", "pruned_heads"}
        )
        unknown = sorted(k for k in d if k not in handled)
        if unknown:
            sys.stderr.write(
                f"gpt2kit: note: ignored config.json keys that GPT-2 does not use: {', '.join(unknown)}\n"
            )
        return config

    def to_hf_dict(self) -> dict:
        """The `config.json` content that `transformers` loads as a `GPT2LMHeadModel`."""
        d = asdict(self)
        d.update(
            model_type="gpt2",
            architectures=["GPT2LMHeadModel"],
            n_ctx=self.n_positions,
            initializer_range=0.02,
            use_cache=True,
        )
        return d


# Named sizes. The HF ones match the hub checkpoints; `tiny`/`small`/`base` are ours for
# training from scratch on a CPU (see README "Presets").
PRESETS: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    "distilgpt2": dict(n_layer=6, n_head=12, n_embd=768),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, n_positions=128),
    "small": dict(n_layer=6, n_head=6, n_embd=384, n_positions=512),
    "base": dict(n_layer=8, n_head=8, n_embd=512, n_positions=1024),
}


def preset_config(name: str, **overrides) -> GPT2Config:
    """The config of a named preset (see `PRESETS`), with any field overridden."""
    if name not in PRESETS:
        raise UserError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return GPT2Config(**{**PRESETS[name], **overrides})
