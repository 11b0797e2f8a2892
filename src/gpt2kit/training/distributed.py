"""Training on several processes, GPUs and machines, launched by `torchrun`: the process group,
DDP or FSDP2, and the few collectives the loop needs, so that the loop still reads like the
algorithm.

`torchrun` starts one process per device and tells each its place through environment variables
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, ...); `launched` joins the process group they
describe (NCCL on CUDA, gloo on the CPU) and leaves it at the end. Without them (a plain
`gpt2kit train`) everything here is a no-op and training runs exactly as it always has.

What each rank does differently is decided here:

- rank 0 alone prints, shows progress, writes metrics, checkpoints, `best/` and `final/`; the
  other ranks' standard output goes to /dev/null (their errors still reach standard error);
- `Parallel.distribute` wraps the model: DDP keeps a full replica per process and all-reduces
  gradients, FSDP2 (`fully_shard`, per block and at the root) shards parameters, gradients and
  AdamW's state; `auto` picks DDP when a replica fits the device's memory;
- `Parallel.accumulating` skips the gradient all-reduce on every micro-batch but the last;
- checkpoints hold the full state in the single-process format (weights, AdamW state keyed
  by parameter index, as `optimizer.state_dict()` gives it), gathered on rank 0, plus every
  rank's random state; any number of processes, or one, resumes from them;
- a stop (a signal to any rank, the time budget) is agreed on by all ranks at a step boundary,
  so they stop on the same step and none waits for another that has left.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from gpt2kit.errors import UserError
from gpt2kit.model import GPT2
from gpt2kit.runtime import free_memory
from gpt2kit.training.checkpoint import LoadedCheckpoint
from gpt2kit.training.signals import StopSignals

T = TypeVar("T")

# The temporary config file that `gpt2kit train --nproc` hands to the ranks it starts.
LAUNCH_CONFIG = "GPT2KIT_LAUNCH_CONFIG"


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its
    environment variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class Parallel:
    """This process's place in the job and how the model is spread over the processes.

    `mode` is `none` (one process), `ddp` or `fsdp` once `distribute` has run. The default
    `Parallel()` is a single process: every method then does what one process needs.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    mode: str = "none"
    _model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        """Whether there are several processes (then every rank must join each collective)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that prints and writes."""
        return self.rank == 0

    # ----------------------------------------------------------------------------------------
    # before the model: the device, the run folder, the data

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (`LOCAL_RANK`) on CUDA."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def from_main(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` computed on rank 0 only and sent to every rank (for what changes files,
        such as applying --resume to the run folder, or what must be the same everywhere)."""
        if not self.distributed:
            return fn(*args)
        box = [fn(*args) if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (preparing the data cache, downloading a model), the
        others after it, finding its results in place."""
        if self.distributed and not self.is_main:
            dist.barrier()
        yield
        if self.distributed and self.is_main:
            dist.barrier()

    # ----------------------------------------------------------------------------------------
    # the model

    def distribute(
        self, model: GPT2, mode: str, replica_bytes: int, device: torch.device, seed: int
    ) -> str:
        """Spread `model` over the processes before the optimizer sees its parameters: `fsdp`
        shards it in place (`fully_shard` on each block, then the root); `ddp` is applied to
        the module that steps (`wrap`). `auto` is DDP when a replica's training step
        (`replica_bytes`) fits this rank's share of the device memory, else FSDP; always DDP
        for a model with frozen parameters (LoRA), which FSDP here does not shard. Ranks other
        than 0 then draw dropout from their own seed. Returns a note for the banner."""
        if not self.distributed:
            return "1 process"
        if mode == "auto" and any(not p.requires_grad for p in model.parameters()):
            mode, why = "ddp", "auto: LoRA adapters train, the base is frozen"
        elif mode == "auto":
            fits = self.from_main(lambda: replica_bytes <= self._memory_per_rank(device))
            mode = "ddp" if fits else "fsdp"  # rank 0 decides: free RAM differs between ranks
            why = f"auto: {'a replica fits' if mode == 'ddp' else 'a replica does not fit'}"
        else:
            why = f"--parallel {mode}"
        self.mode, self._model = mode, model
        if mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh

            fully_shard = _fully_shard()
            mesh = init_device_mesh(device.type, (self.world_size,))
            for block in model.transformer.h:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        if not self.is_main:  # rank 0 keeps the single-process stream
            torch.manual_seed(seed + 1_000_003 * self.rank)
        name = "DDP" if mode == "ddp" else "FSDP2"
        return f"{self.world_size} processes, {name} ({why})"

    def _memory_per_rank(self, device: torch.device) -> float:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[1]
        free = free_memory(device)
        return float("inf") if free is None else free / self.local_world_size

    def wrap(self, step_model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to step: under DDP, `step_model` in `DistributedDataParallel`."""
        if self.mode != "ddp":
            return step_model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(step_model, device_ids=ids)

    @contextlib.contextmanager
    def accumulating(self, step_model: torch.nn.Module, last: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: gradients are reduced across ranks
        only on the `last` micro-batch of a step (DDP `no_sync`, FSDP2
        `set_requires_gradient_sync`); the others only accumulate locally."""
        if self.mode == "ddp" and not last:
            with step_model.no_sync():
                yield
            return
        if self.mode == "fsdp":
            self._model.set_requires_gradient_sync(last)
        yield

    # ----------------------------------------------------------------------------------------
    # in the loop

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of `value` over the ranks (itself with one process): the global loss."""
        if not self.distributed:
            return value
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def full(self, value: torch.Tensor) -> torch.Tensor:
        """A plain tensor from what may be an FSDP2 DTensor (the gradient norm)."""
        return value.full_tensor() if hasattr(value, "full_tensor") else value

    def agree_stop(self, signals: StopSignals, out_of_time: bool, device: torch.device) -> bool:
        """At a step boundary: settle the stop signals and the time budget over all ranks, so
        that a SIGTERM to any one of them (or torchrun's to all) stops every rank after the
        same step. Sets `signals.received`; returns whether the time budget is spent."""
        arrived = signals.arrived or 0
        if self.distributed:
            flags = torch.tensor([arrived, int(out_of_time)], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            arrived, out_of_time = flags.tolist()  # one read back (on NCCL, one sync)
            out_of_time = bool(out_of_time)
        signals.received = arrived or None
        return out_of_time

    # ----------------------------------------------------------------------------------------
    # what is saved

    def full_model(self, model: GPT2) -> GPT2 | None:
        """The whole model on rank 0 (gathered from the shards under FSDP), None elsewhere.
        Every rank must call it."""
        if self.mode != "fsdp":
            return model if self.is_main else None
        full = {}
        for name, tensor in model.state_dict().items():
            whole = self.full(tensor.detach())
            if self.is_main:
                full[name] = whole.cpu()
        if not self.is_main:
            return None
        with torch.device("meta"):
            plain = GPT2(model.config)
        plain.load_state_dict(full, assign=True)
        if model.config.tie_word_embeddings:
            plain.lm_head.weight = plain.transformer.wte.weight
        return plain

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """The optimizer's state as one process would have it (`optimizer.state_dict()`),
        gathered on rank 0; None elsewhere. Every rank must call it."""
        state = optimizer.state_dict()
        if self.mode != "fsdp":
            return state if self.is_main else None
        for index in sorted(state["state"]):  # new dicts: state_dict() shares the live ones
            per_param = state["state"][index]
            state["state"][index] = {k: self.full(per_param[k]).cpu() for k in sorted(per_param)}
        return state if self.is_main else None

    def gather_rng(self) -> list[dict]:
        """Every rank's random state (CPU, and CUDA for its device), in rank order."""
        mine = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            mine["cuda"] = torch.cuda.get_rng_state()
        if not self.distributed:
            return [mine]
        every: list[Any] = [None] * self.world_size
        dist.all_gather_object(every, mine)
        return every

    def checkpoint_parts(
        self, model: GPT2, optimizer: torch.optim.Optimizer
    ) -> tuple[GPT2, dict, list[dict]] | None:
        """What a checkpoint of a distributed run holds, on rank 0: the whole model, the
        optimizer state in the single-process format and every rank's random state; None on
        the other ranks (which must call it too)."""
        parts = (self.full_model(model), self.full_optimizer_state(optimizer), self.gather_rng())
        return parts if self.is_main else None

    # ----------------------------------------------------------------------------------------
    # what is resumed

    def adapt_resumed(
        self, resumed: LoadedCheckpoint, optimizer: torch.optim.Optimizer, seed: int
    ) -> None:
        """Make a checkpoint's state this rank's: its own random state when the world size is
        the one that saved it (else rank 0 takes the saved main state and the others a fresh
        seed), and the AdamW state cut to this rank's shards under FSDP."""
        saved = resumed.rng_scaler
        ranks = saved.get("ranks")
        if not self.is_main:  # rank 0 takes the saved main state, "rng", which is its own
            if ranks and len(ranks) == self.world_size:
                mine = ranks[self.rank]
                saved["rng"] = {"cpu": mine["cpu"]}
                if "cuda" in mine and torch.cuda.is_available():
                    torch.cuda.set_rng_state(mine["cuda"], self.local_rank)
            else:
                fresh = torch.Generator().manual_seed(seed + 1_000_003 * self.rank)
                saved["rng"] = {"cpu": fresh.get_state()}
        if self.mode == "fsdp":
            resumed.optimizer_state = self._sharded_optimizer_state(
                resumed.optimizer_state, optimizer
            )

    def _sharded_optimizer_state(self, state: dict, optimizer: torch.optim.Optimizer) -> dict:
        """A single-process optimizer state with each tensor cut to this rank's shard of its
        parameter (every rank read the same file, so no communication is needed)."""
        DTensor, distribute_tensor = _dtensor_api()
        # Every rank holds the whole value: no scatter from rank 0 is needed (torch 2.7+).
        no_source = "src_data_rank" in inspect.signature(distribute_tensor).parameters
        extra = {"src_data_rank": None} if no_source else {}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, per_param in state["state"].items():
            p = params[int(index)]
            if not isinstance(p, DTensor):
                continue
            for key, value in per_param.items():
                if key != "step" and value.shape == p.shape:
                    per_param[key] = distribute_tensor(
                        value.to(p.device), p.device_mesh, p.placements, **extra
                    )
        return state


def _fully_shard() -> Callable[..., Any]:
    """FSDP2's `fully_shard`: public in `torch.distributed.fsdp` from torch 2.6, in
    `torch.distributed._composable.fsdp` before (the project supports torch 2.4+)."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def _dtensor_api() -> tuple[type, Callable[..., Any]]:
    """`DTensor` and `distribute_tensor`: public in `torch.distributed.tensor` from torch 2.5,
    in `torch.distributed._tensor` before."""
    try:
        from torch.distributed.tensor import DTensor, distribute_tensor
    except ImportError:
        from torch.distributed._tensor import DTensor, distribute_tensor
    return DTensor, distribute_tensor


@contextlib.contextmanager
def launched(device_option: str) -> Iterator[Parallel]:
    """The process group of a torchrun job, joined for the block and left after it, or a
    single process when not launched by torchrun. Backend: NCCL when training on CUDA, else
    gloo. Ranks other than 0 print nothing. On the way out (a normal end, a stop by a signal)
    the ranks wait for each other, so that none leaves while rank 0 still writes, and from then
    on SIGTERM is ignored (the process is ending)."""
    if not under_torchrun() or dist.is_initialized():
        yield Parallel()
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cuda = torch.cuda.is_available() and not device_option.startswith(("cpu", "mps"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"This is process {local_rank + 1} on a machine with {torch.cuda.device_count()} GPU(s): start one process per GPU (torchrun --nproc-per-node), or train with --device cpu."
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    parallel = Parallel(rank, world, local_rank, local_world)
    if LAUNCH_CONFIG in os.environ:  # every rank read its options before joining the group
        dist.barrier()
        if rank == 0:
            Path(os.environ[LAUNCH_CONFIG]).unlink(missing_ok=True)
    quiet = open(os.devnull, "w") if rank else None  # noqa: SIM115 - closed below
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            yield parallel
            if parallel.distributed:
                # When a rank ends with a non-zero status (143 after a SIGTERM), torchrun sends
                # SIGTERM to those still running: this one is ending too, with its own status.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                dist.barrier()
    finally:
        dist.destroy_process_group()
        if quiet:
            quiet.close()
