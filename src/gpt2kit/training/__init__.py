"""Training: fine-tune a GPT-2 or train one from scratch, with exact crash-safe resume.

`train(TrainConfig(...))` (also `gpt2kit.train`) is the whole job and `gpt2kit train` (`command.run_train`) a thin
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
- `distributed.py`: many processes through torchrun (DDP or FSDP2, rank 0 writes).
"""

from __future__ import annotations

from gpt2kit.training.checkpoint import Checkpoint, TrainState
from gpt2kit.training.command import run_train
from gpt2kit.training.config import TrainConfig
from gpt2kit.training.loop import train
from gpt2kit.training.schedule import lr_at
from gpt2kit.training.setup import check_memory, training_memory_bytes
from gpt2kit.training.summary import TrainSummary

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
