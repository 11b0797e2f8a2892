"""gpt2kit: turn your own text into a GPT-2 text generator.

The Python API mirrors the command line: `prepare` for data, `train(TrainConfig(...))` for
training, `Generator` for generation, `load_model`/`save_model` for Hugging Face-format
folders. Names are imported on first use, so `import gpt2kit` stays light (no PyTorch until a
model is needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "GPT2": "gpt2kit.model",
    "GPT2Config": "gpt2kit.model",
    "KVCache": "gpt2kit.model",
    "preset_config": "gpt2kit.model",
    "load_model": "gpt2kit.formats.hf",
    "save_model": "gpt2kit.formats.hf",
    "Tokenizer": "gpt2kit.tokenizer",
    "gpt2_tokenizer": "gpt2kit.tokenizer",
    "load_tokenizer": "gpt2kit.tokenizer",
    "train_bpe": "gpt2kit.tokenizer",
    "PrepareConfig": "gpt2kit.data",
    "prepare": "gpt2kit.data",
    "load_prepared": "gpt2kit.data",
    "TrainConfig": "gpt2kit.training",
    "TrainSummary": "gpt2kit.training",
    "train": "gpt2kit.training",
    "Generator": "gpt2kit.generate",
    "evaluate_text": "gpt2kit.eval",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpt2kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
