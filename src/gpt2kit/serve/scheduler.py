"""Continuous batching: one thread owns the model and a `DecodeEngine`, and serves every request.

The HTTP side turns a request into `Job`s (one per choice) and `submit`s them; the scheduler
thread loops: it drops jobs whose client went away or gave up, admits waiting jobs into free
slots (between decode steps, while the others are mid-generation), runs one batched step for
every busy slot, and hands each job its new text and, at its end, its `Result`, through the
job's `sink` (the HTTP side makes that a thread-safe put into an asyncio queue). Each job keeps
its own sampling controls, stop strings and seeded generator (the engine's slots), so what it
generates does not depend on the other jobs in the batch.

The queue is bounded: `submit` refuses (`QueueFull`) when the jobs running and waiting would
exceed `max_batch + max_queue`, and the HTTP side answers 429 with Retry-After.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gpt2kit.generate.engine import DecodeEngine, Finished, Request, TokenLogprob
from gpt2kit.generate.params import GenerationParams
from gpt2kit.model import GPT2
from gpt2kit.serve.metrics import Metrics
from gpt2kit.tokenizer import Tokenizer


class QueueFull(Exception):
    """The scheduler holds as many jobs as it may; try again later."""


@dataclass
class Update:
    """New streamed output of choice `index`: text (held back at an unfinished character or a
    possible stop string), the tokens read since the last update and their log-probabilities.
    A job that scores its prompt first gets an update with no text carrying the scores."""

    index: int
    text: str
    tokens: list[int]
    logprobs: list[TokenLogprob] | None
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class Result:
    """The end of choice `index`: its text (cut before a stop string), its tokens, why it
    ended (`stop`: EOS or a stop string; `length`), the log-probabilities of its tokens and of
    its prompt's (entry 0, the first prompt token, is None) when asked for, and, for a streamed
    job, the tokens and log-probabilities not sent in an `Update` yet."""

    index: int
    text: str
    tokens: list[int]
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    unsent: int = 0  # how many of the last `tokens` no `Update` carried


@dataclass
class Failure:
    """Choice `index` could not be decoded (a bug, reported as a server error)."""

    index: int
    message: str


Event = Update | Result | Failure


@dataclass(eq=False)
class Job:
    """One sequence to decode: a prompt, its controls (None: generate nothing, only score the
    prompt, as `max_tokens: 0` asks), its seed, how many alternatives to give with each
    token's log-probability (None: none), whether to score the prompt's tokens too, whether
    to stream, and `sink`, called on the scheduler thread with each `Event`."""

    index: int
    prompt_ids: Sequence[int]
    params: GenerationParams | None
    sink: Callable[[Event], None]
    seed: int | None = None
    logprobs: int | None = None
    score_prompt: bool = False
    stream: bool = False
    cancelled: bool = False  # set by the HTTP side when the client goes away or times out
    arrived: float = field(default_factory=time.perf_counter)
    slot: int | None = None
    sent: int = 0  # tokens handed out in updates
    prompt_logprobs: list[TokenLogprob | None] | None = None
    first_token: bool = False

    def cancel(self) -> None:
        """Drop this job: the scheduler frees its slot (or its place in the queue) at its next
        step and delivers nothing more."""
        self.cancelled = True


@torch.inference_mode()
def prompt_logprobs(model: GPT2, ids: Sequence[int], k: int) -> list[TokenLogprob | None]:
    """Each prompt token's log-probability given the tokens before it, with the `k` most likely
    tokens there, from one log-softmax of the model's logits (one forward pass over the whole
    prompt, as `gpt2kit eval`'s scorer runs); the first token has no context: None."""
    if not ids:
        return []
    device = model.transformer.wte.weight.device
    x = torch.tensor([list(ids)], device=device)  # (1, T)
    lp = model(x)[0, :-1].float().log_softmax(dim=-1)  # (T-1, V): position t predicts t+1
    target = x[0, 1:]
    chosen = lp.gather(1, target.unsqueeze(1)).squeeze(1).tolist()
    if k:
        top_values, top_ids = (t.tolist() for t in lp.topk(k, dim=-1))
    else:
        top_values = top_ids = [[] for _ in chosen]
    out: list[TokenLogprob | None] = [None]
    for i, tok in enumerate(target.tolist()):
        out.append(TokenLogprob(tok, chosen[i], list(zip(top_ids[i], top_values[i], strict=True))))
    return out


