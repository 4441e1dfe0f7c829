"""RTN / absmean quantization of real checkpoints: recipes, overrides, lossless ternary, measured quality."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError, QuantizationError
from edgekit.formats import PER_TENSOR, QuantizedTensor
from edgekit.model import load
from edgekit.model.model import Model
from edgekit.model.reference import KVCache, ReferenceForward
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.evaluate import evaluate_perplexity
from edgekit.quantize.pipeline import bits_report, quantize_model
from edgekit.runtime import open_backend

BITNET = ["bitllama2c_1M_ternary_msbfirst.bin", "bitllama2c_3M_ternary_lsbfirst.bin"]


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


def test_config_round_trip_and_validation():
    config = QuantizeConfig(format="ek_i4", method="rtn", group_size=64, overrides={r"layers\.0\..*": "ek_i8"},
                            keep_float=["output"], act_quant="none")
    assert QuantizeConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="ek_t2"):
        QuantizeConfig(format="q4_k")
    with pytest.raises(ConfigError, match="absmean"):
        QuantizeConfig(format="ek_t2", method="rtn")
    with pytest.raises(ConfigError, match=r"'bogus'.*rtn"):
        QuantizeConfig(format="ek_i4", method="bogus")
    with pytest.raises(ConfigError, match="group size 48"):
        QuantizeConfig(format="ek_i4", method="rtn", group_size=48)
    with pytest.raises(ConfigError, match="pattern"):
        QuantizeConfig(format="ek_i4", method="rtn", keep_float=["("])
    with pytest.raises(ConfigError, match="version"):
        QuantizeConfig(version=99)


def test_overrides_keep_float_and_embedding_formats(stories):
    config = QuantizeConfig(format="ek_i4", method="rtn", embedding_format="ek_i8",
                            overrides={r"layers\.1\.w2": "ek_i2"}, keep_float=[r"layers\.0\.w[13]"])
    packed = quantize_model(stories, config)
    t = packed.tensors
    assert t["tok_embeddings"].format == "ek_i8" and t["tok_embeddings"].group_size == 0
    assert t["layers.1.w2"].format == "ek_i2" and t["layers.1.w2"].group_size == 32
    assert t["layers.0.w1"].format == t["layers.0.w3"].format == "f16"
    assert t["layers.2.wq"].format == "ek_i4"
    assert isinstance(t["norm"], np.ndarray) and t["norm"].dtype == np.float32
    report = {row["name"]: row for row in bits_report(packed)}
    assert report["layers.2.wq"]["bits_per_weight"] == pytest.approx(4.5)
    assert report["layers.0.w1"]["bits_per_weight"] == pytest.approx(16.0)


@pytest.mark.parametrize("name", BITNET)
def test_natively_ternary_models_pack_losslessly(models, name, tmp_path):
    from edgekit.model.loaders.edgekit_file import save_model

    source = load(models / "bitnet" / name)
    packed = load(save_model(quantize_model(source, QuantizeConfig(format="ek_t1", embedding_format="f32")),
                             tmp_path / "packed.edgekit"))
    for key, weight in source.tensors.items():
        if key.endswith(".scale"):
            continue
        tensor = packed.tensors[key]
        if isinstance(tensor, QuantizedTensor) and tensor.format == "ek_t1":
            assert tensor.group_size == PER_TENSOR
            np.testing.assert_array_equal(tensor.values()[:, : tensor.cols], weight)
            assert tensor.scales[0, 0] == source.tensors[key + ".scale"]
    tokens = source.tokenizer.encode("Once upon a time, there was a dog")
    a = ReferenceForward(source).forward(tokens, KVCache(source.config))
    b = ReferenceForward(packed).forward(tokens, KVCache(packed.config))
    assert np.abs(a - b).max() <= 1e-5


def test_int8_perplexity_within_half_a_percent(stories, tinystories):
    text = tinystories
    float_ppl = evaluate_perplexity(open_backend(stories), text).perplexity
    packed = quantize_model(stories, QuantizeConfig(format="ek_i8", method="rtn"))
    ppl = evaluate_perplexity(open_backend(packed), text).perplexity
    assert abs(ppl - float_ppl) / float_ppl < 0.005


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_weights_are_refused_by_name(stories, value):
    tensors = dict(stories.tensors)
    bad = np.array(tensors["layers.3.w1"])
    bad[2, 5] = value
    tensors["layers.3.w1"] = bad
    broken = Model(stories.config, tensors, stories.tokenizer, stories.source, stories.source_format)
    with pytest.raises(QuantizationError, match=r"layers\.3\.w1.*1 NaN/Inf"):
        quantize_model(broken, QuantizeConfig(format="ek_i4", method="rtn"))
