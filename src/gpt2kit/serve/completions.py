"""The OpenAI endpoints' logic, apart from HTTP routing: a request becomes jobs for the
scheduler, and their events become a `text_completion` / `chat.completion` object or a stream
of chunks (Server-Sent Events, `data: {json}\\n\\n`, ending with `data: [DONE]`).

Chat template. GPT-2 has no chat format, so a conversation is written as plain text:

    {system and developer messages, one paragraph each}\\n\\n
    User: {content}\\n
    Assistant: {content}\\n
    ...
    Assistant:

and the reply is what the model writes after the last `Assistant:`, ended by EOS, by
`\\nUser:` (the model starting the next turn; not returned) or by the caller's stop strings.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from gpt2kit.errors import UserError
from gpt2kit.generate.engine import TokenLogprob
from gpt2kit.generate.params import GenerationParams
from gpt2kit.generate.processors import new_seed, sample_seed
from gpt2kit.serve.errors import APIError, api_names
from gpt2kit.serve.metrics import Metrics
from gpt2kit.serve.protocol import ChatRequest, CompletionRequest, _Sampling
from gpt2kit.serve.scheduler import Event, Failure, Job, QueueFull, Result, Scheduler, Update
from gpt2kit.tokenizer import Tokenizer

CHAT_STOP = "\nUser:"
DISCONNECT_POLL = 0.5  # seconds between checks that the client is still there
RETRY_AFTER = "1"  # seconds a client told 429 should wait
# What a log-probability that is not a number becomes (JSON has no -inf), as vLLM does.
NOT_FINITE = -9999.0


@dataclass
class Prompt:
    """One prompt: its token ids and its text."""

    ids: list[int]
    text: str


class Cancelled(Exception):
    """The client went away; nothing is answered."""


def _finite(x: float) -> float:
    return x if math.isfinite(x) else NOT_FINITE


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes (the inverse of `bytes_to_unicode`)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenText:
    """A token id's text (decoded alone) and bytes, cached."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.text = lru_cache(maxsize=65536)(self._text)
        self.bytes = lru_cache(maxsize=65536)(self._bytes)
        self.label = lru_cache(maxsize=65536)(self._label)

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    @cached_property
    def byte_level(self) -> bool:
        """Whether tokens are spelled in GPT-2's byte-level alphabet (a BPE like GPT-2's)."""
        from tokenizers import decoders

        return isinstance(self.tokenizer.backend.decoder, decoders.ByteLevel)

    def _bytes(self, token: int) -> list[int]:
        piece = self.tokenizer.backend.id_to_token(token) or ""
        table = _byte_decoder()
        if self.byte_level and piece and all(c in table for c in piece):
            return [table[c] for c in piece]  # the token's own bytes, even part of a character
        return list(self.text(token).encode("utf-8"))

    def _label(self, token: int) -> str:
        """The token as the legacy `logprobs` names it: its text, or `bytes:\\xNN...` for a
        piece of a character (as OpenAI's API does), which no text can spell."""
        raw = bytes(self.bytes(token))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        return self.text(token)


class TextOffsets:
    """Where tokens start in their decoded text, in characters from `start`: a character that
    several byte tokens spell is counted once it is complete, so each of its tokens sits at
    its start (what `text_offset` indexes)."""

    def __init__(self, tokens: TokenText, start: int = 0) -> None:
        self.tokens, self.offset = tokens, start
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def next(self, token: int) -> int:
        """The offset of `token`, which follows the tokens already given."""
        offset = self.offset
        self.offset += len(self.decoder.decode(bytes(self.tokens.bytes(token))))
        return offset


