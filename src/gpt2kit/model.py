"""The GPT-2 model: one file, pure PyTorch, no I/O and no training code.

Module and parameter names follow Hugging Face's `GPT2LMHeadModel` (`transformer.h.0.attn.c_attn`,
...) so converting weights is a rename-free transposition; see `gpt2kit.hf` for the folder format.
The differences from Hugging Face's implementation are deliberate and numerically neutral:
the QKV projection is one `nn.Linear` (HF uses a transposed `Conv1D`), attention always goes
through `scaled_dot_product_attention`, and the KV cache is preallocated (`KVCache`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

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


class KVCache:
    """Preallocated keys and values for every layer: `(n_layer, B, n_head, max_len, head_dim)`.

    `length` counts the positions already written; the model writes the new positions of each
    forward pass in place and advances `length` once at the end, so no tensor grows per token.
    Setting `index` (a device tensor of T positions) switches to static mode: the new keys and
    values are written at those slots and attention spans all `max_len` slots, so every step
    has the same shapes (as CUDA graphs need) and the caller's 4-D mask hides the empty slots.
    """

    def __init__(
        self,
        config: GPT2Config,
        batch_size: int,
        max_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0
        self.index: torch.Tensor | None = None

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's `k`, `v` (B, nh, T, hs) and return all keys/values so far."""
        if self.index is not None:  # static mode: same shapes every step, (B, nh, max_len, hs)
            self.k[layer].index_copy_(2, self.index, k)
            self.v[layer].index_copy_(2, self.index, v)
            return self.k[layer], self.v[layer]
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.layer_idx = layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # fused q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.upcast = config.reorder_and_upcast_attn
        scale = 1.0 / math.sqrt(config.head_dim) if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scale /= float(layer_idx + 1)
        self.scale = scale

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, cache: KVCache | None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nh, S, hs), S = past + T
        dtype = q.dtype
        if self.upcast:  # HF's reorder_and_upcast_attn: attention scores in fp32
            q, k, v = q.float(), k.float(), v.float()
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=self.scale,
        )  # (B, nh, T, hs)
        y = y.to(dtype).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd)
        self.act = ACTIVATIONS[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, cache: KVCache | None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, is_causal, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 language model (token + position embeddings, pre-LN blocks, tied output head)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                drop=nn.Dropout(config.embd_pdrop),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Run the model on token ids `idx` (B, T).

        Returns the logits (B, T, vocab), or (B, 1, vocab) with `last_only`; with `targets`
        (B, T; -1 = ignore), returns the cross-entropy loss instead (`reduction` as in PyTorch).
        `attention_mask` (B, S) marks real (1) and padding (0) positions of the whole sequence
        so far, cache included; a 4-D boolean `attention_mask` (B, 1, T, S) is used as is
        (True = may attend). `position_ids` default to the positions after the cache.
        """
        T = idx.size(1)
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if past + T > self.config.n_positions:
                raise ValueError(
                    f"sequence of {past + T} tokens exceeds the context of {self.config.n_positions}"
                )
            position_ids = torch.arange(past, past + T, device=idx.device).unsqueeze(0)  # (1, T)
        if attention_mask is not None and attention_mask.dim() == 4:
            mask, is_causal = attention_mask, False  # prebuilt by the caller (static decoding)
        else:
            mask, is_causal = self._attention_mask(T, past, attention_mask, idx.device)

        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, mask, is_causal, cache)
        x = self.transformer.ln_f(x)
        if cache is not None:
            cache.length += T

        if targets is not None:
            logits = self.lm_head(x)  # (B, T, V)
            return F.cross_entropy(
                logits.float().view(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=-1,
                reduction=reduction,
            )
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C): only the next-token distribution is needed
        return self.lm_head(x)

    @staticmethod
    def _attention_mask(
        T: int, past: int, key_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor | None, bool]:
        """Return (mask, is_causal) for SDPA, building an explicit mask only when needed."""
        if key_mask is None:
            if past == 0:
                return None, T > 1  # plain causal attention: the fast path
            if T == 1:
                return None, False  # one new token sees every cached position
        S = past + T
        q_pos = torch.arange(past, S, device=device).unsqueeze(1)  # (T, 1)
        k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
        allowed = (k_pos <= q_pos).unsqueeze(0).unsqueeze(0)  # (1, 1, T, S)
        if key_mask is not None:
            valid = key_mask[:, :S].bool().view(-1, 1, 1, S)  # (B, 1, 1, S)
            # A query always sees itself, so rows of padding never become all-masked (NaN).
            allowed = (allowed & valid) | (k_pos == q_pos)
        return allowed, False
