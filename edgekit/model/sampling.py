"""Token sampling: greedy, temperature, top-k and top-p, reproducible from a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import GenerationError


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 is greedy (argmax); top_k 0 and top_p 1.0 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    """Picks the next token from a logits vector; one `numpy.random.Generator` per sampler."""

    def __init__(self, config: SamplingConfig = SamplingConfig()):
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The distribution actually sampled from, after temperature, top-k and top-p ([vocab] float64)."""
        c = self.config
        z = np.asarray(logits, dtype=np.float64) / c.temperature
        if c.top_k and c.top_k < z.size:
            kth = np.partition(z, -c.top_k)[-c.top_k]
            z = np.where(z >= kth, z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        if c.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cumulative = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cumulative, c.top_p) + 1)]  # smallest set reaching top_p
            mask = np.zeros_like(p, dtype=bool)
            mask[keep] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return p

    def sample(self, logits: np.ndarray) -> int:
        if self.config.temperature == 0.0:
            return int(np.argmax(logits))
        p = self.probabilities(logits)
        return int(self.rng.choice(p.size, p=p))