class Service:
    """What the endpoints do, given the scheduler and the tokenizer: validate a request
    against the model and the limits, run it, and shape the answer.

    `model_name` is the id requests must name (or leave out); `max_tokens_limit` caps
    `max_tokens` (None: the context); `request_timeout` bounds each request in seconds.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        tokenizer: Tokenizer,
        model_name: str,
        n_ctx: int,
        *,
        max_tokens_limit: int | None = None,
        request_timeout: float = 600.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.max_tokens_limit = min(max_tokens_limit or n_ctx, n_ctx)
        self.request_timeout = request_timeout
        self.metrics = metrics
        self.created = int(time.time())
        self.tokens = TokenText(tokenizer)

    @cached_property
    def eos_token(self) -> str:
        """The end-of-text token's text."""
        return self.tokenizer.decode([self.tokenizer.eos_id])

    # -- validation

    def check_model(self, model: str | None) -> None:
        """A 404 unless `model` is ours (or not given)."""
        if model is not None and model != self.model_name:
            raise APIError(
                404,
                f"The model {model!r} does not exist; this server serves {self.model_name!r} "
                "(see GET /v1/models).",
                param="model",
                code="model_not_found",
            )

    def token_ids(self, ids: Sequence[int], param: str) -> list[int]:
        """`ids` if every one is a token of the vocabulary, else a 400."""
        vocab = self.tokenizer.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise APIError(
                400,
                f"Token id {bad[0]} is outside the vocabulary (0 to {vocab - 1}).",
                param=param,
            )
        return list(ids)

    def prompts(self, prompt: Any) -> list[Prompt]:
        """The prompts of a completion request (a string, strings, token ids or lists of ids)."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise APIError(400, "prompt must not be an empty list.", param="prompt")
        if isinstance(prompt[0], str):
            ids = self.tokenizer.encode_batch(list(prompt))
            return [Prompt(i, t) for i, t in zip(ids, prompt, strict=True)]
        lists = [prompt] if isinstance(prompt[0], int) else prompt
        return [Prompt(ids, self.tokenizer.decode(ids)) for ids in map(self._prompt_ids, lists)]

    def _prompt_ids(self, ids: Sequence[int]) -> list[int]:
        return self.token_ids(ids, "prompt")

    def params(
        self, req: _Sampling, max_tokens: int, extra_stops: Sequence[str] = ()
    ) -> GenerationParams | None:
        """The decoding controls of a request (None when it generates nothing)."""
        unsupported: list[tuple[str, str]] = []  # (field, why)
        if req.presence_penalty or req.frequency_penalty:
            field = "presence_penalty" if req.presence_penalty else "frequency_penalty"
            unsupported.append(
                (field, "presence_penalty and frequency_penalty are not supported (only 0); "
                 "use repetition_penalty (e.g. 1.2)")
            )  # fmt: skip
        if req.logit_bias:
            unsupported.append(("logit_bias", "logit_bias is not supported (only empty)"))
        if isinstance(req, CompletionRequest):
            if req.best_of is not None and req.best_of != req.n:
                unsupported.append(("best_of", "best_of is not supported (only equal to n)"))
            if req.suffix is not None:
                unsupported.append(("suffix", "suffix is not supported (only null)"))
        if unsupported:
            message = "; ".join(why for _, why in unsupported) + "."
            raise APIError(400, message, param=unsupported[0][0])
        if max_tokens == 0:
            return None
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        try:
            return GenerationParams(
                max_new_tokens=max_tokens,
                temperature=req.temperature,
                top_k=req.top_k,
                top_p=req.top_p,
                min_p=req.min_p,
                repetition_penalty=req.repetition_penalty,
                no_repeat_ngram_size=req.no_repeat_ngram_size,
                stop=[*stops, *extra_stops],
                ignore_eos=req.ignore_eos,
            )
        except UserError as e:
            problems = [api_names(p) for p in e.problems]
            raise APIError(
                400, "Invalid request: " + "; ".join(problems) + ".", param=_field_of(problems[0])
            ) from None

    def check_lengths(
        self, prompts: list[Prompt], max_tokens: int, param: str, prompt_param: str = "prompt"
    ) -> None:
        """400s for a prompt and `max_tokens` over the context, or `max_tokens` over the limit
        (`param` and `prompt_param` name the fields as the request does)."""
        longest = max(max(len(p.ids), 1) for p in prompts)  # an empty prompt holds EOS
        if longest + max_tokens > self.n_ctx:
            raise APIError(
                400,
                f"This model's maximum context length is {self.n_ctx} tokens, but you asked for "
                f"{longest + max_tokens} tokens ({longest} in the prompt, {max_tokens} for the "
                f"completion). Shorten the prompt or lower {param}.",
                param=prompt_param,
                code="context_length_exceeded",
            )
        if max_tokens > self.max_tokens_limit:
            raise APIError(
                400,
                f"{param} is {max_tokens}, more than this server's limit of "
                f"{self.max_tokens_limit} (--max-tokens-limit); ask for fewer tokens.",
                param=param,
            )

    def check_rows(self, rows: int) -> None:
        """A 400 when a request asks for more sequences than the server ever holds."""
        if rows > self.scheduler.capacity:
            raise APIError(
                400,
                f"This request asks for {rows} sequences (prompts x n) and this server holds "
                f"at most {self.scheduler.capacity} at once (--max-batch + --max-queue); send "
                "fewer prompts or a smaller n.",
                param="n",
            )

    # -- running jobs

    def submit(self, jobs: list[Job]) -> None:
        """Queue `jobs`, or a 429 with Retry-After when the queue is full."""
        try:
            self.scheduler.submit(jobs)
        except QueueFull:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise APIError(
                429,
                f"The server is busy ({self.scheduler.capacity} sequences running and "
                f"waiting); retry after {RETRY_AFTER} s.",
                code="queue_full",
                headers={"Retry-After": RETRY_AFTER},
            ) from None

    async def events(
        self, jobs: list[Job], inbox: asyncio.Queue[Event], is_disconnected: Any
    ) -> AsyncIterator[Event]:
        """The jobs' events as they come, until each has ended. Cancels the jobs left (their
        slots are freed at the next step) when the client goes away (`Cancelled`), the request
        times out (a 408 `APIError`) or the consumer stops early."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        left = len(jobs)
        try:
            while left:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise APIError(
                        408,
                        f"The request took more than the server's --request-timeout of "
                        f"{self.request_timeout:g} s; ask for fewer tokens.",
                        code="timeout",
                    )
                try:
                    event = await asyncio.wait_for(inbox.get(), min(remaining, DISCONNECT_POLL))
                except TimeoutError:
                    if await is_disconnected():
                        raise Cancelled from None
                    continue
                if isinstance(event, (Result, Failure)):
                    left -= 1
                yield event
        finally:
            if left:
                for job in jobs:
                    job.cancel()
                self.scheduler.wake()

    def make_jobs(
        self,
        prompts: list[Prompt],
        n: int,
        params: GenerationParams | None,
        seed: int | None,
        *,
        logprobs: int | None,
        score_prompt: bool,
        stream: bool,
    ) -> tuple[list[Job], asyncio.Queue[Event]]:
        """One job per choice (prompt p, sample s at index p * n + s, seeded as `gpt2kit
        generate --seed` seeds sample s of prompt p) and the queue their events arrive in."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:  # called on the scheduler thread
            with contextlib.suppress(RuntimeError):  # the event loop has closed (shutdown)
                loop.call_soon_threadsafe(inbox.put_nowait, event)

        base = new_seed() if seed is None else seed
        jobs = [
            Job(
                index=p * n + s,
                prompt_ids=prompt.ids,
                params=params,
                sink=sink,
                seed=sample_seed(base, p, s),
                logprobs=logprobs,
                score_prompt=score_prompt,
                stream=stream,
            )
            for p, prompt in enumerate(prompts)
            for s in range(n)
        ]
        return jobs, inbox

    async def _results(
        self, jobs: list[Job], inbox: asyncio.Queue[Event], is_disconnected: Any
    ) -> dict[int, Result]:
        """Every job's `Result`, by choice index."""
        results: dict[int, Result] = {}
        async with contextlib.aclosing(self.events(jobs, inbox, is_disconnected)) as events:
            async for event in events:
                if isinstance(event, Failure):
                    raise APIError(500, "The server failed to decode this request (a bug).")
                if isinstance(event, Result):
                    results[event.index] = event
        return results

    def _count(self, prompts: list[Prompt], started: float, results: Sequence[Result]) -> None:
        if self.metrics is None:
            return
        self.metrics.requests.inc()
        self.metrics.prompt_tokens.inc(sum(len(p.ids) for p in prompts))
        self.metrics.latency.observe(time.perf_counter() - started)

    # -- logprobs

    def _top(self, lp: TokenLogprob) -> dict[str, float]:
        """The alternatives as {token text: logprob}, most likely first, the chosen token
        included (a text two tokens share keeps the higher value)."""
        top: dict[str, float] = {}
        for token, value in [*lp.top, (lp.token, lp.logprob)]:
            top.setdefault(self.tokens.label(token), _finite(value))
        return top

    def completion_logprobs(
        self,
        tokens: Sequence[int],
        logprobs: Sequence[TokenLogprob | None],
        offsets: TextOffsets,
    ) -> dict[str, list]:
        """The legacy `logprobs` object for `tokens`, placed in the text by `offsets` (which
        they advance)."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": []}
        out["text_offset"] = []
        for token, lp in zip(tokens, logprobs, strict=True):
            out["tokens"].append(self.tokens.label(token))
            out["token_logprobs"].append(None if lp is None else _finite(lp.logprob))
            out["top_logprobs"].append(None if lp is None else self._top(lp))
            out["text_offset"].append(offsets.next(token))
        return out

    def chat_logprobs(self, logprobs: Sequence[TokenLogprob]) -> dict[str, list]:
        """The chat `logprobs` object: `{"content": [{token, logprob, bytes, top_logprobs}]}`."""

        def entry(token: int, value: float) -> dict[str, Any]:
            text = self.tokens.text(token)
            return {"token": text, "logprob": _finite(value), "bytes": self.tokens.bytes(token)}

        return {
            "content": [
                {**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
                for lp in logprobs
            ]
        }

    # -- /v1/completions

    def plan_completion(
        self, req: CompletionRequest
    ) -> tuple[list[Prompt], GenerationParams | None]:
        """The prompts and controls of a completion request, every check done."""
        self.check_model(req.model)
        p = req.prompt
        self.check_rows(
            req.n * (1 if isinstance(p, str) or (p and isinstance(p[0], int)) else len(p))
        )
        prompts = self.prompts(p)
        default = min(16, self.max_tokens_limit)  # OpenAI's 16, within --max-tokens-limit
        max_tokens = default if req.max_tokens is None else req.max_tokens
        params = self.params(req, max_tokens)
        self.check_lengths(prompts, max_tokens, "max_tokens")
        if req.stream_options is not None and not req.stream:
            raise APIError(400, "stream_options needs stream: true.", param="stream_options")
        return prompts, params

    def queue_completion(
        self, req: CompletionRequest, stream: bool
    ) -> tuple[list[Prompt], list[Job], asyncio.Queue[Event]]:
        """Check a completion request (raising its errors now), queue one job per choice, and
        return the prompts, the jobs and the queue their events arrive in."""
        prompts, params = self.plan_completion(req)
        jobs, inbox = self.make_jobs(
            prompts,
            req.n,
            params,
            req.seed,
            logprobs=req.logprobs,
            score_prompt=req.echo and req.logprobs is not None,
            stream=stream,
        )
        self.submit(jobs)
        return prompts, jobs, inbox

    async def completion(self, req: CompletionRequest, is_disconnected: Any) -> dict[str, Any]:
        """Run a completion request to its end: the `text_completion` object."""
        started = time.perf_counter()
        prompts, jobs, inbox = self.queue_completion(req, stream=False)
        results = await self._results(jobs, inbox, is_disconnected)
        choices = []
        for index in range(len(jobs)):
            r, prompt = results[index], prompts[index // req.n]
            logprobs = None
            if req.logprobs is not None:
                if req.echo:
                    logprobs = self.completion_logprobs(
                        [*prompt.ids, *r.tokens],
                        [*(r.prompt_logprobs or []), *r.logprobs],
                        TextOffsets(self.tokens),
                    )
                else:
                    offsets = TextOffsets(self.tokens, len(prompt.text))
                    logprobs = self.completion_logprobs(r.tokens, r.logprobs, offsets)
            text = prompt.text + r.text if req.echo else r.text
            choices.append(
                {
                    "index": index,
                    "text": text,
                    "logprobs": logprobs,
                    "finish_reason": r.finish_reason,
                }
            )
        self._count(prompts, started, list(results.values()))
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(prompts, results.values()),
        }

    async def completion_stream(
        self, req: CompletionRequest, is_disconnected: Any
    ) -> AsyncIterator[str]:
        """Validate and queue a streamed completion request (raising its errors now), and
        return its Server-Sent Events."""
        started = time.perf_counter()
        prompts, jobs, inbox = self.queue_completion(req, stream=True)
        usage_wanted = req.stream_options is not None and req.stream_options.include_usage
        chunk = _chunk_writer("cmpl", "text_completion", self.model_name, usage_wanted)

        async def stream() -> AsyncIterator[str]:
            offsets = [TextOffsets(self.tokens) for _ in jobs]  # per choice, for text_offset
            begun = [False] * len(jobs)
            results: list[Result] = []
            guarded = _guarded(self.events(jobs, inbox, is_disconnected))
            async with contextlib.aclosing(guarded) as events:
                async for event in events:
                    if isinstance(event, str):  # an error mid-stream ends it
                        yield event
                        yield "data: [DONE]\n\n"
                        return
                    i = event.index
                    prompt = prompts[i // req.n]
                    text, tokens, lps = "", [], []
                    if not begun[i]:
                        begun[i] = True
                        if req.echo:
                            text, tokens = prompt.text, list(prompt.ids)
                            lps = list(
                                _first_prompt(event, len(tokens))
                                if req.logprobs is not None
                                else []
                            )
                        else:
                            offsets[i].offset = len(prompt.text)
                    if isinstance(event, Failure):
                        yield _sse(
                            APIError(500, "The server failed to decode this request.").body()
                        )
                        yield "data: [DONE]\n\n"
                        return
                    if isinstance(event, Update):
                        text += event.text
                        tokens += event.tokens
                        lps += event.logprobs or []
                        finish = None
                    else:
                        results.append(event)
                        if event.unsent:
                            tokens += event.tokens[-event.unsent :]
                            lps += (event.logprobs or [])[-event.unsent :]
                        finish = event.finish_reason
                    logprobs = None
                    if req.logprobs is not None:
                        logprobs = self.completion_logprobs(tokens, lps, offsets[i])
                    if text or finish or (logprobs and tokens):  # not "" (held back)
                        choice = {"index": i, "text": text, "logprobs": logprobs}
                        yield chunk([{**choice, "finish_reason": finish}])
            if usage_wanted:
                yield chunk([], _usage(prompts, results))
            self._count(prompts, started, results)
            yield "data: [DONE]\n\n"

        return stream()

    # -- /v1/chat/completions

    def chat_prompt(self, req: ChatRequest) -> str:
        """The conversation as text, in the chat template (see the module's docstring)."""
        system, turns = [], []
        for i, m in enumerate(req.messages):
            content = _content(m.content, i, m.role)
            if m.role in ("system", "developer"):
                system.append(content.strip())
            else:
                turns.append(f"{'User' if m.role == 'user' else 'Assistant'}: {content}\n")
        head = "\n\n".join(s for s in system if s)
        return (head + "\n\n" if head else "") + "".join(turns) + "Assistant:"

    def plan_chat(self, req: ChatRequest) -> tuple[Prompt, GenerationParams, int | None]:
        """The prompt, controls and logprobs setting of a chat request, every check done."""
        self.check_model(req.model)
        both = req.max_tokens is not None and req.max_completion_tokens is not None
        if both and req.max_tokens != req.max_completion_tokens:
            raise APIError(
                400,
                "Give max_completion_tokens or max_tokens (the older name), not both.",
                param="max_completion_tokens",
            )
        text = self.chat_prompt(req)
        prompt = Prompt(self.tokenizer.encode(text), text)
        max_tokens = req.max_completion_tokens or req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        if max_tokens is None:  # as much as the context and the limit allow
            max_tokens = max(1, min(self.max_tokens_limit, self.n_ctx - len(prompt.ids)))
        params = self.params(req, max_tokens, [CHAT_STOP])
        self.check_lengths([prompt], max_tokens, param, "messages")
        self.check_rows(req.n)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true.", param="top_logprobs")
        if req.stream_options is not None and not req.stream:
            raise APIError(400, "stream_options needs stream: true.", param="stream_options")
        k = (req.top_logprobs or 0) if req.logprobs else None
        return prompt, params, k

    def queue_chat(
        self, req: ChatRequest, stream: bool
    ) -> tuple[Prompt, int | None, list[Job], asyncio.Queue[Event]]:
        """Check a chat request (raising its errors now), queue one job per choice, and return
        the prompt, the logprobs setting, the jobs and the queue their events arrive in."""
        prompt, params, k = self.plan_chat(req)
        jobs, inbox = self.make_jobs(
            [prompt], req.n, params, req.seed, logprobs=k, score_prompt=False, stream=stream
        )
        self.submit(jobs)
        return prompt, k, jobs, inbox

    async def chat(self, req: ChatRequest, is_disconnected: Any) -> dict[str, Any]:
        """Run a chat request to its end: the `chat.completion` object."""
        started = time.perf_counter()
        prompt, k, jobs, inbox = self.queue_chat(req, stream=False)
        results = await self._results(jobs, inbox, is_disconnected)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": results[i].text},
                "logprobs": None if k is None else self.chat_logprobs(results[i].logprobs),
                "finish_reason": results[i].finish_reason,
            }
            for i in range(len(jobs))
        ]
        self._count([prompt], started, list(results.values()))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage([prompt], results.values()),
        }

    async def chat_stream(self, req: ChatRequest, is_disconnected: Any) -> AsyncIterator[str]:
        """Validate and queue a streamed chat request (raising its errors now), and return its
        `chat.completion.chunk` events."""
        started = time.perf_counter()
        prompt, k, jobs, inbox = self.queue_chat(req, stream=True)
        usage_wanted = req.stream_options is not None and req.stream_options.include_usage
        chunk = _chunk_writer("chatcmpl", "chat.completion.chunk", self.model_name, usage_wanted)

        async def stream() -> AsyncIterator[str]:
            results: list[Result] = []
            for i in range(len(jobs)):
                delta = {"role": "assistant", "content": ""}
                yield chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}])
            guarded = _guarded(self.events(jobs, inbox, is_disconnected))
            async with contextlib.aclosing(guarded) as events:
                async for event in events:
                    if isinstance(event, str):  # an error mid-stream ends it
                        yield event
                        yield "data: [DONE]\n\n"
                        return
                    if isinstance(event, Failure):
                        yield _sse(
                            APIError(500, "The server failed to decode this request.").body()
                        )
                        yield "data: [DONE]\n\n"
                        return
                    i = event.index
                    if isinstance(event, Update):
                        lps = event.logprobs or []
                        if not event.text and (k is None or not lps):
                            continue  # text held back (a stop string may begin): nothing to send
                        delta, finish = {"content": event.text}, None
                    else:
                        results.append(event)
                        lps = (event.logprobs or [])[len(event.tokens) - event.unsent :]
                        delta, finish = {}, event.finish_reason
                    logprobs = None if k is None else self.chat_logprobs(lps)
                    choice = {"index": i, "delta": delta, "logprobs": logprobs}
                    yield chunk([{**choice, "finish_reason": finish}])
            if usage_wanted:
                yield chunk([], _usage([prompt], results))
            self._count([prompt], started, results)
            yield "data: [DONE]\n\n"

        return stream()


