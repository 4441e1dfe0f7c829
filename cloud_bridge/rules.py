"""Exit rules: how the exit heads' logits become the score an exit's threshold is compared with.

An exit at layer l answers the token when `rule.score(l, logits) >= threshold[l]`, where `logits` holds the
logits of every exit evaluated so far for this token (the exits at or below l; exits are evaluated bottom
up, so the lower ones come for free). Scores lie in [0, 1] and grow with confidence, so the same
threshold machinery serves every rule: per-exit calibration (`train.calibrate_thresholds`) and the
latency-aware drop (`session.AdaptiveThreshold`) lower a threshold to take more tokens at the edge.

Registered rules (`RULES`, stored with the exits as `{"name": ..., **params}` in the `bridge_exits` metadata;
files without a rule use max-softmax):

- `max-softmax`: the largest softmax probability (CE-CoLLM's criterion).
- `margin`: p1 - p2, the gap between the two most likely tokens.
- `learned`: a per-exit logistic regression (CALM-style confidence predictor) over features of this exit
  and the exits below it (`features`), fitted on held-out rows to P(exit token == full model token).
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import ConfigError


def softmax_stats(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """logits [T, vocab] -> (probabilities [T, vocab] float64, p1 [T], p2 [T], argmax [T])."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[:, -2:]
    return p, top2[:, 1], top2[:, 0], p.argmax(axis=-1)


class ExitRule:
    name = ""

    def score(self, layer: int, logits: dict[int, np.ndarray]) -> np.ndarray:
        """{exit layer: logits [T, vocab]} for the exits <= layer -> score [T] in [0, 1]."""
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"name": self.name}


class MaxSoftmax(ExitRule):
    name = "max-softmax"

    def score(self, layer: int, logits: dict[int, np.ndarray]) -> np.ndarray:
        return softmax_stats(logits[layer])[1]


class Margin(ExitRule):
    name = "margin"

    def score(self, layer: int, logits: dict[int, np.ndarray]) -> np.ndarray:
        _, p1, p2, _ = softmax_stats(logits[layer])
        return p1 - p2


def features(layer: int, logits: dict[int, np.ndarray]) -> np.ndarray:
    """Features of exit `layer` for the learned rule, [T, F]: its p1, margin, entropy, log p1, log margin;
    for each lower exit e: e's p1, whether e's argmax equals this exit's, and this exit's probability of e's
    argmax (agreement of consecutive exits, free because the lower exits ran first)."""
    p, p1, p2, top = softmax_stats(logits[layer])
    entropy = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1)
    cols = [p1, p1 - p2, entropy, np.log(p1), np.log(np.maximum(p1 - p2, 1e-6))]
    for lower in sorted(e for e in logits if e < layer):
        _, q1, _, q_top = softmax_stats(logits[lower])
        cols += [q1, (q_top == top).astype(np.float64), np.take_along_axis(p, q_top[:, None], axis=1)[:, 0]]
    return np.stack(cols, axis=1)


class Learned(ExitRule):
    """score = sigmoid(w . standardized features + b) per exit; `weights` {layer: (mean, std, w with bias first)}."""

    name = "learned"

    def __init__(self, weights: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self.weights = weights

    def score(self, layer: int, logits: dict[int, np.ndarray]) -> np.ndarray:
        if layer not in self.weights:
            raise ConfigError(f"the learned exit rule has no predictor for exit {layer}",
                              fix="retrain the exits with edgekit bridge train-exits --rule learned")
        mean, std, w = self.weights[layer]
        x = (features(layer, logits) - mean) / std
        return 1.0 / (1.0 + np.exp(-(x @ w[1:] + w[0])))

    @classmethod
    def fit(cls, rows: dict[int, np.ndarray], correct: dict[int, np.ndarray], l2: float = 1e-3,
            iterations: int = 30) -> "Learned":
        """Logistic regression per exit by Newton's method: rows {layer: features [N, F]}, correct {layer: [N] bool}."""
        weights = {}
        for layer, x in rows.items():
            mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
            z = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
            y, w = correct[layer].astype(np.float64), np.zeros(z.shape[1])
            for _ in range(iterations):
                p = 1.0 / (1.0 + np.exp(-(z @ w)))
                hessian = (z * (p * (1 - p))[:, None]).T @ z + l2 * np.eye(len(w))
                w -= np.linalg.solve(hessian, z.T @ (p - y) + l2 * w)
            weights[layer] = (mean, std, w)
        return cls(weights)

    def to_json(self) -> dict:
        return {"name": self.name, "weights": {str(l): [m.tolist(), s.tolist(), w.tolist()]
                                               for l, (m, s, w) in sorted(self.weights.items())}}


RULES = {"max-softmax": MaxSoftmax, "margin": Margin, "learned": Learned}


def rule_from_json(raw: dict | None) -> ExitRule:
    """The rule stored with the exits (None: max-softmax, what files without a rule were calibrated for)."""
    if raw is None:
        return MaxSoftmax()
    name = raw.get("name")
    if name not in RULES:
        raise ConfigError(f"exit rule {name!r} is not one of {sorted(RULES)}", fix="retrain the exits with this "
                          "edgekit version (edgekit bridge train-exits)")
    if name == "learned":
        weights = {int(l): tuple(np.asarray(v, dtype=np.float64) for v in parts)
                   for l, parts in raw.get("weights", {}).items()}
        return Learned(weights)
    return RULES[name]()


def make_rule(name: str) -> ExitRule:
    """A rule without fitted parameters, by name (`learned` is fitted in training, not made here)."""
    if name not in RULES or name == "learned":
        raise ConfigError(f"exit rule {name!r} is not one of {sorted(RULES)}", fix="use max-softmax or margin")
    return RULES[name]()
