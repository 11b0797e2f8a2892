"""GenerationParams: bad values are refused, each named by its flag."""

from __future__ import annotations

import pytest

from gpt2kit.errors import UserError
from gpt2kit.generate.params import GenerationParams


def test_bad_controls_are_refused_with_their_flags():
    with pytest.raises(UserError) as e:
        GenerationParams(top_p=0, top_k=-1, min_p=2, repetition_penalty=0, stop=("",))
    for flag in ("--top-p", "--top-k", "--min-p", "--repetition-penalty", "--stop"):
        assert flag in str(e.value)
