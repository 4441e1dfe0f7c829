"""Sampling: greedy, temperature, top-k, top-p and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import GenerationError
from edgekit.model.sampling import Sampler, SamplingConfig

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.06, 0.04]))


def test_greedy_is_argmax():
    assert Sampler(SamplingConfig(temperature=0.0)).sample(np.array([0.1, 3.0, -1.0])) == 1


def test_same_seed_same_tokens_and_different_seed_differs():
    draw = lambda seed: [Sampler(SamplingConfig(temperature=1.0, seed=seed)).sample(LOGITS) for _ in range(1)]
    a = Sampler(SamplingConfig(temperature=1.0, seed=7))
    b = Sampler(SamplingConfig(temperature=1.0, seed=7))
    c = Sampler(SamplingConfig(temperature=1.0, seed=8))
    seq = lambda s: [s.sample(LOGITS) for _ in range(50)]
    first = seq(a)
    assert first == seq(b)
    assert first != seq(c)
    assert draw(1) == draw(1)


def test_temperature_one_samples_the_softmax():
    sampler = Sampler(SamplingConfig(temperature=1.0, seed=0))
    counts = np.bincount([sampler.sample(LOGITS) for _ in range(20000)], minlength=5) / 20000
    np.testing.assert_allclose(counts, np.exp(LOGITS), atol=0.015)


def test_low_temperature_sharpens():
    p = Sampler(SamplingConfig(temperature=0.5)).probabilities(LOGITS)
    expected = np.exp(LOGITS * 2) / np.exp(LOGITS * 2).sum()
    np.testing.assert_allclose(p, expected, rtol=1e-12)


def test_top_k_keeps_k_tokens():
    p = Sampler(SamplingConfig(temperature=1.0, top_k=2)).probabilities(LOGITS)
    np.testing.assert_allclose(p, [2 / 3, 1 / 3, 0, 0, 0], rtol=1e-12)


def test_top_p_keeps_the_smallest_set_reaching_p():
    p = Sampler(SamplingConfig(temperature=1.0, top_p=0.8)).probabilities(LOGITS)
    np.testing.assert_allclose(p, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0], rtol=1e-12)
    p = Sampler(SamplingConfig(temperature=1.0, top_p=0.5)).probabilities(LOGITS)
    np.testing.assert_allclose(p, [1, 0, 0, 0, 0])


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)])
def test_bad_sampling_values(kwargs):
    with pytest.raises(GenerationError):
        SamplingConfig(**kwargs)
