"""The OpenAI endpoints driven by the official `openai` client against a real server: the
completion forms (string, list, token ids, n, stop, seed, echo, logprobs), streaming, chat,
and what they must equal: `gpt2kit generate`, the scorer behind `gpt2kit eval`,
`transformers`, and the same request served alone."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import run_cli

from .conftest import CONTEXT, NAME, openai_client

PROMPT = "The quick brown fox"


EXTENSIONS = ("top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size", "ignore_eos")


def complete(client, **kw):
    """`client.completions.create` for the served model; our extensions go in the body."""
    extra = {k: kw.pop(k) for k in EXTENSIONS if k in kw} | kw.pop("extra_body", {})
    return client.completions.create(model=NAME, extra_body=extra or None, **kw)


def test_a_string_prompt_gives_a_text_completion_with_usage(client, tiny):
    _, _, tokenizer, _ = tiny
    r = complete(client, prompt=PROMPT, max_tokens=5, temperature=0, ignore_eos=True)
    assert r.object == "text_completion" and r.model == NAME and r.id.startswith("cmpl-")
    (choice,) = r.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    prompt_tokens = len(tokenizer.encode(PROMPT))
    assert r.usage.prompt_tokens == prompt_tokens
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == prompt_tokens + 5


def test_max_tokens_defaults_to_16(client):
    r = complete(client, prompt=PROMPT, temperature=0, ignore_eos=True)
    assert r.usage.completion_tokens == 16


def test_greedy_text_equals_gpt2kit_generate_temperature_0(client, tiny):
    _, _, _, folder = tiny
    r = complete(client, prompt=PROMPT, max_tokens=24, temperature=0)
    cli = run_cli(
        "generate", str(folder), PROMPT, "--temperature", "0", "--max-new-tokens", "24",
        "--device", "cpu", "--no-stream",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == PROMPT + r.choices[0].text + "\n"


def test_a_list_of_prompts_and_token_ids_give_the_same_choices(client, tiny):
    _, _, tokenizer, _ = tiny
    prompts = ["Once upon a time", "Hello world, this is", PROMPT]
    kw = dict(max_tokens=8, temperature=0)
    by_text = complete(client, prompt=prompts, **kw)
    by_ids = complete(client, prompt=tokenizer.encode_batch(prompts), **kw)
    one_by_one = [complete(client, prompt=p, **kw).choices[0].text for p in prompts]
    single_ids = complete(client, prompt=tokenizer.encode(prompts[1]), **kw)
    assert [c.index for c in by_text.choices] == [0, 1, 2]
    assert [c.text for c in by_text.choices] == one_by_one
    assert [c.text for c in by_ids.choices] == one_by_one
    assert single_ids.choices[0].text == one_by_one[1]


def test_n_samples_with_a_seed_are_those_of_generate_with_that_seed(client, tiny):
    from gpt2kit.generate import Generator

    _, model, tokenizer, _ = tiny
    kw = dict(max_new_tokens=12, top_k=20)
    r = complete(client, prompt=[PROMPT, "Hello"], n=3, seed=1234, max_tokens=12, top_k=20)
    again = complete(client, prompt=[PROMPT, "Hello"], n=3, seed=1234, max_tokens=12, top_k=20)
    expected = Generator(model, tokenizer).generate(
        [PROMPT, "Hello"], seed=1234, num_samples=3, **kw
    )
    texts = [c.text for c in r.choices]
    assert [c.index for c in r.choices] == list(range(6))
    assert texts == [c.text for c in expected]  # choice p * n + s is sample s of prompt p
    assert texts == [c.text for c in again.choices]
    assert len(set(texts[:3])) > 1  # the samples of one prompt differ


def test_a_stop_string_ends_the_choice_and_is_not_returned(client):
    full = complete(client, prompt=PROMPT, max_tokens=30, temperature=0, ignore_eos=True)
    text = full.choices[0].text
    stop = text[5:8]
    kw = dict(prompt=PROMPT, max_tokens=30, temperature=0, ignore_eos=True)
    cut = complete(client, stop=[stop, "zzzz"], **kw)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    one = complete(client, stop=stop, **kw)  # a string, not a list
    assert one.choices[0].text == text[: text.index(stop)]


def test_logprobs_come_from_one_log_softmax(client):
    r = complete(client, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3, ignore_eos=True)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3  # the greedy token is among its top 3
        assert value == max(top.values()) == top[token]  # exactly: the same log-softmax
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5
    # Offsets count characters from the start of the prompt.
    assert lp.text_offset[0] == len(PROMPT)
    assert lp.text_offset[1] == len(PROMPT) + len(lp.tokens[0])


def test_echoed_prompt_logprobs_equal_the_scorer_and_transformers(lenient, tiny):
    from gpt2kit.eval.scorer import score_tokens

    hf, model, tokenizer, _ = tiny
    text = "It was the best of times, it was the worst of times."
    ids = tokenizer.encode(text)
    for prompt, max_tokens in [(text, 1), (ids, 0)]:  # scoring: max_tokens 1, and 0
        r = complete(
            lenient, prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=2, ignore_eos=True
        )
        lp = r.choices[0].logprobs
        assert r.choices[0].text.startswith(text)
        assert lp.tokens[: len(ids)] == [tokenizer.decode([i]) for i in ids]
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.text_offset[: len(ids)] == [
            len(tokenizer.decode(ids[:i])) for i in range(len(ids))
        ]
        assert len(lp.tokens) == len(ids) + max_tokens
        served = torch.tensor(lp.token_logprobs[1 : len(ids)], dtype=torch.float64)
        # The scorer's per-token log-probabilities: each prefix's total loss minus the last's.
        nats = [0.0] + [
            score_tokens(model, ids[: t + 1], stride=t + 1, block_size=t + 1)[0]
            for t in range(1, len(ids))
        ]
        scorer = -torch.tensor(nats).diff()
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
        reference = logits.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(served, scorer.double(), atol=1e-4, rtol=0)
        torch.testing.assert_close(served, reference, atol=1e-4, rtol=0)
        assert r.usage.completion_tokens == max_tokens


def test_scoring_a_batch_of_token_id_prompts(lenient, tiny):
    _, _, tokenizer, _ = tiny
    prompts = tokenizer.encode_batch(["one two three", "four five six seven"])
    kw = dict(max_tokens=1, echo=True, logprobs=0, temperature=0, ignore_eos=True)
    batch = complete(lenient, prompt=prompts, **kw)
    for prompt, choice in zip(prompts, batch.choices, strict=True):
        alone = complete(lenient, prompt=prompt, **kw)
        assert choice.logprobs.token_logprobs == alone.choices[0].logprobs.token_logprobs
        assert len(choice.logprobs.tokens) == len(prompt) + 1


def test_streaming_sends_the_text_piece_by_piece_then_usage(lenient):
    kw = dict(prompt=PROMPT, max_tokens=20, temperature=0, ignore_eos=True)
    whole = complete(lenient, **kw).choices[0].text
    chunks = list(complete(lenient, stream=True, stream_options={"include_usage": True}, **kw))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole
    assert len(texts) > 3  # piece by piece, not at once
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)


def test_a_streamed_echo_with_logprobs_matches_the_whole_response(lenient):
    kw = dict(prompt=PROMPT, max_tokens=8, temperature=0, echo=True, logprobs=2, n=2)
    whole = complete(lenient, **kw)
    chunks = list(complete(lenient, stream=True, **kw))
    for i, choice in enumerate(whole.choices):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(c.text for c in mine) == choice.text
        tokens = [t for c in mine for t in c.logprobs.tokens]
        values = [v for c in mine for v in c.logprobs.token_logprobs]
        assert tokens == choice.logprobs.tokens
        assert values == choice.logprobs.token_logprobs


def test_text_offsets_count_characters_when_tokens_split_them(lenient, tiny):
    # GPT-2 spells each of these characters with two or three byte tokens.
    _, _, tokenizer, _ = tiny
    text = "红楼梦 😀 café and more"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split()) + 6
    kw = dict(prompt=text, max_tokens=6, temperature=0, echo=True, logprobs=0, ignore_eos=True)
    whole = complete(lenient, **kw).choices[0]
    lp = whole.logprobs
    # Offsets index the returned text: each token of a split character sits at its start.
    assert lp.text_offset[: len(ids)] == [
        len(tokenizer.decode(ids[:k]).rstrip("\ufffd")) for k in range(len(ids))
    ]
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):
        if not token.startswith("bytes:"):  # a whole character or more
            assert whole.text[offset : offset + len(token)] == token
    chunks = [c.choices[0] for c in complete(lenient, stream=True, **kw) if c.choices]
    streamed = [o for c in chunks for o in c.logprobs.text_offset]
    assert streamed == lp.text_offset


def test_chat_answers_with_the_template_and_stops_at_the_next_turn(client, server):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there"},
    ]
    r = client.chat.completions.create(
        model=NAME, messages=messages, max_completion_tokens=20, temperature=0
    )
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    template = "You are terse.\n\nUser: Hi there\nAssistant:"
    plain = complete(client, prompt=template, max_tokens=20, temperature=0, stop=["\nUser:"])
    assert r.choices[0].message.content == plain.choices[0].text
    assert r.choices[0].finish_reason == plain.choices[0].finish_reason
    assert r.usage.prompt_tokens == plain.usage.prompt_tokens
    old_name = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=20, temperature=0
    )
    assert old_name.choices[0].message.content == r.choices[0].message.content


def test_chat_streams_deltas_and_logprobs(client):
    messages = [{"role": "user", "content": "Tell me a story"}]
    kw = dict(model=NAME, messages=messages, max_tokens=12, temperature=0, logprobs=True)
    whole = client.chat.completions.create(top_logprobs=2, **kw)
    chunks = list(
        client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, top_logprobs=2, **kw
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == whole.choices[0].message.content
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.logprob == entry.top_logprobs[0].logprob  # greedy: the top one
        raw = bytes(entry.bytes).decode("utf-8", "replace")
        assert raw == entry.token or "\ufffd" in entry.token  # a piece of a character
    streamed = [
        e.logprob
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert streamed == [e.logprob for e in content]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [NAME]
    assert models.data[0].object == "model" and models.data[0].owned_by == "gpt2kit"
    assert client.models.retrieve(NAME).id == NAME


def test_a_request_gives_the_same_alone_and_among_15_others(server):
    """Greedy text and seeded samples of a request do not depend on what shares its batch."""
    client = openai_client(server.base)
    streams = openai_client(server.base, strict=False)  # a stream's chunks: finish_reason null
    greedy = dict(prompt=PROMPT, max_tokens=20, temperature=0, ignore_eos=True)
    seeded = dict(prompt="Hello world", max_tokens=20, seed=99, top_p=0.9, ignore_eos=True)
    alone = [complete(client, **greedy).choices[0].text, complete(client, **seeded).choices[0].text]

    # 14 long streams of varied controls run while the two requests are served again.
    started = threading.Barrier(15)

    def other(i: int) -> None:
        stream = complete(
            streams, prompt=f"Noise number {i} " * (1 + i % 4), max_tokens=64, stream=True,
            temperature=[0, 0.7, 1.3][i % 3], top_k=[0, 5][i % 2], seed=i, ignore_eos=True,
            extra_body={"repetition_penalty": 1.0 + 0.1 * (i % 3), "no_repeat_ngram_size": i % 3},
        )  # fmt: skip
        chunks = iter(stream)
        next(chunks)
        started.wait(timeout=60)
        for _ in chunks:
            pass

    with ThreadPoolExecutor(16) as pool:
        others = [pool.submit(other, i) for i in range(14)]
        started.wait(timeout=60)  # all 14 are being decoded
        busy = server.scheduler.running
        together = [pool.submit(complete, client, **kw) for kw in (greedy, seeded)]
        texts = [f.result().choices[0].text for f in together]
        for f in others:
            f.result()
    assert busy >= 14
    assert texts == alone


def test_an_empty_prompt_starts_from_end_of_text(client):
    r = complete(client, prompt="", max_tokens=4, temperature=0, ignore_eos=True)
    assert r.usage.prompt_tokens == 0 and r.usage.completion_tokens == 4


def test_a_prompt_that_fills_the_context_exactly_is_served(client, tiny):
    _, _, tokenizer, _ = tiny
    ids = (tokenizer.encode(" a b c d e f g h") * 20)[: CONTEXT - 4]
    r = complete(client, prompt=ids, max_tokens=4, temperature=0, ignore_eos=True)
    assert r.usage.completion_tokens == 4


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_0_with_echo_returns_the_prompt_only(lenient, stream):
    r = complete(lenient, prompt=PROMPT, max_tokens=0, echo=True, stream=stream)
    if stream:
        chunks = list(r)
        assert "".join(c.choices[0].text for c in chunks) == PROMPT
        assert chunks[-1].choices[0].finish_reason == "length"
    else:
        assert r.choices[0].text == PROMPT and r.usage.completion_tokens == 0


def test_text_held_back_for_a_stop_string_sends_no_empty_chunks(client, lenient):
    # A stop string that starts with the 3rd and 4th tokens holds their text back until the
    # 5th shows it is not there; meanwhile a stream sends nothing (OpenAI never sends "").
    kw = dict(prompt=PROMPT, max_tokens=12, temperature=0, ignore_eos=True)
    tokens = complete(client, logprobs=0, **kw).choices[0].logprobs.tokens
    stop = tokens[2] + tokens[3] + "\x00"
    chunks = [c.choices[0] for c in complete(lenient, stream=True, stop=[stop], **kw)]
    assert "".join(c.text for c in chunks) == "".join(tokens)
    assert all(c.text for c in chunks[:-1]), [c.text for c in chunks]
    messages = [{"role": "user", "content": "Tell me a story"}]
    chat = dict(model=NAME, messages=messages, max_tokens=12, temperature=0)
    reply = client.chat.completions.create(logprobs=True, **chat).choices[0]
    pieces = [e.token for e in reply.logprobs.content]
    stream = client.chat.completions.create(
        stream=True, stop=[pieces[2] + pieces[3] + "\x00"], **chat
    )
    deltas = [c.choices[0].delta for c in stream if c.choices][1:-1]  # after the role's
    assert "".join(d.content for d in deltas) == reply.message.content
    assert all(d.content for d in deltas), [d.content for d in deltas]


def test_tokens_that_split_a_character_are_named_by_their_bytes(lenient, tiny):
    # As OpenAI's API names them ("bytes:\\xe7\\xba"), so that the pieces of different
    # characters do not all read "\ufffd" and share one top_logprobs entry.
    _, _, tokenizer, _ = tiny
    text = "红楼梦 😀 café"
    ids = tokenizer.encode(text)
    r = complete(lenient, prompt=ids, max_tokens=0, echo=True, logprobs=5)
    lp = r.choices[0].logprobs
    for token, name in zip(ids, lp.tokens, strict=True):
        piece = tokenizer.decode([token])
        assert name == piece if "\ufffd" not in piece else name.startswith("bytes:\\x")
    rows = zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
    for name, value, top in list(rows)[1:]:  # the first token has no log-probability
        assert top[name] == value and len(top) >= 5
