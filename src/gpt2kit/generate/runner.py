"""The model over the slots' KV cache: encode prompts into slots, then one-token batched steps.

One preallocated cache has a row per slot and `capacity` columns used as a ring: every step
writes each row's new token at the same column (`col % capacity`), so a step has the same
shapes whichever rows are busy, and a row's context is the `length` columns just behind that
column. A prompt is encoded alone and its keys and values copied into the columns behind the
current one, so a slot can be filled while the others are mid-generation. GPT-2's positions
are added to the embeddings before attention, so where a token's keys and values sit in the
ring changes nothing; a boolean mask (`valid`) hides every column that is not the row's.

Eager mode (the CPU) writes the cache in slices and attends to the columns written so far
while no row's context wraps around the ring; then, and always in static mode (used on CUDA),
the step writes at a device-side index and attends over every column with the mask, so each
step has the same shapes and can be captured once in a CUDA graph and replayed.
"""

from __future__ import annotations

import torch

from gpt2kit.model import GPT2, KVCache


class SlotRunner:
    """Runs `model` over a KV cache of `slots` rows and `capacity` ring columns.

    `fill` encodes prompts into free rows, `place` re-encodes a row's tokens (the sliding
    window), `step` feeds one token per row and returns the next-token logits, `release`
    frees a row. The caller keeps each row's `length` (`col - first[row]`) below `capacity`.
    """

    def __init__(self, model: GPT2, slots: int, capacity: int, static: bool, graph: bool) -> None:
        dev, dtype = model.transformer.wte.weight.device, model.transformer.wte.weight.dtype
        self.model, self.static, self.graph_wanted = model, static, graph and static
        self.cache = KVCache(model.config, slots, capacity, device=dev, dtype=dtype)
        self.capacity = capacity
        self.valid = torch.zeros((slots, capacity), dtype=torch.bool, device=dev)  # row's columns
        self.pos = torch.zeros((slots, 1), dtype=torch.long, device=dev)  # next position ids
        self.live = torch.zeros((slots, 1), dtype=torch.long, device=dev)  # 1 on busy rows
        self.tok = torch.zeros((slots, 1), dtype=torch.long, device=dev)
        self.index = torch.zeros(1, dtype=torch.long, device=dev)
        self.col = 0  # the next step writes ring column col % capacity
        self.first = [0] * slots  # the (unwrapped) column of each row's oldest token
        self.busy = [False] * slots
        self._oldest = 0  # the smallest `first` of a busy row
        self._dense = True  # every busy row starts at column 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_out: torch.Tensor | None = None

    def length(self, row: int) -> int:
        """How many tokens row `row` holds (its context)."""
        return self.col - self.first[row]

    def full_rows(self) -> list[int]:
        """The busy rows whose context fills the cache (their next token needs a new window)."""
        if self.col - self._oldest < self.capacity:
            return []
        return [r for r, busy in enumerate(self.busy) if busy and self.length(r) >= self.capacity]

    def _rows_changed(self) -> None:
        firsts = [f for f, busy in zip(self.first, self.busy, strict=True) if busy]
        self._oldest = min(firsts, default=self.col)
        self._dense = all(f == 0 for f in firsts)

    def fill(self, rows: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Encode `prompts` (each at most `capacity` tokens) into the free rows `rows`; returns
        their next-token logits (len(rows), V).

        When every row is free the ring starts over behind the longest prompt; filling them
        all is then one left-padded forward pass, written straight into the cache.
        """
        if not any(self.busy):
            self.col = max(len(p) for p in prompts)
            if rows == list(range(len(self.busy))):
                return self._fill_all(prompts)
        dev = self.cache.k.device
        logits = [
            self.place(r, torch.tensor(p, device=dev)) for r, p in zip(rows, prompts, strict=True)
        ]
        return torch.cat(logits)

    def _fill_all(self, prompts: list[list[int]]) -> torch.Tensor:
        B, P = len(prompts), self.col
        idx = torch.zeros((B, P), dtype=torch.long)
        real = torch.zeros((B, P), dtype=torch.bool)  # False on padding
        for i, p in enumerate(prompts):
            idx[i, P - len(p) :] = torch.tensor(p)
            real[i, P - len(p) :] = True
        idx, real = idx.to(self.cache.k.device), real.to(self.cache.k.device)
        padded = any(len(p) < P for p in prompts)
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, P)
        self.cache.index = None
        self.cache.reset()
        logits = self.model(
            idx,
            attention_mask=real.long() if padded else None,
            position_ids=positions,
            cache=self.cache,
            last_only=True,
        )[:, -1, :]
        self.valid.zero_()
        self.valid[:, :P] = real
        self.pos.copy_(positions[:, -1:] + 1)
        self.live.fill_(1)
        self.first = [P - len(p) for p in prompts]
        self.busy = [True] * B
        self._rows_changed()
        return logits

    def place(self, row: int, ids: torch.Tensor) -> torch.Tensor | None:
        """Make `ids` (T,) the whole context of row `row`, at positions 0..T-1 in the T columns
        behind the current one; returns the next-token logits (1, V), None when T is 0.

        The tokens are encoded alone (a cache of their own, as a batch of one would be) and
        their keys and values copied into the row: a new prompt, or the sliding window.
        """
        T, dev = ids.numel(), ids.device
        self.valid[row] = False
        logits = None
        if T:
            own = KVCache(self.model.config, 1, T, device=dev, dtype=self.cache.k.dtype)
            logits = self.model(
                ids.unsqueeze(0),
                position_ids=torch.arange(T, device=dev).unsqueeze(0),
                cache=own,
                last_only=True,
            )[:, -1, :]
            cols = torch.arange(self.col - T, self.col, device=dev) % self.capacity  # (T,)
            self.cache.k[:, row].index_copy_(2, cols, own.k[:, 0])  # (n_layer, nh, capacity, hs)
            self.cache.v[:, row].index_copy_(2, cols, own.v[:, 0])
            self.valid[row].index_fill_(0, cols, True)
        self.pos[row] = T
        self.live[row] = 1
        self.first[row], self.busy[row] = self.col - T, True
        self._rows_changed()
        return logits

    def release(self, row: int) -> None:
        """Free row `row`: its steps are ignored from now on (its position stays valid)."""
        self.live[row] = 0
        self.pos[row] = 0
        self.busy[row] = False
        self._rows_changed()

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,) at the next ring column; returns the next-token logits
        (B, V). Free rows compute garbage, which nobody reads."""
        c = self.col % self.capacity
        self.valid[:, c] = True
        if self.static or self.col >= self.capacity or self._oldest < 0:
            self.tok.copy_(token.unsqueeze(1))
            self.index.fill_(c)
            if self.graph_wanted:
                if self.graph is None:
                    self._capture()
                with torch.cuda.device(self.cache.k.device):
                    self.graph.replay()
                logits = self.graph_out
            else:
                logits = self._static_forward()
        else:  # no context wraps: attend to the columns written so far
            self.cache.length = c
            # When every busy row holds every column so far, no mask is needed.
            mask = None if self._dense else self.valid[:, None, None, : c + 1]  # (B, 1, 1, c+1)
            logits = self.model(
                token.unsqueeze(1), attention_mask=mask, position_ids=self.pos, cache=self.cache
            )[:, -1, :]
        self.pos += self.live
        self.col += 1
        return logits

    def _static_forward(self) -> torch.Tensor:
        self.cache.index = self.index
        length = self.cache.length
        try:
            return self.model(
                self.tok,
                attention_mask=self.valid[:, None, None, :],  # (B, 1, 1, capacity)
                position_ids=self.pos,
                cache=self.cache,
            )[:, -1, :]
        finally:
            self.cache.index = None
            self.cache.length = length

    def _capture(self) -> None:
        # Warm up on a side stream (as PyTorch asks before capture), then record one step. The
        # warm-up writes this step's column, which the replay right after writes again.
        # Everything runs under the cache's device: the current device of this thread may be
        # another GPU (`--device cuda:1`, or a server's scheduler thread, where it is cuda:0),
        # and the side stream, the capture stream and the work must all be on the model's.
        # `thread_local`: other threads (a server's event loop) may use CUDA meanwhile.
        dev = self.cache.k.device
        with torch.cuda.device(dev):
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._static_forward()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(
                graph, stream=torch.cuda.Stream(dev), capture_error_mode="thread_local"
            ):
                out = self._static_forward()
        # Kept only once captured: a capture that failed is tried again at the next step.
        self.graph, self.graph_out = graph, out
