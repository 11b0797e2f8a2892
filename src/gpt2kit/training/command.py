"""`gpt2kit train`: the command over `train` (its options are `TrainConfig`)."""

from __future__ import annotations

from gpt2kit.training.config import TrainConfig
from gpt2kit.training.loop import train

__all__ = ["TrainConfig", "run_train"]


def run_train(config: TrainConfig) -> int:
    """Fine-tune a GPT-2 (--init gpt2, a folder, a run) or train one from scratch (--init scratch).

    SOURCE is text (files, folders, .csv, .jsonl, ...; prepared and cached in RUN_DIR/data) or a
    DATA_DIR from `gpt2kit prepare`; with no SOURCE, the bundled sample corpus. Running the same
    command again resumes from the latest complete checkpoint. Exit status: 0 when done, 130/143
    when stopped by SIGINT/SIGTERM (after saving a checkpoint), 1 after repeated non-finite losses.
    """
    return train(config).exit_code