class Scheduler:
    """The thread that owns the model: `max_batch` slots, at most `max_queue` jobs waiting.

    `start` it, `submit` jobs from any thread, `stop` it at shutdown. `running` and `waiting`
    count jobs; `alive` says whether the thread runs.
    """

    def __init__(
        self,
        model: GPT2,
        tokenizer: Tokenizer,
        max_batch: int,
        max_queue: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.engine = DecodeEngine(model, tokenizer, max_batch)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.metrics = metrics
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: dict[int, Job] = {}  # slot -> job
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> int:
        """Jobs being decoded."""
        return len(self._active)

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot."""
        return len(self._waiting)

    @property
    def capacity(self) -> int:
        """The most jobs it holds at once, running and waiting."""
        return self.max_batch + self.max_queue

    @property
    def alive(self) -> bool:
        """Whether the scheduler thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread = threading.Thread(target=self._loop, name="gpt2kit-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current step; jobs still held get nothing more."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue `jobs` (all or none); raises `QueueFull` when they do not fit."""
        with self._cond:
            if len(self._active) + len(self._waiting) + len(jobs) > self.capacity:
                raise QueueFull
            self._waiting.extend(jobs)
            self._cond.notify_all()

    def wake(self) -> None:
        """Have the thread look at its jobs now (a job was cancelled)."""
        with self._cond:
            self._cond.notify_all()

    # -- the thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._active or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                free = len(self.engine.free_slots)
                admit: list[Job] = []
                while self._waiting and len(admit) < free:
                    job = self._waiting.popleft()
                    if not job.cancelled:
                        admit.append(job)
                # Cancelled jobs still waiting leave the queue now, not when their turn comes.
                if any(j.cancelled for j in self._waiting):
                    self._waiting = collections.deque(j for j in self._waiting if not j.cancelled)
            try:
                self._retire_cancelled()
                self._admit(admit)
                if self._active:
                    self._step()
            except Exception:  # a bug: fail the jobs it concerns, keep serving the others
                message = traceback.format_exc()
                for job in {id(j): j for j in [*admit, *self._active.values()]}.values():
                    job.sink(Failure(job.index, message))
                self._active.clear()
                self.engine.reset()

    def _retire_cancelled(self) -> None:
        for slot, job in list(self._active.items()):
            if job.cancelled:
                self.engine.cancel(slot)
                del self._active[slot]

    def _admit(self, jobs: list[Job]) -> None:
        requests, admitted = [], []
        for job in jobs:
            if job.score_prompt:
                job.prompt_logprobs = prompt_logprobs(self.model, job.prompt_ids, job.logprobs or 0)
            if job.params is None:  # max_tokens 0: the prompt's scores are the whole answer
                job.sink(Result(job.index, "", [], "length", [], job.prompt_logprobs))
                continue
            if job.stream and job.score_prompt:
                job.sink(Update(job.index, "", [], [], job.prompt_logprobs))
            requests.append(Request(job.prompt_ids, job.params, job.seed, job.stream, job.logprobs))
            admitted.append(job)
        for slot, job in zip(self.engine.admit_many(requests), admitted, strict=True):
            job.slot = slot
            self._active[slot] = job

    def _step(self) -> None:
        out = self.engine.step()
        now = time.perf_counter()
        generated = 0
        for job in self._active.values():  # every busy slot chose a token this step
            generated += 1
            if not job.first_token:
                job.first_token = True
                if self.metrics is not None:
                    self.metrics.ttft.observe(now - job.arrived)
        if self.metrics is not None:
            self.metrics.generated_tokens.inc(generated)
        finished = {f.slot: f for f in out.finished}
        for slot, job in list(self._active.items()):
            done = finished.get(slot)
            if job.stream and done is None:
                ids, logprobs = self.engine.progress(slot)
                piece = out.text.get(slot, "")
                if piece or len(ids) > job.sent:
                    lps = None if logprobs is None else logprobs[job.sent : len(ids)]
                    job.sink(Update(job.index, piece, ids[job.sent :], lps))
                    job.sent = len(ids)
            if done is not None:
                del self._active[slot]
                job.sink(self._result(job, done, out.text.get(slot, "")))

    def _result(self, job: Job, done: Finished, last_piece: str) -> Result:
        result = Result(
            index=job.index,
            text=done.text,
            tokens=done.token_ids,
            finish_reason="length" if done.finish_reason == "length" else "stop",
            logprobs=done.logprobs,
            prompt_logprobs=job.prompt_logprobs,
            unsent=len(done.token_ids) - job.sent,
        )
        if job.stream and last_piece:  # the text not streamed yet comes as one last update
            unsent = done.token_ids[job.sent :]
            lps = None if done.logprobs is None else done.logprobs[job.sent :]
            job.sink(Update(job.index, last_piece, unsent, lps))
            job.sent, result.unsent = len(done.token_ids), 0
        return result
