"""The scheduler thread without HTTP: jobs join and leave the engine between steps, the queue
is bounded, a cancelled job frees its row, a bug fails only the jobs it concerns."""

from __future__ import annotations

import threading
import time

import pytest

from gpt2kit.generate.params import GenerationParams
from gpt2kit.serve.scheduler import Failure, Job, QueueFull, Result, Scheduler, Update


class Inbox:
    """A job sink that records every event, thread-safely."""

    def __init__(self) -> None:
        self.events: list = []
        self.lock = threading.Lock()

    def __call__(self, event) -> None:
        with self.lock:
            self.events.append(event)

    def results(self) -> dict[int, Result]:
        return {e.index: e for e in self.events if isinstance(e, Result)}

    def wait(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len([e for e in self.events if isinstance(e, (Result, Failure))]) < count:
            assert time.monotonic() < deadline, self.events
            time.sleep(0.005)


@pytest.fixture
def scheduler(tiny):
    _, model, tokenizer, _ = tiny
    s = Scheduler(model, tokenizer, max_batch=4, max_queue=2)
    yield s
    s.stop()


def job(index, sink, tokens=8, **kw) -> Job:
    params = GenerationParams(max_new_tokens=tokens, temperature=0, ignore_eos=True)
    return Job(index=index, prompt_ids=[464, 2068, 7586], params=params, sink=sink, **kw)


def test_the_queue_holds_max_batch_plus_max_queue_jobs(scheduler):
    inbox = Inbox()
    scheduler.submit([job(i, inbox) for i in range(6)])  # not started: all wait
    assert scheduler.waiting == 6
    with pytest.raises(QueueFull):
        scheduler.submit([job(6, inbox)])
    scheduler.start()
    inbox.wait(6)
    assert scheduler.running == scheduler.waiting == 0
    assert {r.index for r in inbox.results().values()} == set(range(6))
    texts = {r.text for r in inbox.results().values()}
    assert len(texts) == 1  # the same prompt, greedy: the same text in every slot


def test_a_cancelled_job_leaves_its_row_or_the_queue(scheduler):
    inbox = Inbox()
    long = [job(i, inbox, tokens=100) for i in range(6)]
    scheduler.submit(long)
    long[5].cancel()  # still waiting
    scheduler.start()
    deadline = time.monotonic() + 10
    while scheduler.running < 4:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    long[0].cancel()  # being decoded
    scheduler.wake()
    inbox.wait(4)
    done = inbox.results()
    assert set(done) == {1, 2, 3, 4}
    assert scheduler.running == scheduler.waiting == 0


def test_streamed_jobs_get_updates_whose_text_adds_up(scheduler):
    inbox = Inbox()
    scheduler.start()
    scheduler.submit([job(0, inbox, tokens=12, stream=True, logprobs=1)])
    inbox.wait(1)
    updates = [e for e in inbox.events if isinstance(e, Update)]
    (result,) = inbox.results().values()
    assert len(updates) > 1
    assert "".join(u.text for u in updates) == result.text
    assert [t for u in updates for t in u.tokens] == result.tokens
    assert [lp.token for u in updates for lp in u.logprobs] == result.tokens


def test_a_bug_fails_the_jobs_running_and_the_scheduler_goes_on(scheduler, monkeypatch):
    inbox = Inbox()
    step = scheduler.engine.step
    calls = {"n": 0}

    def broken():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return step()

    monkeypatch.setattr(scheduler.engine, "step", broken)
    scheduler.start()
    scheduler.submit([job(0, inbox)])
    inbox.wait(1)
    (failure,) = inbox.events
    assert isinstance(failure, Failure) and "boom" in failure.message
    scheduler.submit([job(1, inbox)])
    inbox.wait(2)
    assert 1 in inbox.results() and scheduler.alive


def test_the_engine_records_the_logprobs_a_forward_over_the_whole_sequence_gives(tiny):
    """The engine's per-token log-probabilities (the server's `logprobs`) and the prompt's
    (`echo`) are those of one forward pass over prompt + completion."""
    import torch

    from gpt2kit.generate.engine import DecodeEngine, Request
    from gpt2kit.serve.scheduler import prompt_logprobs

    _, model, tokenizer, _ = tiny
    engine = DecodeEngine(model, tokenizer, 2)
    prompt = tokenizer.encode("The quick brown fox jumps")
    params = GenerationParams(max_new_tokens=10, temperature=0, ignore_eos=True)
    engine.admit_many([Request(prompt, params, logprobs=3), Request(prompt[:2], params)])
    done = {}
    while engine.busy:
        done.update({f.slot: f for f in engine.step().finished})
    assert done[1].logprobs is None  # not asked for
    mine = done[0]
    sequence = prompt + mine.token_ids
    with torch.no_grad():
        lp = model(torch.tensor([sequence]))[0].float().log_softmax(-1)  # (T, V)
    targets = torch.tensor(sequence[1:]).unsqueeze(1)
    expected = lp[:-1].gather(1, targets).squeeze(1)  # token t+1 given tokens ..t
    generated = torch.tensor([x.logprob for x in mine.logprobs])
    torch.testing.assert_close(generated, expected[len(prompt) - 1 :], atol=1e-4, rtol=0)
    for x in mine.logprobs:  # greedy: the chosen token is the top one, exactly
        assert len(x.top) == 3 and x.top[0] == (x.token, x.logprob)
    scored = prompt_logprobs(model, prompt, 2)
    assert scored[0] is None and [s.token for s in scored[1:]] == prompt[1:]
    torch.testing.assert_close(
        torch.tensor([s.logprob for s in scored[1:]]),
        expected[: len(prompt) - 1],
        atol=1e-5,
        rtol=0,
    )
