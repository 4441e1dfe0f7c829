"""Packed formats -> MatMulNBits: the numpy reference of the layout first, then onnxruntime held to it."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.export.onnx_weights import (
    OnnxFormatError,
    dequantize_matmul_nbits,
    to_matmul_nbits,
)
from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format, pack_values

CASES = [("ek_t2", PER_TENSOR), ("ek_t1", PER_TENSOR), ("ek_t2", PER_CHANNEL), ("ek_i2", 32), ("ek_i2", PER_CHANNEL),
         ("ek_u2", 64), ("ek_i4", 32), ("ek_i4", 64), ("ek_i4", 128), ("ek_i4", PER_CHANNEL), ("ek_u4", 32),
         ("ek_u4", 128), ("ek_i8", 32), ("ek_i8", PER_CHANNEL)]
# byte-exact claims of the module table: B is QuantizedTensor.data unchanged
BYTE_EXACT = {("ek_t2", PER_TENSOR), ("ek_i2", 32), ("ek_u2", 64), ("ek_i4", 32), ("ek_i4", 64), ("ek_i4", 128),
              ("ek_u4", 32), ("ek_u4", 128), ("ek_i8", 32)}


def random_packed(fmt_name: str, group: int, rows: int, cols: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fmt = get_format(fmt_name)
    width = cols if group <= 0 else -(-cols // group) * group
    groups = 1 if group <= 0 else width // group
    if fmt.kind == "ternary":
        values = rng.integers(-1, 2, size=(rows, cols))
        scales = (np.full((1, 1), 0.03, np.float32) if group == PER_TENSOR
                  else rng.uniform(0.01, 0.1, (rows, 1)).astype(np.float16))
        return pack_values(fmt_name, values, scales, group)
    scales = rng.uniform(0.01, 0.1, (rows, groups)).astype(np.float16)
    if fmt.symmetric:
        low, high = fmt.code_range()
        return pack_values(fmt_name, rng.integers(low, high + 1, size=(rows, cols)), scales, group)
    top = (1 << fmt.bits) - 1
    zeros = rng.integers(0, top + 1, size=(rows, groups)).astype(np.uint8)
    return pack_values(fmt_name, rng.integers(0, top + 1, size=(rows, cols)), scales, group, zeros)


@pytest.mark.parametrize("cols", [128, 172])
@pytest.mark.parametrize("fmt_name,group", CASES)
def test_reference_dequantization_is_exact(fmt_name, group, cols):
    tensor = random_packed(fmt_name, group, 24, cols)
    weight = to_matmul_nbits(tensor, "w")
    assert weight.blob.dtype == np.uint8 and weight.blob.shape == (24, -(-cols // weight.block_size),
                                                                    weight.block_size * weight.bits // 8)
    np.testing.assert_array_equal(dequantize_matmul_nbits(weight), tensor.dequantize())


@pytest.mark.parametrize("fmt_name,group", sorted(BYTE_EXACT))
def test_byte_exact_formats_keep_their_bytes(fmt_name, group):
    tensor = random_packed(fmt_name, group, 8, 256, seed=3)
    weight = to_matmul_nbits(tensor, "w")
    assert weight.exact_bytes
    np.testing.assert_array_equal(weight.blob.reshape(8, -1), tensor.data)


@pytest.mark.parametrize("fmt_name", ["ek_i3", "ek_u3"])
def test_three_bit_formats_are_refused_with_the_alternatives(fmt_name):
    fmt = get_format(fmt_name)
    values = np.zeros((4, 32), np.int64) if fmt.symmetric else np.full((4, 32), 3)
    zeros = None if fmt.symmetric else np.full((4, 1), 3, np.uint8)
    tensor = pack_values(fmt_name, values, np.ones((4, 1), np.float16), 32, zeros)
    with pytest.raises(OnnxFormatError, match="ek_i4") as info:
        to_matmul_nbits(tensor, "layers.0.wq")
    assert "layers.0.wq" in str(info.value) and info.value.fix


def run_matmul_nbits(weight, x: np.ndarray, accuracy_level: int) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(weight.blob, "B"), numpy_helper.from_array(weight.scales, "S")]
    inputs = ["A", "B", "S"]
    if weight.zero_points is not None:
        inits.append(numpy_helper.from_array(weight.zero_points, "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=weight.k, N=weight.n,
                            bits=weight.bits, block_size=weight.block_size, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, weight.k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, weight.n])], inits)
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                   helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": x})[0]


@pytest.mark.parametrize("fmt_name,group", CASES)
def test_onnxruntime_matches_the_reference_layout(fmt_name, group):
    tensor = random_packed(fmt_name, group, 40, 172, seed=5)
    weight = to_matmul_nbits(tensor, "w")
    x = np.random.default_rng(1).standard_normal((3, 172)).astype(np.float32)
    want = x @ dequantize_matmul_nbits(weight).T
    np.testing.assert_allclose(run_matmul_nbits(weight, x, 0), want, rtol=1e-4, atol=1e-4)
    fast = run_matmul_nbits(weight, x, 4)      # int8 activations per block: close, not equal
    assert np.abs(fast - want).max() <= 0.02 * np.abs(want).max()
