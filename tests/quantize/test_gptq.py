"""GPTQ: RTN's grid and packing, lazy batch updates, act-order, dead inputs, lower layer error than RTN on
real stories260K activations, and lower KL divergence than RTN for the whole model (int2, int3)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError, QuantizationError
from edgekit.formats import PER_CHANNEL, PER_TENSOR
from edgekit.model import load
from edgekit.model.reference import KVCache
from edgekit.quantize.calibration import advance_states, calibration_sequences, collect_hessian, embed_sequences
from edgekit.quantize.config import QuantizeConfig
from edgekit.quantize.evaluate import DOCUMENT_SEPARATOR, compare_models, split_documents
from edgekit.quantize.gptq import gptq_quantize, quantize_gptq
from edgekit.quantize.methods import quantize_absmean, quantize_rtn
from edgekit.quantize.pipeline import quantize_model
from edgekit.runtime import open_backend

INT_FORMATS = ["ek_i2", "ek_i3", "ek_i4", "ek_u2", "ek_u3", "ek_u4", "ek_i8"]
EVAL_DOCUMENTS, CALIB_DOCUMENTS, CONTEXT = 20, (20, 60), 128


def rtn_or_absmean(weight, fmt, group):
    return (quantize_absmean if fmt.startswith("ek_t") else quantize_rtn)(weight, fmt, group)


def random_layer(rows=24, cols=100, samples=400, seed=0):
    """Weights with uneven column scales and a correlated Hessian X^T X."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((rows, cols)) * np.exp(rng.standard_normal((1, cols)))).astype(np.float32)
    x = rng.standard_normal((samples, cols)) @ rng.standard_normal((cols, cols))
    return weight, x.T @ x


def output_error(weight, packed, hessian) -> float:
    """||X W^T - X W_hat^T||^2 = tr(D H D^T), D = W - W_hat."""
    delta = weight.astype(np.float64) - packed.dequantize()
    return float(np.einsum("ij,jk,ik->", delta, hessian, delta))


def assert_same_tensor(a, b):
    assert a.format == b.format and a.group_size == b.group_size
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.scales, b.scales)
    assert (a.zeros is None) == (b.zeros is None)
    if a.zeros is not None:
        np.testing.assert_array_equal(a.zeros, b.zeros)


CASES = [(f, g) for f in INT_FORMATS for g in (PER_CHANNEL, 32)] + \
        [(f, g) for f in ("ek_t2", "ek_t1") for g in (PER_TENSOR, PER_CHANNEL, 32, 64)]


@pytest.mark.parametrize("fmt,group", CASES)
@pytest.mark.parametrize("act_order", [False, True])
def test_diagonal_hessian_gives_the_rtn_tensor_bit_for_bit(fmt, group, act_order):
    # With H diagonal no error is propagated, so GPTQ reduces to rounding on RTN's (or absmean's) grid.
    weight, _ = random_layer()
    diagonal = np.diag(np.random.default_rng(1).uniform(0.5, 2.0, weight.shape[1]))
    packed = quantize_gptq(weight, fmt, group, hessian=diagonal, act_order=act_order)
    assert_same_tensor(packed, rtn_or_absmean(weight, fmt, group))


@pytest.mark.parametrize("fmt,group", [("ek_i4", 32), ("ek_u3", 64), ("ek_t2", 32), ("ek_t1", PER_TENSOR),
                                       ("ek_i3", PER_CHANNEL)])
def test_lazy_batch_updates_do_not_change_the_result(fmt, group):
    # Step 2 of the paper only reorders the arithmetic: any block size gives the same codes and scales,
    # including block sizes that split groups (the group is fitted from its up-to-date weights).
    weight, hessian = random_layer(seed=2)
    reference = quantize_gptq(weight, fmt, group, hessian=hessian, block_size=1)
    for block in (5, 16, 128):
        assert_same_tensor(quantize_gptq(weight, fmt, group, hessian=hessian, block_size=block), reference)


@pytest.mark.parametrize("fmt", ["ek_i3", "ek_u3", "ek_t2"])
def test_act_order_round_trips_through_pack_and_unpack_in_natural_column_order(fmt):
    weight, hessian = random_layer(cols=172, seed=3)  # 172 columns: the last group of 32 is padded
    result = gptq_quantize(weight, hessian, fmt, 32, act_order=True)
    packed = result.pack(fmt, 32)
    values = packed.values()[:, : packed.cols]
    if packed.zeros is not None:  # zero-point formats: values() is code - zero
        values = values + np.repeat(packed.zeros.astype(np.int16), 32, axis=1)[:, : packed.cols]
    np.testing.assert_array_equal(values, result.values)
    np.testing.assert_array_equal(packed.dequantize(), result.dequantized.astype(np.float32))
    # static groups: every group's grid was fitted on natural columns before reordering, exactly as RTN's
    np.testing.assert_array_equal(packed.scales, rtn_or_absmean(weight, fmt, 32).scales)
    assert output_error(weight, packed, hessian) < output_error(weight, rtn_or_absmean(weight, fmt, 32), hessian)


