"""Training: fine-tune a GPT-2 or train one from scratch, with exact crash-safe resume.

`train(TrainConfig(...))` is the whole job and `gpt2kit train` (`command.run_train`) a thin
layer over it. Where things are:

- `config.py`: `TrainConfig`, its options in groups (model, optimization, length, evaluation,
  checkpoints and metrics, runtime).
- `setup.py`: the run folder, the start point (resume, scratch, pretrained), the data, the
  memory check, the optimizer, the --max-time step budget.
- `loop.py`: `train` and the step loop; the components that act between steps.
- `schedule.py`: the learning rate as a function of the step.
- `checkpoint.py`: checkpoints on disk, the resume state (`TrainState`), the `Checkpointer`.
- `evaluator.py`: validation, samples, best model and early stopping.
- `metrics.py`: metric sinks (`metrics.jsonl`, TensorBoard, `loss.png`).
- `signals.py`: SIGINT/SIGTERM as a clean stop; `summary.py`: `TrainSummary`.
"""

from __future__ import annotations

import sys
import types

from gpt2kit.train.checkpoint import Checkpoint, TrainState
from gpt2kit.train.command import run_train
from gpt2kit.train.config import TrainConfig
from gpt2kit.train.loop import train
from gpt2kit.train.schedule import lr_at
from gpt2kit.train.setup import check_memory, training_memory_bytes
from gpt2kit.train.summary import TrainSummary

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainState",
    "TrainSummary",
    "check_memory",
    "lr_at",
    "run_train",
    "train",
    "training_memory_bytes",
]


class _CallablePackage(types.ModuleType):
    """`gpt2kit.train` is both this package and the function `train`: once the package is
    imported, Python binds the name `gpt2kit.train` to it, so calling it must train."""

    def __call__(self, config: TrainConfig) -> TrainSummary:
        return train(config)


sys.modules[__name__].__class__ = _CallablePackage
