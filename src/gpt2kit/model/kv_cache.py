"""The KV cache of decoding: keys and values of every layer, preallocated once per batch."""

from __future__ import annotations

import torch

from gpt2kit.model.config import GPT2Config


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
