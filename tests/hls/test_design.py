"""HlsConfig validation and JSON round trip; the design's layout matches what the packer writes."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import ConfigError
from edgekit.hls.design import HlsConfig, design_for
from edgekit.hls.model_data import extract_device_data
from tests.hls.synthetic import synthetic_model


def test_json_round_trip():
    config = HlsConfig(group=4, half_table=False, lanes=32, tile_tokens=2, key_block=8, attn_macs=4, max_seq=64)
    assert HlsConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize("field,value", [("group", 0), ("group", 7), ("lanes", 0), ("lanes", True),
                                         ("tile_tokens", 1.5), ("attn_macs", 1000), ("max_seq", -1),
                                         ("version", 2)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field if field != "version" else "version"):
        HlsConfig(**{field: value})


def test_unknown_json_fields_are_refused():
    with pytest.raises(ConfigError, match="lane"):
        HlsConfig.from_json({"lane": 4})


def test_context_beyond_the_model_is_refused():
    model = synthetic_model()
    with pytest.raises(ConfigError, match="max_seq 4096 exceeds") as error:
        design_for(model.config, HlsConfig(max_seq=4096))
    assert "--max-seq" in error.value.fix


def test_offsets_match_the_packed_data():
    model = synthetic_model()
    design = design_for(model.config, HlsConfig(lanes=3, max_seq=16))
    data = extract_device_data(model, design)
    assert data.weights.size == design.layers * design.matrix_offsets()["layer"]
    assert data.params.size == design.layers * design.param_offsets()["layer"]
    assert data.rope.shape == (16, design.head_dim // 2, 2)
