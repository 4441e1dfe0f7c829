"""The native engine's element-wise steps in numpy, with fewer temporaries than the reference's versions.

Each function returns exactly (bit for bit) what its namesake in edgekit.model.reference returns, because
it performs the same float32 operations in the same order; only allocation differs (tests hold them to
the reference). np.mean(x, axis=-1) is np.add.reduce followed by one correctly rounded division by the count,
which is what rms() does without np.mean's Python-level overhead (~5 us a call).
"""

from __future__ import annotations

import numpy as np


def mean_square(x: np.ndarray) -> np.ndarray:
    """mean(x^2) over the last axis, keepdims: [..., n] -> [..., 1] (np.mean's float32 result)."""
    ms = np.add.reduce(x * x, axis=-1, keepdims=True)
    ms /= x.shape[-1]
    return ms


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """reference.rms_norm: x / sqrt(mean(x^2) + eps) * weight."""
    denom = mean_square(x)
    denom += eps
    np.sqrt(denom, out=denom)
    y = x / denom
    if weight is not None:
        y *= weight
    return y


def bitlinear_norm(x: np.ndarray) -> np.ndarray:
    """reference.bitlinear_norm: x / (n * rms(x)), rows with rms 0 (or NaN) divided by 1."""
    rms = mean_square(x)
    np.sqrt(rms, out=rms)
    positive = rms > 0
    rms *= x.shape[-1]
    if not positive.all():
        rms[~positive] = 1.0
    return x / rms


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """reference.apply_rope with its tables: x [T, heads, hd], cos/sin [T, 1, hd/2] -> rotated [T, heads, hd]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = np.empty(x.shape, dtype=np.float32)
    first, second = out[..., :half], out[..., half:]
    np.multiply(x1, cos, out=first)
    first -= x2 * sin                      # x1 cos - x2 sin
    np.multiply(x2, cos, out=second)
    second += x1 * sin                     # x2 cos + x1 sin
    return out


def softmax_inplace(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, overwriting `scores` (float32; -inf entries become 0)."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def silu_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gate / (1 + exp(-gate)) * up, the reference's SwiGLU expression, in one buffer."""
    out = np.negative(gate)
    np.exp(out, out=out)
    out += 1.0
    np.divide(gate, out, out=out)
    out *= up
    return out


def relu2_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """square(max(gate, 0)) * up (BitNet's squared ReLU), in one buffer."""
    out = np.maximum(gate, 0.0)
    np.square(out, out=out)
    out *= up
    return out
