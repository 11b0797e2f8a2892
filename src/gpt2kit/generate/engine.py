"""The decoding engine: a fixed number of slots sharing one model and one KV cache.

A server, or `Generator`, drives it. `admit` puts a request (prompt ids, `GenerationParams`,
seed) into a free slot and encodes its prompt; `step` advances every busy slot by one token in
one batched forward pass and returns the requests that ended (EOS, a stop string, their token
budget). Their slots are free at once, so new requests join between steps while the others
are mid-generation. Each slot has its own length, positions and noise generator, so a request
gives the tokens it would give alone, whichever requests share the engine with it.

The host looks at the tokens only at check points (every step on the CPU or when a request
streams, every 8 steps on a GPU, and when a request reaches its token budget) to notice EOS
and stop strings and to stream text; a request that needs none of these is read once, at its
end. Requests with the same logits controls are processed as one batch. A request that asks
for log-probabilities (`Request.logprobs`, as a server's API does) has them read every step.

Past the context window a slot's window slides: when its context fills the cache, its last
`capacity // 2` tokens are re-encoded (positions restart at 0) and decoding goes on. Keeping
half the window means a re-encode every `capacity // 2` tokens while every token still sees at
least half a window of context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gpt2kit.generate.output import SampleOutput
from gpt2kit.generate.params import GenerationParams
from gpt2kit.generate.processors import SamplingNoise, choose_tokens, new_seed
from gpt2kit.generate.runner import SlotRunner
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer

# Steps between host checks on a GPU when no request streams (each check syncs).
GPU_CHECK_EVERY = 8


@dataclass(frozen=True)
class Request:
    """One generation request: its prompt token ids (empty: start from EOS), its decoding
    controls, the seed of its sampling (None: a fresh one), whether its text streams, and
    `logprobs`: None, or how many of the most likely alternatives (0 or more) to record with
    each generated token's log-probability (see `TokenLogprob`)."""

    prompt_ids: Sequence[int]
    params: GenerationParams = field(default_factory=GenerationParams)
    seed: int | None = None
    stream: bool = False
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model and the `top` most likely tokens with theirs
    (`(token id, log-probability)`, most likely first), all from one log-softmax of the model's
    logits before any decoding control, so a greedy token's value is exactly the top one's."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Finished:
    """A request that ended in slot `slot`: its tokens, text and why it ended.

    `token_ids` run up to and including the token that completed a stop string (EOS is not
    kept); `text` is cut before the stop string; `finish_reason` is `eos`, `stop` or `length`;
    `seed` is the one its sampling used (None when greedy); `logprobs`, when the request asked
    for them, has one entry per token of `token_ids`.
    """

    slot: int
    request: Request
    output: SampleOutput
    seed: int | None
    logprobs: list[TokenLogprob] | None = None  # one per generated token, if requested

    @property
    def token_ids(self) -> list[int]:
        """The generated tokens."""
        return self.output.ids

    @property
    def finish_reason(self) -> str:
        """Why it ended: `eos`, `stop` or `length`."""
        return self.output.finish

    @property
    def text(self) -> str:
        """The generated text, cut before a stop string."""
        return self.output.final_text()


@dataclass
class StepOutput:
    """What one `step` produced: the requests that ended (their slots are free now) and, for
    streaming requests, their new text by slot."""

    finished: list[Finished] = field(default_factory=list)
    text: dict[int, str] = field(default_factory=dict)


@dataclass
class _Slot:
    request: Request
    output: SampleOutput
    seed: int | None
    prompt_len: int
    start: int  # the engine's step count when it was admitted
    read: int = 0  # generated tokens handed to `output`
    logprobs: list[TokenLogprob] | None = None  # one per step, when the request asks


@dataclass
class _Plan:
    """What the busy slots ask of each step, worked out when they change (not every step)."""

    groups: list[tuple[GenerationParams, torch.Tensor | None]]  # slots per logits controls
    due: int  # the step count at which the first of them reaches its token budget
    watched: bool  # whether any needs reading at every check (EOS, stop strings, stream)
    every: int  # steps between checks
    logprobs: int | None  # the most alternatives a slot asks for (None: no slot asks)


