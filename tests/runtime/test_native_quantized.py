"""The native engine on models packed by edgekit.quantize, against the reference forward on the same packed model.

Where the model keeps float activations (act_quant "none") the reference dequantizes and multiplies in float,
while the integer kernels take int8 activations: exact equality is impossible, so the bar is top-1 agreement
>= 99% over the TinyStories sample, with the mean KL divergence reported (edgekit.quantize.evaluate).
"""

from __future__ import annotations

import pytest

from edgekit.errors import ConfigError
from edgekit.model import load
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.evaluate import compare_models
from edgekit.quantize.pipeline import quantize_model
from edgekit.runtime import generate_tokens, open_backend
from edgekit.runtime.native import NativeBackend

RECIPES = {
    "i4_g32": QuantizeConfig(format="ek_i4", method="rtn", group_size=32),
    "i8_g32": QuantizeConfig(format="ek_i8", method="rtn", group_size=32),
    "u3_g64": QuantizeConfig(format="ek_u3", method="rtn", group_size=64),
    "t2_absmean": QuantizeConfig(format="ek_t2", method="absmean"),
    "i4_g32_a8": QuantizeConfig(format="ek_i4", method="rtn", group_size=32, act_quant="int8_absmax"),
}


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


@pytest.fixture(scope="module")
def packed(stories):
    cache = {}

    def get(recipe: str):
        if recipe not in cache:
            cache[recipe] = quantize_model(stories, RECIPES[recipe])
        return cache[recipe]
    return get


def compare(model, tinystories, max_documents=None, **native_options):
    return compare_models(open_backend(model, "reference"), NativeBackend(model, **native_options), tinystories,
                          max_documents=max_documents)


@pytest.mark.slow
def test_int4_top1_agreement_over_the_whole_sample(packed, tinystories, record_property):
    report = compare(packed("i4_g32"), tinystories)
    record_property("mean_kl", report.mean_kl)
    record_property("top1", report.top1_agreement)
    assert report.documents == 156 and report.tokens == 51532
    assert report.top1_agreement >= 0.99 and report.mean_kl < 1e-3, (report.top1_agreement, report.mean_kl)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_packed_models_agree_with_the_reference(packed, tinystories, record_property, recipe):
    report = compare(packed(recipe), tinystories, max_documents=12)
    record_property("mean_kl", report.mean_kl)
    record_property("top1", report.top1_agreement)
    assert report.top1_agreement >= 0.99 and report.mean_kl < 1e-3, (report.top1_agreement, report.mean_kl)
    assert abs(report.perplexity - report.reference_perplexity) / report.reference_perplexity < 5e-3


def test_one_int8_pass_is_coarser_than_two(packed, tinystories):
    """act_passes=1 (the kernels' single per-token int8 pass) diverges measurably more than the default 2."""
    model = packed("i4_g32")
    one = compare(model, tinystories, max_documents=10, act_passes=1)
    two = compare(model, tinystories, max_documents=10)
    assert two.mean_kl < one.mean_kl / 10 and two.top1_agreement >= one.top1_agreement
    assert one.top1_agreement >= 0.95


def test_act_passes_are_validated(packed, monkeypatch):
    model = packed("i8_g32")
    with pytest.raises(ConfigError, match="act_passes=3"):
        NativeBackend(model, act_passes=3)
    monkeypatch.setenv("EDGEKIT_ACT_PASSES", "1")
    assert NativeBackend(model).act_passes == 1
    assert not NativeBackend(model).layers[0].qkv.split_activations
    monkeypatch.setenv("EDGEKIT_ACT_PASSES", "x")
    with pytest.raises(ConfigError, match="EDGEKIT_ACT_PASSES"):
        NativeBackend(model)


def test_int8_activation_models_take_one_exact_pass(packed):
    """A model whose own semantics are A8 (act_quant int8_absmax) never splits: the kernels are exact there."""
    backend = NativeBackend(packed("i4_g32_a8"))
    assert not any(layer.qkv.split_activations or layer.w2.split_activations for layer in backend.layers)
    assert NativeBackend(packed("i4_g32")).layers[0].w2.split_activations


def test_packed_greedy_tokens_equal_the_reference(packed):
    for recipe in ("i4_g32", "t2_absmean", "i4_g32_a8"):
        model = packed(recipe)
        native = list(generate_tokens(NativeBackend(model), [1], 64, stop_at_eos=False))
        assert native == list(generate_tokens(open_backend(model, "reference"), [1], 64, stop_at_eos=False)), recipe
