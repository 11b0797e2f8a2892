"""Loss, perplexity and bits per character of a model on text: `gpt2kit eval`.

The text is scored with a sliding window, as in Hugging Face's perplexity guide
(https://huggingface.co/docs/transformers/perplexity): windows of `block_size` tokens start
every `stride` tokens, and each window scores only the tokens the previous windows did not, so
every token but the first is predicted exactly once, with at least `block_size - stride` tokens
of context (except at the start). A stride equal to the block size gives disjoint blocks (fast,
pessimistic, and the first token of each window, without context, is not scored); GPT-2's
published perplexities use a block of 1,024 and a stride of 512 or less.

Several text sources are joined with blank lines ("\\n\\n", as the guide joins WikiText) into one
stream; a prepared DATA_DIR contributes its validation split, token for token. Bits per
character are the total negative log-likelihood (nats) over the scored tokens, divided by the
number of characters those tokens cover and by ln 2. That count starts from the whole text
(for a DATA_DIR, its `val_chars`: the characters of its validation documents, end-of-text
separators counting for none) and takes away the characters of the tokens no window scores:
the very first token, and with --stride equal to --block-size the first token of each window.

Inside a torch.distributed process group (validation during a `torchrun` training job) every
rank must call the scorer: each scores every N-th batch of windows and the totals are summed
over the ranks, so all of them get the single-process figures (up to float summation order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from gpt2kit.errors import UserError
from gpt2kit.model import GPT2
from gpt2kit.tokenizer import Tokenizer


def default_stride(block_size: int) -> int:
    """The stride used when none is given: half the window (at least 1), at most 512, so
    every token has at least half a window of context and any model's defaults work."""
    return max(1, min(512, block_size // 2))


def sliding_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows of Hugging Face's perplexity guide over `n_tokens` tokens.

    Returns `(begin, end, first)` per window: the window holds tokens `[begin, end)` and scores
    tokens `[first, end)`, those no earlier window scored. A window's first token has no
    context in it, so token 0 is never scored, nor, when `stride == block_size`, the first
    token of each window.
    """
    windows, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        windows.append((begin, end, max(begin + 1, prev_end)))
        prev_end = end
        if end == n_tokens:
            break
    return windows


@torch.inference_mode()
def score_tokens(
    model: GPT2,
    ids: Sequence[int] | np.ndarray | torch.Tensor,
    stride: int | None = None,
    block_size: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of `ids` under `model`, with a sliding window.

    Returns `(nats, scored)`: the summed loss and the number of tokens scored (all but the
    first, see `sliding_windows`). Windows of equal length are batched `batch_size` at a time;
    the result does not depend on the batch size beyond float rounding. `stride` defaults to
    `default_stride(block_size)`. In a process group, the batches are shared out over the
    ranks and the totals summed (see the module's docstring).
    """
    block = block_size or model.config.n_positions
    stride = stride or default_stride(block)
    if block > model.config.n_positions:
        raise UserError(
            f"--block-size {block} exceeds the model's context of {model.config.n_positions}."
        )
    if stride > block:
        raise UserError(f"--stride ({stride}) cannot exceed the window of {block} tokens.")
    tokens = torch.as_tensor(np.asarray(ids, dtype=np.int64))  # (N,)
    if tokens.numel() < 2:
        raise UserError("The text has fewer than 2 tokens: there is nothing to score.")
    dev = model.lm_head.weight.device
    windows = sliding_windows(tokens.numel(), block, stride)
    batches: list[list[tuple[int, int, int]]] = []
    for w in windows:  # consecutive windows of one length share a batch
        if batches and len(batches[-1]) < batch_size and _length(batches[-1][0]) == _length(w):
            batches[-1].append(w)
        else:
            batches.append([w])
    rank, world = _rank_and_world()
    mine = batches[rank::world]
    nats, scored = 0.0, 0
    bar = tqdm(total=len(windows), desc="eval", unit="window", disable=not progress or None)
    for i in range(math.ceil(len(batches) / world)):
        # A rank out of batches still runs one that scores nothing: under FSDP each forward
        # gathers parameters with every other rank, so all ranks run as many.
        batch = mine[i] if i < len(mine) else batches[0][:1]
        T = _length(batch[0])
        x = torch.stack([tokens[b:e] for b, e, _ in batch])  # (b, T)
        targets = torch.full((len(batch), T), -1, dtype=torch.long)  # -1: not scored
        if i < len(mine):
            for r, (b, e, first) in enumerate(batch):
                targets[r, first - 1 - b : e - 1 - b] = tokens[first:e]  # t predicts t+1
            scored += sum(e - first for _, e, first in batch)
            bar.update(len(batch))
        loss = model(x.to(dev), targets.to(dev), reduction="sum")
        nats += float(loss)
    bar.close()
    if world > 1:
        totals = torch.tensor([nats, scored], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(totals)
        nats, scored = float(totals[0]), int(totals[1])
    return nats, scored


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes of its process group ((0, 1) alone)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _length(window: tuple[int, int, int]) -> int:
    return window[1] - window[0]


def summarize(nats: float, tokens: int, chars: int) -> dict[str, float | int]:
    """Loss (nats/token), perplexity and bits per character (and the totals they come from)."""
    loss = nats / tokens
    return {
        "nats": nats,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_char": nats / chars / math.log(2) if chars > 0 else float("nan"),
        "bits_per_token": loss / math.log(2),
        "tokens": tokens,
        "chars": chars,
    }


def evaluate_text(
    model: GPT2,
    tokenizer: Tokenizer,
    text: str,
    stride: int | None = None,
    block_size: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Score `text`; returns `loss` (nats/token), `perplexity`, `bits_per_char`,
    `bits_per_token`, `tokens` (scored) and `chars` (covered by the scored tokens)."""
    return evaluate_ids(
        model,
        tokenizer,
        tokenizer.encode(text),
        len(text),
        stride,
        block_size,
        batch_size,
        max_tokens,
        progress,
    )


def evaluate_ids(
    model: GPT2,
    tokenizer: Tokenizer,
    ids: Sequence[int] | np.ndarray,
    chars: int,
    stride: int | None = None,
    block_size: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Score `ids`, a text of `chars` characters (recounted when cut to `max_tokens`).

    The one scorer of gpt2kit: `gpt2kit eval` and the validation during `gpt2kit train` both
    call it, so their loss and bits per character are the same figures. Returns what
    `summarize` returns, plus the `stride` and `block_size` used.
    """
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
        chars = tokenizer.count_chars(ids)
    block = block_size or model.config.n_positions
    stride = stride or default_stride(block)
    nats, scored = score_tokens(model, ids, stride, block, batch_size, progress)
    result = summarize(nats, scored, chars - unscored_chars(tokenizer, ids, block, stride))
    return {**result, "stride": stride, "block_size": block}


def unscored_chars(
    tokenizer: Tokenizer, ids: Sequence[int] | np.ndarray, block_size: int, stride: int
) -> int:
    """Characters of the tokens that no window scores (see `sliding_windows`): token 0 and,
    with disjoint windows (`stride == block_size`), the first token of every window."""
    skipped = [0, *range(block_size, len(ids), block_size)] if stride == block_size else [0]
    return sum(tokenizer.count_chars([ids[t]]) for t in skipped)
