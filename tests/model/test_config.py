"""ModelConfig validation and round trip; small reference helpers."""

from __future__ import annotations


import numpy as np
import pytest

from edgekit.errors import ConfigError
from edgekit.model import ModelConfig, RopeConfig
from edgekit.model.loaders.common import half_to_interleaved, interleaved_to_half
from edgekit.model.reference import quantize_absmax_int8, round_half_away

BASE = dict(architecture="llama", dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512,
            max_seq_len=512)


def test_round_trip_through_json_dict():
    config = ModelConfig(**BASE, rope=RopeConfig(theta=5e5, scaling="llama3", factor=8.0), qk_norm=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.head_dim == 8 and config.kv_dim == 32


@pytest.mark.parametrize("change,field", [
    (dict(n_kv_heads=3), "n_kv_heads"), (dict(dim=0), "dim"), (dict(activation="gelu"), "activation"),
    (dict(head_dim=7), "head_dim"), (dict(norm_eps=2.0), "norm_eps"), (dict(act_quant="int4"), "act_quant"),
])
def test_invalid_values_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{**BASE, **change})


def test_unknown_fields_are_listed():
    with pytest.raises(ConfigError, match="n_experts"):
        ModelConfig.from_dict({**BASE, "n_experts": 8})


def test_rope_scaling_validation():
    with pytest.raises(ConfigError, match="yarn"):
        RopeConfig(scaling="yarn")
    with pytest.raises(ConfigError, match="high_freq_factor"):
        RopeConfig(scaling="llama3", factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0)


def test_rope_permutations_are_inverse():
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(32, 3)
    np.testing.assert_array_equal(interleaved_to_half(half_to_interleaved(w, 4), 4), w)
    # head 0 of an interleaved layout (x0, y0, x1, y1, ...) becomes (x0, x1, ..., y0, y1, ...)
    assert interleaved_to_half(w, 4)[:8, 0].tolist() == [0, 6, 12, 18, 3, 9, 15, 21]


def test_absmax_int8_rounds_half_away_from_zero():
    assert round_half_away(np.array([0.5, -0.5, 1.5, -2.5, 0.49])).tolist() == [1, -1, 2, -3, 0]
    q, scale = quantize_absmax_int8(np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert q[0].tolist() == [127, -64, 32] and scale[0, 0] == np.float32(1 / 127)
    assert q[1].tolist() == [0, 0, 0] and scale[1, 0] == 0
