"""The block sampler that training reads batches with: an order of fixed-length blocks that is a
pure function of (seed, epoch), so a position `(epoch, cursor)` is all a checkpoint needs. With
several processes, each reads its own share of every global batch of that one order."""

from __future__ import annotations

import numpy as np
import torch


class BlockSampler:
    """Training blocks in a shuffled order that is a pure function of (seed, epoch).

    Each epoch starts the blocks at a random offset (so block edges move between epochs) and
    visits every whole block once. The position is `(epoch, cursor)`; `next_batch` returns
    `(x, y)` of shape (batch, block) and moves the position, crossing epochs as needed.

    With `world` processes, a global batch is the next `batch x world` blocks of the order and
    rank `rank` reads rows `rank x batch` to `(rank + 1) x batch` of it: N processes with batch
    B read together exactly the blocks one process with batch N x B reads, and the position
    (a count of blocks of the global order) is the same on every rank.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.tokens, self.block, self.batch, self.seed = tokens, block_size, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.cursor = 0, 0
        self._order_epoch: int | None = None
        self._starts = np.empty(0, dtype=np.int64)

    def blocks_in_epoch(self, epoch: int) -> np.ndarray:
        """The start offsets of `epoch`'s blocks, in the order they are visited."""
        rng = np.random.default_rng([self.seed, epoch])
        span = len(self.tokens) - 1  # the last token is only ever a target
        offset = (
            int(rng.integers(0, span - self.block + 1)) % self.block if span > self.block else 0
        )
        n = (span - offset) // self.block
        return offset + rng.permutation(n).astype(np.int64) * self.block

    def _order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._starts, self._order_epoch = self.blocks_in_epoch(self.epoch), self.epoch
        return self._starts

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the next global batch as `(x, y)`, `y` being `x` shifted by one
        token; moves the position past the whole global batch."""
        starts, wanted = [], self.batch * self.world
        while len(starts) < wanted:
            order = self._order()
            take = order[self.cursor : self.cursor + wanted - len(starts)]
            starts.extend(take.tolist())
            self.cursor += len(take)
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
        starts = starts[self.rank * self.batch : (self.rank + 1) * self.batch]
        rows = np.stack([self.tokens[s : s + self.block + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]  # (B, T) each

    @property
    def epoch_progress(self) -> float:
        """Epochs done, as a fraction (2.25: a quarter into the third epoch)."""
        return self.epoch + self.cursor / max(1, len(self._order()))
