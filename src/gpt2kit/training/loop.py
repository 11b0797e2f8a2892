"""The training loop: `train(config)` is setup, the step loop, then the final model and summary.

A step reads like the algorithm: the learning rate is a pure function of the step, a step is
`grad_accum` micro-batches, then clip, a finiteness check, step and `zero_grad`; the loss and
the gradient norm are read back once per step. After it, each component decides on its own
cadence: the progress log, the non-finite guard, the evaluator (and with it the best model and
early stopping), the checkpointer, the time budget and the stop signals. The order of the
training blocks is a pure function of (seed, epoch), so a checkpoint only needs the step and
the data cursor to continue on exactly the same batches.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from gpt2kit.errors import UserError
from gpt2kit.training.checkpoint import Checkpointer, TrainState, export_model
from gpt2kit.training.config import TrainConfig
from gpt2kit.training.distributed import launched
from gpt2kit.training.evaluator import Evaluator, without_samples
from gpt2kit.training.metrics import Metrics
from gpt2kit.training.schedule import lr_at
from gpt2kit.training.setup import Session, setup
from gpt2kit.training.signals import StopSignals
from gpt2kit.training.summary import TrainSummary, format_summary

Stop = tuple[str, int]  # how the run stopped ("completed", "SIGINT", ...) and its exit status


class Clock:
    """Training time: this invocation's (for --max-time) and the whole run's (earlier
    invocations of a resumed run included)."""

    def __init__(self, seconds_before: float, max_time: float | None) -> None:
        self.start, self.seconds_before, self.max_time = time.time(), seconds_before, max_time

    def train_seconds(self, now: float | None = None) -> float:
        """Seconds trained by the whole run up to `now` (default: now)."""
        return self.seconds_before + (time.time() if now is None else now) - self.start

    def out_of_time(self) -> bool:
        """Whether this invocation's --max-time budget is spent."""
        return self.max_time is not None and time.time() - self.start >= self.max_time * 60


