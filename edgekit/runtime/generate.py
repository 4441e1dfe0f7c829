"""Streaming generation over any `Backend`, with prefill and decode timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from edgekit.errors import GenerationError
from edgekit.model.sampling import Sampler, SamplingConfig
from edgekit.runtime.backend import Backend


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""
    tokens: list[int] = field(default_factory=list)

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # The first generated token comes from the prefill logits; decode steps = generated - 1.
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


def generate_tokens(backend: Backend, prompt: Sequence[int], max_tokens: int,
                    sampling: SamplingConfig = SamplingConfig(), stats: GenerationStats | None = None,
                    stop_at_eos: bool = True) -> Iterator[int]:
    """Yield up to `max_tokens` new token ids after `prompt`, stopping early at EOS or the context end."""
    if not prompt:
        raise GenerationError("the prompt has no tokens", fix="pass a non-empty prompt (BOS counts)")
    if max_tokens < 0:
        raise GenerationError(f"max_tokens must be >= 0, got {max_tokens}")
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(prompt)
    sampler = Sampler(sampling)
    eos = set(backend.model.tokenizer.eos_ids) if stop_at_eos else set()
    start = time.perf_counter()
    logits = backend.prefill(list(prompt))[-1]
    stats.prefill_seconds = time.perf_counter() - start
    decode_start = time.perf_counter()
    stats.stop_reason = "max_tokens"
    for i in range(max_tokens):
        token = sampler.sample(logits)
        if token in eos:
            stats.stop_reason = "eos"
            break
        stats.tokens.append(token)
        stats.generated_tokens += 1
        yield token
        if i + 1 == max_tokens:
            break
        if backend.position >= backend.context_length:
            stats.stop_reason = "context"
            break
        logits = backend.decode(token)
        stats.decode_seconds = time.perf_counter() - decode_start


class TextStream:
    """Turns a growing list of token ids into text pieces, holding back incomplete UTF-8 sequences.

    Decoding the whole sequence each time (prompt included) keeps the spaces that sentencepiece-style
    decoders strip from the start of a text.
    """

    def __init__(self, tokenizer, prompt: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prompt)
        self.emitted = tokenizer.decode(self.ids)

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character is split across tokens; wait for the rest
        piece = text[len(self.emitted):] if text.startswith(self.emitted) else text
        self.emitted = text
        return piece
