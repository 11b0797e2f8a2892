"""The GPT-2 model: its config and presets (`config.py`), the module (`gpt2.py`) and the KV
cache that decoding writes into (`kv_cache.py`). Pure PyTorch, no I/O: Hugging Face folders are
read and written by `gpt2kit.formats.hf`.
"""

from gpt2kit.model.config import ACTIVATIONS, PRESETS, GPT2Config, preset_config
from gpt2kit.model.gpt2 import GPT2
from gpt2kit.model.kv_cache import KVCache

__all__ = ["ACTIVATIONS", "GPT2", "PRESETS", "GPT2Config", "KVCache", "preset_config"]
