"""Text generation: the decoding engine, the `Generator` API and `gpt2kit generate`.

Modules, each importing only the ones above it:

- `params.py`: `GenerationParams`, every decoding control with its default, validated.
- `processors.py`: the logits processors (repetition penalty, n-gram bans, temperature,
  top-k, top-p, min-p) in Hugging Face's order, and seeded sampling (`sample_seed`).
- `output.py`: one sample's tokens, EOS and stop-string checks, and streamed text.
- `runner.py`: the model over the slots' KV cache (prompt encoding, the batched one-token
  step, the CUDA graph).
- `engine.py`: `DecodeEngine`, a fixed number of slots that requests join (`admit`) and
  leave (`step` reports them) between steps, as a server needs.
- `generator.py`: `Generator`, a loaded model that continues prompts (`generate`, `stream`,
  `generate_ids`), with int8 weights on the CPU if asked.
- `prompts.py`: reading the prompts of the command (PROMPT, stdin, --prompts-file).
- `command.py`: `GenerateConfig` and `run_generate`, the `gpt2kit generate` command.
"""

from gpt2kit.generate.command import GenerateConfig, run_generate
from gpt2kit.generate.engine import DecodeEngine, Finished, Request, StepOutput
from gpt2kit.generate.generator import Completion, Generator
from gpt2kit.generate.params import GenerationParams

__all__ = [
    "Completion",
    "DecodeEngine",
    "Finished",
    "GenerateConfig",
    "GenerationParams",
    "Generator",
    "Request",
    "StepOutput",
    "run_generate",
]