class DecodeEngine:
    """`slots` requests decoded together over one model and one preallocated KV cache.

    `capacity` is each slot's context (the model's by default): a longer prompt keeps its last
    `capacity` tokens, and a slot's window slides when its context fills it. `static` (default:
    on CUDA) runs the step with static shapes, captured in a CUDA graph with `cuda_graph`.
    Drive it with `admit`/`admit_many` and `step`; `busy` and `free_slots` say where it stands.
    """

    def __init__(
        self,
        model: GPT2,
        tokenizer: Tokenizer,
        slots: int,
        capacity: int | None = None,
        *,
        static: bool | None = None,
        cuda_graph: bool = True,
    ) -> None:
        n_ctx = model.config.n_positions
        self.capacity = min(capacity or n_ctx, n_ctx)
        self.device = model.transformer.wte.weight.device
        is_cuda = self.device.type == "cuda"
        static = is_cuda if static is None else static
        self.runner = SlotRunner(model, slots, self.capacity, static, cuda_graph and is_cuda)
        self.tokenizer = tokenizer
        self.keep = max(1, self.capacity // 2)  # tokens a sliding window keeps
        V = model.config.vocab_size
        self.vocab_size = V
        self.unused = None  # a padded vocabulary's extra ids (no token) are never produced
        if tokenizer.vocab_size < V:
            self.unused = torch.arange(V, device=self.device) >= tokenizer.vocab_size
        self._slots: list[_Slot | None] = [None] * slots
        self.logits: torch.Tensor | None = None  # (slots, V): every slot's next-token logits
        self.token = torch.zeros(slots, dtype=torch.long, device=self.device)
        # Every slot's tokens, right-aligned at column `hp` (so one `hp` serves all); `pad`
        # (slots,) counts the columns before each slot's first token.
        self.history = torch.zeros((slots, 0), dtype=torch.long, device=self.device)
        self.hp = 0
        self.pad = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.seen: torch.Tensor | None = None  # (slots, V): tokens so far (repetition penalty)
        self.noise: SamplingNoise | None = None
        self.steps = 0  # steps taken
        self._checked = 0  # the step count at the last check
        self._plan: _Plan | None = None

    # -- where it stands

    @property
    def slots(self) -> int:
        """How many requests it decodes at most at once."""
        return len(self._slots)

    @property
    def busy(self) -> list[int]:
        """The slots that hold a request."""
        return [i for i, s in enumerate(self._slots) if s is not None]

    @property
    def free_slots(self) -> list[int]:
        """The slots a request can be admitted into."""
        return [i for i, s in enumerate(self._slots) if s is None]

    # -- admitting and retiring

    def admit(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams | None = None,
        seed: int | None = None,
        *,
        stream: bool = False,
    ) -> int:
        """Put one request into a free slot and encode its prompt; returns the slot."""
        request = Request(prompt_ids, params or GenerationParams(), seed, stream)
        return self.admit_many([request])[0]

    @torch.inference_mode()
    def admit_many(self, requests: Sequence[Request]) -> list[int]:
        """Put each request into a free slot (the lowest first) and encode its prompt; returns
        their slots. Into an idle engine, filling every slot is one batched forward pass."""
        free = self.free_slots
        if not requests:
            return []
        if len(requests) > len(free):
            raise RuntimeError(f"{len(requests)} requests and {len(free)} free slots")
        rows = free[: len(requests)]
        eos = self.tokenizer.eos_id
        prompts = [list(r.prompt_ids) or [eos] for r in requests]
        fresh = len(free) == self.slots
        logits = self.runner.fill(rows, [p[-self.capacity :] for p in prompts])  # (k, V)
        if fresh and len(rows) == self.slots:
            self.logits = logits
        else:
            if self.logits is None:
                self.logits = logits.new_zeros((self.slots, logits.size(-1)))
            self.logits[rows] = logits
        self._add_history(rows, prompts, requests, fresh)
        for row, request, prompt in zip(rows, requests, prompts, strict=True):
            params = request.params
            seed = None
            if not params.greedy:
                seed = new_seed() if request.seed is None else request.seed
                self._noise().seed(row, seed)
            elif self.noise is not None:
                self.noise.clear(row)
            if params.repetition_penalty != 1.0:
                if self.seen is None:
                    self.seen = torch.zeros(
                        (self.slots, self.vocab_size), dtype=torch.bool, device=self.device
                    )
                self.seen[row] = False
                self.seen[row, torch.tensor(prompt, device=self.device)] = True
            output = SampleOutput(self.tokenizer, params, request.stream)
            self._slots[row] = _Slot(request, output, seed, len(prompt), self.steps)
            if request.logprobs is not None:
                self._slots[row].logprobs = []
        self._plan = None
        return rows

    def cancel(self, slot: int) -> None:
        """Drop the request in `slot` (if any) without a result; the slot is free."""
        if self._slots[slot] is not None:
            self._retire(slot)

    def progress(self, slot: int) -> tuple[list[int], list[TokenLogprob] | None]:
        """The tokens of the request in `slot` read so far (at the last check) and, if it asked
        for them, the log-probabilities of every token generated so far (one per step, which
        can run ahead of the tokens read)."""
        s = self._slots[slot]
        if s is None:
            raise ValueError(f"slot {slot} holds no request")
        return s.output.ids, s.logprobs

    def reset(self) -> None:
        """Drop every request: all slots are free."""
        for slot in self.busy:
            self._retire(slot)

    def _retire(self, row: int) -> None:
        self._slots[row] = None
        self.runner.release(row)
        if self.noise is not None:
            self.noise.clear(row)
        self._plan = None

    def _noise(self) -> SamplingNoise:
        if self.noise is None:
            self.noise = SamplingNoise([None] * self.slots, self.vocab_size, self.device)
        return self.noise

    def _make_plan(self) -> _Plan:
        slots = {row: s for row, s in enumerate(self._slots) if s is not None}
        by_controls: dict[tuple, tuple[GenerationParams, list[int]]] = {}
        for row, slot in slots.items():
            params = slot.request.params
            by_controls.setdefault(params.logits_controls, (params, []))[1].append(row)
        groups = list(by_controls.values())
        streams = any(s.request.stream for s in slots.values())
        out = [s.output for s in slots.values()]
        return _Plan(
            # One group: every row at once, the free ones computed and ignored.
            groups=[(groups[0][0], None)]
            if len(groups) == 1
            else [(p, torch.tensor(rows, device=self.device)) for p, rows in groups],
            due=min(s.start + s.request.params.max_new_tokens for s in slots.values()),
            watched=streams or any(o.eos is not None or o.stops for o in out),
            every=1 if streams or self.device.type != "cuda" else GPU_CHECK_EVERY,
            logprobs=max(
                (s.request.logprobs for s in slots.values() if s.request.logprobs is not None),
                default=None,
            ),
        )

    # -- the history of tokens (n-gram bans, the sliding window, what the host reads)

    def _add_history(
        self, rows: list[int], prompts: list[list[int]], requests: Sequence[Request], fresh: bool
    ) -> None:
        longest = max(len(p) for p in prompts)
        budget = max(r.params.max_new_tokens for r in requests)
        if fresh:  # start over, the prompts left-padded (a huge budget costs what is generated)
            block = torch.full((self.slots, longest + min(budget, 256)), self.tokenizer.eos_id)
            for row, p in zip(rows, prompts, strict=True):
                block[row, longest - len(p) : longest] = torch.tensor(p)
            self.history, self.hp = block.to(self.device), longest
            self.pad.fill_(longest)
            for row, p in zip(rows, prompts, strict=True):
                self.pad[row] = longest - len(p)
            return
        if longest > self.hp:  # make room before the current column
            self._rebuild_history(longest, self._history_width(longest, budget))
        for row, p in zip(rows, prompts, strict=True):
            self.history[row, self.hp - len(p) : self.hp] = torch.tensor(p, device=self.device)
            self.pad[row] = self.hp - len(p)

    def _history_width(self, kept: int, remaining: int) -> int:
        """A history width for `kept` columns and requests with at most `remaining` tokens to
        go: room for as many again (at least 256), not more than they can use."""
        return kept + min(max(kept, 256), remaining)

    def _rebuild_history(self, end: int, width: int) -> None:
        """Move the history so that its current column becomes `end`, in `width` columns (the
        oldest columns are dropped when `end` is smaller)."""
        m = min(self.hp, end)
        history = torch.full(
            (self.slots, width), self.tokenizer.eos_id, dtype=torch.long, device=self.device
        )
        history[:, end - m : end] = self.history[:, self.hp - m : self.hp]
        self.pad += end - self.hp
        self.pad.clamp_(min=0)
        self.history, self.hp = history, end

    def _record(self, token: torch.Tensor) -> None:
        """Append each slot's new token (B,) to the history."""
        if self.hp == self.history.size(1):  # full: keep what the busy slots need, make room
            slots = [s for s in self._slots if s is not None]
            kept = max(s.prompt_len + self.steps - s.start for s in slots)
            left = max(s.start + s.request.params.max_new_tokens - self.steps for s in slots)
            self._rebuild_history(kept, self._history_width(kept, left))
        self.history[:, self.hp] = token
        self.hp += 1
        if self.seen is not None:
            self.seen.scatter_(1, token.unsqueeze(1), True)
        self.steps += 1

    # -- one step

    @torch.inference_mode()
    def step(self) -> StepOutput:
        """Choose every busy slot's next token, report the requests that ended (freeing their
        slots), then run the model one token further for the others."""
        if not any(s is not None for s in self._slots):
            return StepOutput()
        if self._plan is None:
            self._plan = self._make_plan()
        token = self._choose(self._plan)  # (B,)
        if self._plan.logprobs is not None:
            self._record_logprobs(token, self._plan.logprobs)
        self._record(token)
        out = self._check(self._plan)
        if any(s is not None for s in self._slots):
            for row in self.runner.full_rows():  # slide this slot's window
                self.runner.place(row, self.history[row, self.hp - self.keep : self.hp - 1])
            self.logits = self.runner.step(token)
        return out

    def _record_logprobs(self, token: torch.Tensor, k: int) -> None:
        """Append the chosen token's log-probability and the `k` most likely tokens' (from one
        log-softmax of the model's logits) to every slot that asks for them (one host sync)."""
        rows = [r for r, s in enumerate(self._slots) if s is not None and s.logprobs is not None]
        index = torch.tensor(rows, device=self.device)
        lp = self.logits.index_select(0, index).float().log_softmax(dim=-1)  # (R, V)
        chosen = token.index_select(0, index)  # (R,)
        values = lp.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
        if k:
            top_values, top_ids = (t.tolist() for t in lp.topk(k, dim=-1))
        else:
            top_values = top_ids = [[] for _ in rows]
        chosen = chosen.tolist()
        for i, row in enumerate(rows):
            slot = self._slots[row]
            top = list(zip(top_ids[i], top_values[i], strict=True))[: slot.request.logprobs]
            slot.logprobs.append(TokenLogprob(chosen[i], values[i], top))

    def _choose(self, plan: _Plan) -> torch.Tensor:
        """The next token of every slot (B,), each group of slots under its own controls."""
        sampled = any(not p.greedy for p, _ in plan.groups)
        noise = self.noise.next() if sampled else None  # (B, V)
        if plan.groups[0][1] is None:
            return self._choose_group(plan.groups[0][0], None, noise)
        for params, rows in plan.groups:
            self.token.index_copy_(0, rows, self._choose_group(params, rows, noise))
        return self.token

    def _choose_group(
        self, params: GenerationParams, rows: torch.Tensor | None, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """The next tokens of the slots `rows` (all when None) under `params`."""

        def pick(t: torch.Tensor | None, needed: bool) -> torch.Tensor | None:
            if t is None or not needed:
                return None
            return t if rows is None else t.index_select(0, rows)

        ngrams = params.no_repeat_ngram_size > 0
        return choose_tokens(
            pick(self.logits, True),
            params,
            seen=pick(self.seen, params.repetition_penalty != 1.0),
            history=pick(self.history, ngrams),
            length=self.hp,
            pad=pick(self.pad, ngrams),
            unused=self.unused,
            noise=pick(noise, not params.greedy),
        )

    def _check(self, plan: _Plan) -> StepOutput:
        """At a check point (a slot reached its budget, or it is time to look), read the new
        tokens of every busy slot (one host sync), feed them to their outputs, and retire the
        requests that ended."""
        due = self.steps >= plan.due
        if not due and not (plan.watched and self.steps - self._checked >= plan.every):
            return StepOutput()
        self._checked = self.steps
        slots = {row: s for row, s in enumerate(self._slots) if s is not None}
        k = max(self.steps - s.start - s.read for s in slots.values())
        new = self.history[:, self.hp - k : self.hp].tolist()
        out = StepOutput()
        for row, slot in slots.items():
            generated = self.steps - slot.start
            if unread := generated - slot.read:
                slot.output.feed(new[row][k - unread :])
                slot.read = generated
            if slot.output.finish is None and generated >= slot.request.params.max_new_tokens:
                slot.output.finish = "length"
            if slot.request.stream and (piece := slot.output.new_text()):
                out.text[row] = piece
            if slot.output.finish is not None:
                logprobs = None if slot.logprobs is None else slot.logprobs[: len(slot.output.ids)]
                out.finished.append(Finished(row, slot.request, slot.output, slot.seed, logprobs))
                self._retire(row)
        return out
