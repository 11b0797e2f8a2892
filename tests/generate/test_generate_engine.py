"""The decoding engine driven directly, without `Generator`: requests join free slots between
steps while others are mid-generation, and each gives exactly the tokens it gives alone; a
request that ends frees its slot for the next one."""

from __future__ import annotations

import pytest
import torch

from conftest import make_hf_model
from gpt2kit.formats.hf import load_model
from gpt2kit.generate.engine import DecodeEngine, Finished, Request, StepOutput
from gpt2kit.generate.params import GenerationParams
from gpt2kit.tokenizer import Tokenizer, gpt2_tokenizer


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """A peaked tiny model with a 32-token context, so that windows slide within a test."""
    folder = tmp_path_factory.mktemp("window") / "m"
    make_hf_model(folder, initializer_range=0.5, n_positions=32)
    model, tokenizer, _ = load_model(folder)
    return model.eval(), tokenizer


@pytest.fixture(params=["context-128", "context-32"])
def model_and_tokenizer(request, peaky, window):
    if request.param == "context-32":
        return window
    _, gen, _ = peaky
    return gen.model, gen.tokenizer


def ids(tokenizer: Tokenizer, n: int, seed: int) -> list[int]:
    """`n` random token ids: a prompt of exactly that length."""
    return torch.randint(0, 50000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def finish_all(engine: DecodeEngine) -> list[Finished]:
    """Step the engine until no slot is busy; returns the requests that ended, in order."""
    done: list[Finished] = []
    while engine.busy:
        done += engine.step().finished
    return done


def alone(model, tokenizer: Tokenizer, request: Request) -> Finished:
    """`request` decoded by itself, in an engine of one slot."""
    engine = DecodeEngine(model, tokenizer, 1)
    engine.admit_many([request])
    (result,) = finish_all(engine)
    return result


GREEDY = GenerationParams(max_new_tokens=40, temperature=0, ignore_eos=True)
SAMPLED = GenerationParams(max_new_tokens=40, top_k=20, ignore_eos=True)
MIXED = [  # three groups of logits controls; the n-gram bans read the joiners' histories
    GenerationParams(max_new_tokens=40, temperature=0, repetition_penalty=1.5, ignore_eos=True),
    GenerationParams(max_new_tokens=30, top_p=0.9, no_repeat_ngram_size=2, ignore_eos=True),
    GenerationParams(max_new_tokens=35, temperature=0, no_repeat_ngram_size=3, ignore_eos=True),
]


@pytest.mark.parametrize(
    "params", [[GREEDY] * 3, [SAMPLED] * 3, MIXED], ids=["greedy", "sampled", "mixed"]
)
def test_a_request_admitted_mid_generation_gives_what_it_gives_alone(model_and_tokenizer, params):
    """Prompts of 20, 3 and 45 tokens join at steps 0, 5 and 9: each slot has its own
    positions, length, window and noise, so each request's tokens equal its tokens alone (the
    45-token prompt wraps around the cache's ring; with a 32-token context every window
    slides, each at its own time)."""
    model, tokenizer = model_and_tokenizer
    requests = [
        Request(ids(tokenizer, n, seed=n), p, seed=100 + n)
        for n, p in zip((20, 3, 45), params, strict=True)
    ]
    engine = DecodeEngine(model, tokenizer, slots=3)
    slots = [engine.admit_many([requests[0]])[0]]
    done: list[Finished] = []
    for join_at, request in ((5, requests[1]), (4, requests[2])):
        for _ in range(join_at):
            done += engine.step().finished
        assert engine.busy == slots  # the others are mid-generation
        slots += engine.admit_many([request])
    done += finish_all(engine)
    assert sorted(d.slot for d in done) == [0, 1, 2]
    for d in done:
        assert d.token_ids == alone(model, tokenizer, d.request).token_ids, d.request.prompt_ids
        assert len(d.token_ids) == d.request.params.max_new_tokens
        assert d.finish_reason == "length"
    if params[0] is SAMPLED:  # the seeds matter: another one gives other tokens
        other = Request(requests[1].prompt_ids, SAMPLED, seed=1)
        assert alone(model, tokenizer, other).token_ids != done[0].token_ids


def test_the_static_step_decodes_joiners_as_the_eager_step_does(window):
    """The static-shape step (what a CUDA graph captures: every column, a device-side index)
    gives the eager step's tokens, also for requests that join mid-generation and slide."""
    model, tokenizer = window
    requests = [
        Request(ids(tokenizer, n, seed=n), p, seed=n)
        for n, p in zip((20, 3, 45), MIXED, strict=True)
    ]
    engine = DecodeEngine(model, tokenizer, slots=3, static=True)
    done = []
    for request in requests:
        engine.admit_many([request])
        for _ in range(4):
            done += engine.step().finished
    done += finish_all(engine)
    assert [d.token_ids for d in sorted(done, key=lambda d: d.slot)] == [
        alone(model, tokenizer, r).token_ids for r in requests
    ]


def test_a_slot_ended_by_eos_or_its_budget_is_reused_by_the_next_request(peaky):
    """A request that ends (EOS, its token budget) frees its slot at once, while another is
    mid-generation; each next request in that slot gives the tokens it gives alone: nothing of
    the slot's earlier requests counts for its repetition penalty or its n-gram bans."""
    _, gen, _ = peaky
    prompt = gen.tokenizer.encode("Hello there, my friend")
    ((full, _),) = gen.generate_ids([prompt], 20, temperature=0, stop_at_eos=False)
    tokenizer = Tokenizer(gpt2_tokenizer().backend, "gpt2")
    tokenizer.eos_id = full[3]  # the 4th greedy token ends the text
    model = gen.model
    ends_at_eos = Request(prompt, GenerationParams(max_new_tokens=20, temperature=0))
    long = Request(ids(tokenizer, 40, 1), GenerationParams(max_new_tokens=60, ignore_eos=True), 5)
    short = ids(tokenizer, 12, 2)
    then = [
        Request(short, GenerationParams(max_new_tokens=4, temperature=0, repetition_penalty=2)),
        # The same prompt again, after the slot was left free for a while: its first token
        # would be banned (or penalized) if the slot's earlier tokens counted.
        Request(
            short,
            GenerationParams(
                max_new_tokens=4, temperature=0, repetition_penalty=100, no_repeat_ngram_size=2
            ),
        ),
        Request(ids(tokenizer, 30, 3), GenerationParams(max_new_tokens=6, top_k=9), seed=7),
    ]

    engine = DecodeEngine(model, tokenizer, slots=2)
    eos_slot, long_slot = engine.admit_many([ends_at_eos, long])
    done = []
    while not done:
        done = engine.step().finished
    assert [(d.slot, d.finish_reason) for d in done] == [(eos_slot, "eos")]
    assert done[0].token_ids == full[: full.index(full[3])]
    assert engine.free_slots == [eos_slot] and engine.busy == [long_slot]
    results = done
    for request in then:  # each takes the slot the previous one left
        for _ in range(15 if request is then[1] else 0):
            assert not engine.step().finished
        assert engine.admit_many([request]) == [eos_slot]
        done = []
        while not done:
            done = engine.step().finished
        assert [d.slot for d in done] == [eos_slot] and engine.busy == [long_slot]
        assert done[0].finish_reason == "length"
        results += done
    results += finish_all(engine)
    assert [r.request for r in results] == [ends_at_eos, *then, long]
    for r in results:
        assert r.token_ids == alone(model, tokenizer, r.request).token_ids


def test_the_engine_is_driven_step_by_step_without_a_generator(peaky):
    """One token per step, the text streamed piece by piece, the result reported once: the
    greedy tokens a plain loop over the model (no cache) computes."""
    _, gen, _ = peaky
    model, tokenizer = gen.model, gen.tokenizer
    prompt = tokenizer.encode("Hello there, my friend")
    engine = DecodeEngine(model, tokenizer, slots=2)
    params = GenerationParams(max_new_tokens=6, temperature=0, ignore_eos=True)
    slot = engine.admit(prompt, params, stream=True)
    assert engine.busy == [slot] and len(engine.free_slots) == 1
    pieces, results, steps = [], [], 0
    while engine.busy:
        out = engine.step()
        steps += 1
        pieces.append(out.text.get(slot, ""))
        results += out.finished
    (result,) = results
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert steps == 6 and result.finish_reason == "length"
    assert result.token_ids == seq[len(prompt) :]
    assert "".join(pieces) == result.text == tokenizer.decode(result.token_ids)
    assert sum(1 for p in pieces if p) > 1  # streamed, not all at the end
    assert engine.step() == StepOutput() and engine.free_slots == [0, 1]

    both = engine.admit_many([Request(prompt, params), Request([], params)])  # empty: from EOS
    with pytest.raises(RuntimeError, match="1 requests and 0 free slots"):
        engine.admit(prompt, params)
    engine.cancel(both[0])
    assert engine.busy == [both[1]]
    (from_eos,) = finish_all(engine)
    assert (
        from_eos.token_ids == alone(model, tokenizer, Request([tokenizer.eos_id], params)).token_ids
    )


def test_a_free_slot_stays_harmless_however_long_the_others_run(window):
    """A slot left free for longer than the context computes nothing out of range."""
    model, tokenizer = window
    request = Request(ids(tokenizer, 5, 0), GenerationParams(max_new_tokens=80, temperature=0))
    engine = DecodeEngine(model, tokenizer, slots=2)
    engine.admit_many([request])
    (result,) = finish_all(engine)
    assert result.token_ids == alone(model, tokenizer, request).token_ids
