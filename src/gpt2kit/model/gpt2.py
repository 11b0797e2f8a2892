"""The GPT-2 model: one file, pure PyTorch, no I/O and no training code.

Module and parameter names follow Hugging Face's `GPT2LMHeadModel` (`transformer.h.0.attn.c_attn`,
...) so converting weights is a rename-free transposition; see `gpt2kit.formats.hf` for the folder format.
The differences from Hugging Face's implementation are deliberate and numerically neutral:
the QKV projection is one `nn.Linear` (HF uses a transposed `Conv1D`), attention always goes
through `scaled_dot_product_attention`, and the KV cache is preallocated (`KVCache`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gpt2kit.model.config import ACTIVATIONS, GPT2Config
from gpt2kit.model.kv_cache import KVCache


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
