"""`gpt2kit train`: the command over `train` (its options are `TrainConfig`)."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace

import torch
import yaml

from gpt2kit.config import to_dict
from gpt2kit.errors import UserError
from gpt2kit.training.config import TrainConfig
from gpt2kit.training.distributed import LAUNCH_CONFIG, under_torchrun
from gpt2kit.training.loop import train

__all__ = ["TrainConfig", "run_train"]


def run_train(config: TrainConfig) -> int:
    """Fine-tune a GPT-2 (--init gpt2, a folder, a run) or train one from scratch (--init scratch).

    SOURCE is text (files, folders, .csv, .jsonl, ...; prepared and cached in RUN_DIR/data) or a
    DATA_DIR from `gpt2kit prepare`; with no SOURCE, the bundled sample corpus. Running the same
    command again resumes from the latest complete checkpoint. Exit status: 0 when done, 130/143
    when stopped by SIGINT/SIGTERM (after saving a checkpoint), 1 after repeated non-finite losses.
    Several processes: `torchrun --nproc-per-node N -m gpt2kit train ...` (also across machines),
    or `--nproc N` on one machine.
    """
    if config.runtime.nproc and not under_torchrun():
        relaunch_under_torchrun(config, config.runtime.nproc)  # does not return
    return train(config).exit_code


def relaunch_under_torchrun(config: TrainConfig, nproc: int) -> None:
    """Replace this process with `torchrun --standalone --nproc-per-node NPROC -m gpt2kit train`
    of the same options (passed as a temporary YAML config file, which rank 0 deletes once
    every rank has read it), so that signals to this process reach torchrun, and through it
    every rank."""
    gpus = torch.cuda.device_count() if not config.runtime.device.startswith(("cpu", "mps")) else 0
    if 0 < gpus < nproc:
        raise UserError(
            f"--nproc {nproc} asks for more processes than this machine's {gpus} GPU(s): one process drives one GPU. Use --nproc {gpus}, or --device cpu."
        )
    single = replace(config, runtime=replace(config.runtime, nproc=None))
    with tempfile.NamedTemporaryFile(
        "w", prefix="gpt2kit-train-", suffix=".yaml", delete=False
    ) as f:
        yaml.safe_dump(to_dict(single), f, sort_keys=False)
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc), "-m", "gpt2kit", "train", "--config", f.name,
    ]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, LAUNCH_CONFIG: f.name})