def _field_of(problem: str) -> str | None:
    """The request field a `GenerationParams` problem (named as API fields) is about: the
    first word of it that is one of `_Sampling`'s fields."""
    fields = _Sampling.model_fields
    return next((w for w in re.findall(r"[a-z_]+", problem) if w in fields), None)


def _content(content: Any, index: int, role: str) -> str:
    """A message's text: a string, or the text parts of a list of parts; only an assistant's
    message may have none (as in OpenAI's API)."""
    if content is None:
        if role != "assistant":
            raise APIError(
                400, f"messages[{index}].content is required for a {role} message.",
                param="messages",
            )  # fmt: skip
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                f"messages[{index}].content: only text parts ({{'type': 'text', 'text': ...}}) "
                "are supported.",
                param="messages",
            )
        texts.append(part["text"])
    return "".join(texts)


def _first_prompt(event: Event, n: int) -> Iterator[TokenLogprob | None]:
    """The prompt log-probabilities carried by a job's first event (None entries if absent)."""
    scored = getattr(event, "prompt_logprobs", None)
    return iter([None] * n if scored is None else scored)


def _usage(prompts: Sequence[Prompt], results: Any) -> dict[str, int]:
    prompt_tokens = sum(len(p.ids) for p in prompts)
    completion_tokens = sum(len(r.tokens) for r in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, allow_nan=False)}\n\n"


def _chunk_writer(prefix: str, obj: str, model: str, usage_wanted: bool) -> Callable[..., str]:
    """`chunk(choices, usage=None)`: the Server-Sent Event of one chunk of a stream whose
    chunks share an id (`prefix-...`), `object`, creation time and model; `usage` is sent
    only when the client asked for it (`stream_options.include_usage`)."""
    id_, created = f"{prefix}-{uuid.uuid4().hex}", int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        body = {"id": id_, "object": obj, "created": created, "model": model, "choices": choices}
        if usage_wanted:
            body["usage"] = usage
        return _sse(body)

    return chunk


async def _guarded(events: AsyncGenerator[Event, None]) -> AsyncIterator[Event | str]:
    """`events`, with a timeout turned into an error event (the stream has begun, so the
    status can no longer change); a client gone ends it silently."""
    try:
        async for event in events:
            yield event
    except APIError as e:
        yield _sse(e.body())
    except Cancelled:
        return
    finally:
        await events.aclose()  # cancels the jobs left, whichever way the stream ended