def test_dead_inputs_are_zeroed_and_the_rest_stays_finite():
    weight, hessian = random_layer(seed=4)
    dead = [0, 17, 63]
    hessian[dead, :] = 0.0
    hessian[:, dead] = 0.0
    for act_order in (False, True):
        result = gptq_quantize(weight, hessian, "ek_i4", 32, act_order=act_order)
        assert np.isfinite(result.dequantized).all()
        np.testing.assert_array_equal(result.dequantized[:, dead], 0.0)


def test_gptq_refuses_what_it_cannot_do():
    weight, hessian = random_layer()
    with pytest.raises(QuantizationError, match="needs the Hessian"):
        quantize_gptq(weight, "ek_i4", 32)
    with pytest.raises(ConfigError, match="cannot produce f16"):
        gptq_quantize(weight, hessian, "f16", PER_TENSOR)
    with pytest.raises(QuantizationError, match="Hessian shape"):
        gptq_quantize(weight, hessian[:50, :50], "ek_i4", 32)
    with pytest.raises(QuantizationError, match="not positive definite.*damping") as info:
        gptq_quantize(weight, -hessian, "ek_i4", 32, name="layers.0.wq")
    assert "gptq_damp" in info.value.fix and "layers.0.wq" in str(info.value)


# -- real activations of stories260K ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


@pytest.fixture(scope="module")
def documents(tinystories):
    return split_documents(tinystories.read_text(encoding="utf-8"))


def layer_hessians(model, documents, names) -> dict[str, np.ndarray]:
    """Float-model Hessians of layer 1's linears `names` on `documents` (cut to CONTEXT tokens)."""
    sequences = calibration_sequences(model.tokenizer, DOCUMENT_SEPARATOR.join(documents), seq_len=CONTEXT,
                                      max_tokens=10**6)
    cache = KVCache(model.config, CONTEXT)
    states = embed_sequences(model, sequences)
    states = advance_states(model, advance_states(model, states, 0, "attention", cache), 0, "ffn", cache)
    mids = advance_states(model, states, 1, "attention", cache)
    return {name: collect_hessian(model, mids if name.endswith(("w1", "w2")) else states, name,
                                  "ffn" if name.endswith(("w1", "w2")) else "attention", cache) for name in names}


@pytest.fixture(scope="module")
def layer1(stories, documents):
    names = ["layers.1.wq", "layers.1.w2"]
    calib = layer_hessians(stories, documents[slice(*CALIB_DOCUMENTS)], names)
    held_out = layer_hessians(stories, documents[:10], names)
    return {name: (np.asarray(stories.tensors[name]), calib[name], held_out[name]) for name in names}


@pytest.mark.parametrize("name", ["layers.1.wq", "layers.1.w2"])
@pytest.mark.parametrize("fmt,group", [("ek_i2", 32), ("ek_i3", 32), ("ek_i4", 32), ("ek_u4", 32),
                                       ("ek_t2", PER_TENSOR), ("ek_t2", 64)])
def test_gptq_reconstructs_a_real_layer_better_than_rtn(layer1, name, fmt, group):
    weight, calib, held_out = layer1[name]
    rtn = output_error(weight, rtn_or_absmean(weight, fmt, group), held_out)
    for act_order in (False, True):
        gptq = output_error(weight, quantize_gptq(weight, fmt, group, hessian=calib, act_order=act_order),
                            held_out)
        print(f"{name} {fmt} g{group} act_order={act_order}: ||X(W-W^)||^2 GPTQ/RTN = {gptq / rtn:.3f}")
        assert gptq < rtn


@pytest.fixture(scope="module")
def reference_backend(stories):
    return open_backend(stories)


@pytest.mark.parametrize("fmt", ["ek_i2", "ek_i3"])
def test_gptq_beats_rtn_on_kl_divergence_of_held_out_documents(stories, documents, tinystories, reference_backend,
                                                              fmt):
    calib_text = DOCUMENT_SEPARATOR.join(documents[slice(*CALIB_DOCUMENTS)])
    common = dict(format=fmt, group_size=32, output_format="f16")
    recipes = {"RTN": QuantizeConfig(method="rtn", **common),
               "GPTQ": QuantizeConfig(method="gptq", calib_seq_len=CONTEXT, **common),
               "Hadamard+GPTQ": QuantizeConfig(method="gptq", calib_seq_len=CONTEXT, rotate="hadamard", **common)}
    kl = {}
    for label, config in recipes.items():
        packed = quantize_model(stories, config, calib_text=calib_text)
        report = compare_models(reference_backend, open_backend(packed), tinystories, context_length=CONTEXT,
                                max_documents=EVAL_DOCUMENTS)
        kl[label] = report.mean_kl
        print(f"stories260K {fmt} g32 {label}: mean KL {report.mean_kl:.4f} nats, top-1 "
              f"{report.top1_agreement:.3f}, perplexity {report.perplexity:.3f}")
    assert kl["GPTQ"] < kl["RTN"]
    assert kl["Hadamard+GPTQ"] < kl["RTN"]