class Progress:
    """The progress bar and, every `log_every` steps and at the last, a `train` record with the
    loss, learning rate, gradient norm and throughput since the previous one."""

    def __init__(
        self, session: Session, metrics: Metrics, clock: Clock, log_every: int, show: bool
    ) -> None:
        from tqdm.auto import tqdm

        self.s, self.metrics, self.clock, self.log_every = session, metrics, clock, log_every
        total = session.plan.total_steps
        self.bar = tqdm(
            total=total,
            initial=min(session.state.step, total),
            unit="step",
            dynamic_ncols=True,
            disable=not show or None,
            file=sys.stderr,
        )
        self.t_window, self.tokens_window = time.time(), 0

    def say(self, message: str) -> None:
        """Print a line without breaking the bar."""
        self.bar.write(message)

    def step_done(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        """Advance the bar by one step, and log the step when it is on the cadence."""
        self.tokens_window += self.s.plan.tokens_per_step
        self.bar.update(1)
        if step % self.log_every and step != self.s.plan.total_steps:
            return
        now = time.time()
        tps = self.tokens_window / max(1e-9, now - self.t_window)
        self.t_window, self.tokens_window = now, 0
        self.metrics.write(
            {
                "type": "train",
                "step": step,
                "tokens_seen": self.s.state.tokens_seen,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tps,
                "epoch": round(self.s.sampler.epoch_progress, 4),
                "elapsed_s": round(self.clock.train_seconds(now), 3),
            }
        )
        self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class NonFiniteGuard:
    """Steps whose loss or gradient norm is not finite are skipped (logged as `skipped`);
    `LIMIT` of them in a row stop the run."""

    LIMIT = 5

    def __init__(self, metrics: Metrics, progress: Progress) -> None:
        self.metrics, self.progress, self.in_a_row = metrics, progress, 0

    def check(self, step: int, finite: bool, loss: float, grad_norm: float) -> None:
        """Note whether `step` was finite; log and say it when it was not."""
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.metrics.write(
            {
                "type": "skipped",
                "step": step,
                "reason": "non-finite loss or gradient norm",
                "loss": str(loss),
                "grad_norm": str(grad_norm),
            }
        )
        self.progress.say(
            f"step {step}: non-finite loss ({loss}) or gradient norm ({grad_norm}); the update was skipped."
        )

    @property
    def exhausted(self) -> bool:
        """Whether `LIMIT` steps in a row were not finite."""
        return self.in_a_row >= self.LIMIT


class Trainer:
    """The step loop over a `Session`, and the components that act between steps."""

    def __init__(self, session: Session) -> None:
        s = self.s = session
        c, self.state, self.plan = s.config, s.state, s.plan
        self.metrics = Metrics.open(s.run) if s.parallel.is_main else Metrics([])
        self.clock = Clock(self.state.train_seconds, c.length.max_time)
        show = c.progress and s.parallel.is_main
        self.progress = Progress(s, self.metrics, self.clock, c.output.log_every, show)
        self.guard = NonFiniteGuard(self.metrics, self.progress)
        self.evaluator = Evaluator(
            s.model,
            s.tokenizer,
            s.data.val,
            s.data.meta["val_chars"],
            self.plan.block_size,
            self.plan.batch_size,
            s.autocast,
            c.evaluation,
            c.runtime.seed,
            self.state,
            self.metrics,
            self.progress.say,
        )
        self.checkpointer = Checkpointer(
            s.run,
            s.model,
            s.tokenizer,
            s.optimizer,
            s.scaler,
            self.snapshot,
            c.output.save_every,
            c.output.keep_last,
            (lambda: s.parallel.checkpoint_parts(s.model, s.optimizer))
            if s.parallel.distributed
            else None,
        )

    def snapshot(self) -> TrainState:
        """The state to checkpoint now: the data position and the time trained filled in."""
        sampler = self.s.sampler
        return replace(
            self.state,
            epoch=sampler.epoch,
            cursor=sampler.cursor,
            train_seconds=self.clock.train_seconds(),
        )

    def run(self) -> Stop:
        """Step until the last step or a stop; returns how it stopped and the exit status."""
        finished = False
        try:
            with StopSignals(quiet=not self.s.parallel.is_main) as signals:
                self.evaluator.run_base(self.s.config.init)  # fine-tuning: the starting model
                stop = None
                while stop is None and self.state.step < self.plan.total_steps:
                    stop = self.one_step(signals)
            finished = True
            return stop or ("completed", 0)
        except torch.cuda.OutOfMemoryError:
            b, g = self.plan.batch_size, self.plan.grad_accum
            raise UserError(
                f"The GPU ran out of memory with --batch-size {b} x --block-size {self.plan.block_size}. "
                f"Try --batch-size {max(1, b // 2)} --grad-accum {g * 2} (same tokens per step), a smaller "
                "--block-size, or --precision bf16. The latest checkpoint is kept; rerun to resume."
            ) from None
        finally:
            self.progress.close()
            if not finished:  # else `finish` closes them, once summary.json is written
                self.metrics.close(finished)

    def one_step(self, signals: StopSignals) -> Stop | None:
        """Train one step, then let each component act on its cadence; a stop, or None."""
        plan, optim = self.plan, self.s.config.optim
        step = self.state.step
        lr = lr_at(step, plan.peak_lr, plan.warmup, plan.total_steps, optim.min_lr_ratio)
        loss, grad_norm, finite = self.train_step(lr)
        step = self.state.step = step + 1
        self.state.tokens_seen += plan.tokens_per_step
        self.guard.check(step, finite, loss, grad_norm)
        self.progress.step_done(step, loss, lr, grad_norm)
        return self.between_steps(step, signals)

    def train_step(self, lr: float) -> tuple[float, float, bool]:
        """One optimizer step at learning rate `lr`: `grad_accum` micro-batches, unscale, clip,
        step (skipped when the loss or gradient norm is not finite), zero_grad. Returns the
        loss, the gradient norm and whether both were finite: the one sync of the step."""
        s, accum = self.s, self.plan.grad_accum
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=s.device)
        for i in range(accum):
            x, y = s.sampler.next_batch()
            if s.device.type == "cuda":
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
            # gradients are reduced across processes on the last micro-batch only
            with s.parallel.accumulating(s.step_model, last=i == accum - 1):
                with s.autocast:
                    loss = s.step_model(x, y) / accum
                (s.scaler.scale(loss) if s.scaler else loss).backward()
            loss_sum += loss.detach()
        if s.scaler is not None:
            s.scaler.unscale_(s.optimizer)
        clip = s.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(
            s.model.parameters(), clip if clip > 0 else float("inf")
        )
        loss_sum, grad_norm = s.parallel.mean(loss_sum), s.parallel.full(grad_norm)  # global
        loss_value, norm_value = loss_sum.item(), grad_norm.item()  # the one sync per step
        finite = math.isfinite(loss_value) and (math.isfinite(norm_value) or s.scaler is not None)
        if s.scaler is not None:
            # The scaler skips the update itself when the (unscaled) gradients are not
            # finite, and must see step() + update() every step to stay consistent.
            s.scaler.step(s.optimizer)
            s.scaler.update()
        elif finite:
            s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value, finite

    def between_steps(self, step: int, signals: StopSignals) -> Stop | None:
        """After `step`: stop on repeated non-finite steps; evaluate (a new best is exported to
        `best/` and checkpointed); on a signal, the time budget spent or early stopping, save a
        checkpoint and stop; else checkpoint on the cadence."""
        if self.guard.exhausted:
            self.progress.say(
                f"Stopping: {self.guard.in_a_row} steps in a row had a non-finite loss or gradient. Try a lower --lr (now {self.plan.peak_lr:g}) or --precision fp32/bf16."
            )
            return "non_finite", 1
        out_of_time = self.s.parallel.agree_stop(signals, self.clock.out_of_time(), self.s.device)
        is_last = step == self.plan.total_steps
        if not signals.received and self.evaluator.maybe_run(step, final=is_last or out_of_time):
            self.export(self.s.run.best)
            self.checkpointer.save(step)
        if signals.received:
            self.checkpointer.save(step)
            return signals.name, signals.exit_code
        self.checkpointer.maybe_save(step, final=is_last)
        if out_of_time and not is_last:
            self.checkpointer.save(step)
            self.progress.say(f"--max-time {self.clock.max_time:g} min reached at step {step}.")
            return "max_time", 0
        if self.evaluator.out_of_patience():
            self.checkpointer.save(step)
            self.progress.say(
                f"Early stopping at step {step}: no better validation loss in {self.evaluator.options.patience} evaluations."
            )
            return "early_stopping", 0
        return None

    def export(self, target: Path) -> Path | None:
        """Write the model as a Hugging Face folder at `target` (rank 0 of a distributed run,
        the whole model gathered from the shards under FSDP); the folder, or None."""
        model = self.s.parallel.full_model(self.s.model)
        return export_model(model, self.s.tokenizer, target) if model is not None else None

    def finish(self, stopped: str, exit_code: int, wall_start: float) -> TrainSummary:
        """Export the final model (unless stopped by a signal or non-finite steps), write
        `summary.json`, print the summary and return it."""
        s = self.s
        final = None
        if stopped in ("completed", "max_time", "early_stopping"):
            final = self.export(s.run.final)
        summary = TrainSummary(
            run_dir=str(s.run.path),
            steps=self.state.step,
            tokens_seen=self.state.tokens_seen,
            stopped=stopped,
            final_model=str(final) if final else None,
            best_model=str(s.run.best) if s.run.best.is_dir() else None,
            best_val_loss=self.state.best_val_loss,
            best_val_bpc=self.state.best_val_bpc,
            last_eval=without_samples(self.evaluator.last),
            train_seconds=round(self.clock.train_seconds(), 2),
            exit_code=exit_code,
            evals=[without_samples(e) for e in self.evaluator.history],
        )
        if s.parallel.is_main:
            summary.save()
        self.metrics.close(True)  # after summary.json: the report says how the run ended
        print(format_summary(summary, time.time() - wall_start))
        return summary


def train(config: TrainConfig) -> TrainSummary:
    """Run training as configured and return its summary.

    Resumes from the latest complete checkpoint of `config.out` unless `resume="never"`.
    The run folder receives `config.yaml`, `metrics.jsonl`, `checkpoints/`, `final/`, `best/`
    and, when matplotlib is installed, `loss.png`.
    """
    t_start = time.time()
    with launched(config.runtime.device) as parallel:  # a torchrun job's process group, if any
        trainer = Trainer(setup(config.with_defaults(), t_start, parallel))
        stopped, exit_code = trainer.run()
        return trainer.finish(stopped, exit_code, t_start)
