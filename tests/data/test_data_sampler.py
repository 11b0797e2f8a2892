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


def test_ranks_read_their_share_of_the_one_process_order():
    """N processes with batch B read, step after step and across epochs, exactly the blocks
    one process with batch N x B reads, rank r taking rows r x B to (r + 1) x B; the position
    is the same on every rank."""
    tokens = np.arange(1000, dtype=np.uint16)  # 31 blocks of 32: epochs end mid-batch
    one = BlockSampler(tokens, 32, 6, seed=5)
    ranks = [BlockSampler(tokens, 32, 2, seed=5, rank=r, world=3) for r in range(3)]
    for _ in range(25):  # several epochs
        x, y = one.next_batch()
        shares = [s.next_batch() for s in ranks]
        assert torch.equal(torch.cat([sx for sx, _ in shares]), x)
        assert torch.equal(torch.cat([sy for _, sy in shares]), y)
        assert all((s.epoch, s.cursor) == (one.epoch, one.cursor) for s in ranks)
    assert one.epoch >= 4


def test_a_position_saved_by_one_world_size_continues_on_another():
    """The position counts blocks of the global order, so a sampler of another world size
    set to it reads on from the same block."""
    tokens = np.arange(1000, dtype=np.uint16)
    two = [BlockSampler(tokens, 32, 4, seed=9, rank=r, world=2) for r in range(2)]
    for _ in range(5):
        for s in two:
            s.next_batch()
    one = BlockSampler(tokens, 32, 8, seed=9)
    one.epoch, one.cursor = two[0].epoch, two[0].cursor
    reference = BlockSampler(tokens, 32, 8, seed=9)
    for _ in range(5):
        reference.next_batch()
    assert torch.equal(one.next_batch()[0], reference.next_batch()[0])
