"""Text generation with a preallocated KV cache: the `Generator` API and `gpt2kit generate`.

The prompt (a batch of prompts, left-padded) is processed in one forward pass; then each step
feeds one token per row through the cached model. Per-token Python work is the sampling step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2kit.config import option
from gpt2kit.errors import UserError
from gpt2kit.hf import load_model
from gpt2kit.model import GPT2, KVCache
from gpt2kit.runtime import (
    DEVICES,
    PRECISIONS,
    device_problem,
    precision_problem,
    resolve_device,
    resolve_precision,
)
from gpt2kit.tokenizer import Tokenizer


@dataclass
class GenerateConfig:
    """Options of `gpt2kit generate`."""

    model: str = option(
        help="A Hugging Face-format model folder, a hub id (e.g. gpt2) or a run folder from `gpt2kit train`.",
        positional=True,
        metavar="MODEL",
    )
    prompt: str = option(
        "",
        help="The text to continue ('-' reads it from stdin; empty starts from <|endoftext|>).",
        positional=True,
        metavar="PROMPT",
    )
    max_new_tokens: int = option(100, help="How many tokens to generate at most.")
    temperature: float = option(
        1.0, help="Sampling temperature; 0 means greedy decoding (always the most likely token)."
    )
    seed: int | None = option(None, help="Random seed: the same seed gives the same text.")
    device: str = option("auto", help=f"Where to run: {', '.join(DEVICES)}.")
    precision: str = option(
        "auto",
        help=f"Numeric precision: {', '.join(PRECISIONS)} (auto: bf16 on GPUs, fp32 on CPU).",
    )

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        problems += filter(None, [device_problem(self.device), precision_problem(self.precision)])
        if problems:
            raise UserError("Invalid options for generate:", problems)


@dataclass
class Completion:
    """One generated continuation: its text, its token ids and why it ended (`eos` or `length`)."""

    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str


class Generator:
    """A loaded model ready to generate many times: `Generator.from_pretrained(MODEL)`."""

    def __init__(self, model: GPT2, tokenizer: Tokenizer, folder: Path | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.folder = folder

    @classmethod
    def from_pretrained(
        cls, spec: str | Path, device: str = "auto", precision: str = "auto"
    ) -> Generator:
        """Load MODEL (folder, hub id or run folder) onto `device` in `precision`."""
        dev = resolve_device(device)
        model, tokenizer, folder = load_model(
            spec, device=dev, dtype=resolve_precision(precision, dev)
        )
        return cls(model, tokenizer, folder)

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

    @torch.inference_mode()
    def generate_ids(
        self,
        prompts: list[list[int]],
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        seed: int | None = None,
        stop_at_eos: bool = True,
    ) -> list[tuple[list[int], str]]:
        """Continue each prompt (a list of token ids) and return `(new_ids, finish_reason)`.

        Prompts of different lengths are left-padded and masked, so each row gives the same
        tokens it would give alone. Greedy when `temperature` is 0.
        """
        eos = self.tokenizer.eos_id
        prompts = [p if p else [eos] for p in prompts]
        B, P = len(prompts), max(len(p) for p in prompts)
        total = P + max_new_tokens
        if total > self.model.config.n_positions:
            raise UserError(
                f"Prompt ({P} tokens) + --max-new-tokens ({max_new_tokens}) exceeds the model's "
                f"context of {self.model.config.n_positions} tokens; ask for fewer new tokens."
            )
        dev = self.device
        idx = torch.full((B, P), eos, dtype=torch.long, device=dev)
        mask = torch.zeros((B, total), dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):  # left padding: real tokens end at column P - 1
            idx[i, P - len(p) :] = torch.tensor(p, device=dev)
            mask[i, P - len(p) : P] = 1
        padded = any(len(p) != P for p in prompts)
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed if seed is not None else torch.seed())
        cache = KVCache(
            self.model.config, B, total, device=dev, dtype=self.model.lm_head.weight.dtype
        )
        positions = (mask[:, :P].cumsum(-1) - 1).clamp(min=0)  # (B, P)
        logits = self.model(
            idx,
            attention_mask=mask if padded else None,
            position_ids=positions,
            cache=cache,
            last_only=True,
        )[:, -1, :]  # (B, V)
        out = torch.empty((B, max_new_tokens), dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        steps = 0
        for t in range(max_new_tokens):
            token = self._sample(logits, temperature, gen)  # (B,)
            token = torch.where(done, torch.full_like(token, eos), token)
            out[:, t] = token
            steps = t + 1
            if stop_at_eos:
                done |= token == eos
                if bool(done.all()):
                    break
            if t == max_new_tokens - 1:
                break
            mask[:, P + t] = 1
            logits = self.model(
                token.unsqueeze(1),
                attention_mask=mask if padded else None,
                position_ids=next_pos,
                cache=cache,
            )[:, -1, :]
            next_pos = next_pos + 1
        results = []
        for row in out[:, :steps].tolist():
            if stop_at_eos and eos in row:
                results.append((row[: row.index(eos)], "eos"))
            else:
                results.append((row, "length"))
        return results

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)

    def generate(
        self,
        prompts: str | list[str],
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[Completion]:
        """Continue each prompt text; returns one `Completion` per prompt."""
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = [self.tokenizer.encode(t) for t in texts]
        results = self.generate_ids(ids, max_new_tokens, temperature, seed)
        return [
            Completion(
                prompt=t, text=self.tokenizer.decode(new), token_ids=new, finish_reason=reason
            )
            for t, (new, reason) in zip(texts, results, strict=True)
        ]


def run_generate(config: GenerateConfig) -> list[Completion]:
    """The `gpt2kit generate` command: print the prompt's continuation to stdout."""
    prompt = sys.stdin.read() if config.prompt == "-" else config.prompt
    generator = Generator.from_pretrained(config.model, config.device, config.precision)
    completions = generator.generate(prompt, config.max_new_tokens, config.temperature, config.seed)
    for c in completions:
        sys.stdout.write(c.prompt + c.text + "\n")
    sys.stdout.flush()
    return completions
