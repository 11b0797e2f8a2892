"""The learning-rate schedule: linear warmup, cosine decay, then the floor."""

from __future__ import annotations

import itertools

import pytest

from gpt2kit.training.schedule import lr_at


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:101]))
    assert lrs[100] == lrs[119] == pytest.approx(0.1)
