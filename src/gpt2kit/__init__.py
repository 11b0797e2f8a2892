"""gpt2kit: turn your own text into a GPT-2 text generator.

The Python API mirrors the command line: `load_model`/`save_model` for Hugging Face-format
folders, `Generator` for generation, and one function per command.
"""

__version__ = "0.1.0"

from gpt2kit.generate import Generator
from gpt2kit.hf import load_model, save_model
from gpt2kit.model import GPT2, GPT2Config, KVCache, preset_config
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer, load_tokenizer, train_bpe

__all__ = [
    "GPT2",
    "GPT2Config",
    "Generator",
    "KVCache",
    "Tokenizer",
    "__version__",
    "gpt2_tokenizer",
    "load_model",
    "load_tokenizer",
    "preset_config",
    "save_model",
    "train_bpe",
]
