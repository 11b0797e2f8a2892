"""The block sampler: the order of training blocks is a pure function of (seed, epoch)."""

from __future__ import annotations

import numpy as np
import torch

from gpt2kit.data.sampler import BlockSampler


def test_block_order_is_a_pure_function_of_seed_and_epoch():
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = BlockSampler(tokens, 32, 4, seed=1), BlockSampler(tokens, 32, 4, seed=1)
    assert np.array_equal(a.blocks_in_epoch(3), b.blocks_in_epoch(3))
    assert not np.array_equal(a.blocks_in_epoch(0), a.blocks_in_epoch(1))
    assert not np.array_equal(
        a.blocks_in_epoch(0), BlockSampler(tokens, 32, 4, seed=2).blocks_in_epoch(0)
    )
    starts = a.blocks_in_epoch(0)
    assert len(set(starts.tolist())) == len(starts) and starts.max() + 33 <= len(tokens)
    x, y = a.next_batch()
    assert x.shape == y.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])
