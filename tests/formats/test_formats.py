"""Every packed format round-trips on random shapes; layouts match their documentation and ggml."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgekit.errors import ConfigError, ShapeMismatchError
from edgekit.formats import FORMATS, PER_CHANNEL, PER_TENSOR, get_format, pack_values, padded_cols
from edgekit.formats.layouts import TernaryBase3


def random_tensor(fmt, rows, cols, group_size, rng):
    """Random values in the format's range with scales (and zero points) of the right shape."""
    if fmt.kind == "ternary":
        values = rng.integers(-1, 2, size=(rows, cols))
    elif fmt.symmetric:
        low, high = fmt.code_range()
        values = rng.integers(low, high + 1, size=(rows, cols))
    else:
        values = rng.integers(0, 1 << fmt.bits, size=(rows, cols))
    width = padded_cols(fmt, cols, group_size)
    groups = (1, 1) if group_size == PER_TENSOR else (rows, width // (group_size or width))
    dtype = np.float32 if group_size == PER_TENSOR else np.float16
    scales = rng.uniform(0.01, 2.0, size=groups).astype(dtype)
    zeros = None if fmt.symmetric else rng.integers(0, 1 << fmt.bits, size=groups).astype(np.uint8)
    return values, scales, zeros


def reference_dequantize(fmt, values, scales, zeros, group_size):
    """Plain loops over rows and groups, independent of the packed layout."""
    rows, cols = values.shape
    out = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        for c in range(cols):
            g = 0 if group_size <= 0 else c // group_size
            s = float(scales[0, 0] if group_size == PER_TENSOR else scales[r, g])
            v = float(values[r, c]) - (float(zeros[r, g]) if zeros is not None else 0.0)
            out[r, c] = np.float32(v) * np.float32(s)
    return out


@pytest.mark.parametrize("name", sorted(n for n, f in FORMATS.items() if f.kind != "float"))
@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_round_trip_on_random_shapes(name, rows, cols, seed, data):
    fmt = get_format(name)
    group_size = data.draw(st.sampled_from(fmt.group_sizes))
    rng = np.random.default_rng(seed)
    values, scales, zeros = random_tensor(fmt, rows, cols, group_size, rng)
    tensor = pack_values(name, values, scales, group_size, zeros)
    width = tensor.padded_cols
    assert width >= cols and width % fmt.col_multiple == 0 and (group_size <= 0 or width % group_size == 0)
    assert tensor.data.shape == (rows, fmt.row_bytes(width))
    np.testing.assert_array_equal(tensor.values()[:, :cols],
                                  values - (0 if zeros is None else np.repeat(zeros, tensor.group_width, 1)[:, :cols]))
    np.testing.assert_array_equal(tensor.dequantize(), reference_dequantize(fmt, values, scales, zeros, group_size))
    # padding is explicit and dequantizes to zero
    full = tensor.values().astype(np.float32) * tensor.scale_matrix()
    assert not full[:, cols:].any()


@pytest.mark.parametrize("name", ["f16", "f32"])
def test_float_pass_through(name):
    w = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    tensor = pack_values(name, w, np.zeros((0, 0), np.float32), PER_TENSOR)
    expected = w.astype(np.float16).astype(np.float32) if name == "f16" else w
    np.testing.assert_array_equal(tensor.dequantize(), expected)
    assert tensor.bits_per_weight == (16 if name == "f16" else 32)


def test_ternary_2bit_byte_layout():
    # weights (+1, 0, -1, +1) -> codes (2, 1, 0, 2) -> bits 0-1, 2-3, 4-5, 6-7 -> 0b10_00_01_10
    tensor = pack_values("ek_t2", np.array([[1, 0, -1, 1]]), np.float32([[1.0]]), PER_TENSOR)
    assert tensor.data.tolist() == [[0b10000110]]


def test_int4_nibble_layout():
    # signed (-8, 7) -> codes (0, 15): weight 0 in the low nibble
    tensor = pack_values("ek_i4", np.array([[-8, 7]]), np.float16([[1.0]]), PER_CHANNEL)
    assert tensor.data.tolist() == [[0xF0]]


def test_ternary_base3_bytes_are_tq1_0_bytes():
    """ek_t1's byte encoding is ggml's TQ1_0 `qs` encoding (gguf-py as the oracle)."""
    trits = np.random.default_rng(1).integers(-1, 2, size=(1, 256)).astype(np.float32)
    block = gguf.quants.quantize(trits, gguf.GGMLQuantizationType.TQ1_0)
    # TQ1_0 puts elements j, j+32, ..., j+128 into qs[j] for j < 32 (then a 16-wide span for 160..239).
    order = np.stack([j + 32 * np.arange(5) for j in range(32)]).reshape(-1)
    ours = pack_values("ek_t1", trits[:, order].astype(np.int8), np.float32([[1.0]]), PER_TENSOR)
    np.testing.assert_array_equal(ours.data[0], block[0, :32])
    np.testing.assert_array_equal(TernaryBase3.unpack_codes(block[:, :32], 160)[0].astype(int) - 1,
                                  trits[0, order].astype(int))


def test_bits_per_weight():
    w = np.zeros((64, 256), np.int8)
    assert pack_values("ek_t2", w, np.float32([[1]]), PER_TENSOR).bits_per_weight == pytest.approx(2.0, abs=0.01)
    assert pack_values("ek_t1", w, np.float32([[1]]), PER_TENSOR).bits_per_weight == pytest.approx(1.625, abs=0.01)
    i4 = pack_values("ek_i4", w, np.ones((64, 8), np.float16), 32)
    assert i4.bits_per_weight == pytest.approx(4.5)  # as Q4_0: 4 bits + one fp16 scale per 32


def test_registry_rejects_duplicates_and_unknown_names():
    from edgekit.formats.base import PackedFormat

    with pytest.raises(ValueError, match="already registered"):
        type("Dup", (PackedFormat,), {}, name="ek_t2", format_id=99)
    with pytest.raises(ValueError, match="already registered"):
        type("DupId", (PackedFormat,), {}, name="ek_new", format_id=1)
    with pytest.raises(ConfigError, match="ek_t2"):
        get_format("q4_k")
    ids = [f.format_id for f in FORMATS.values()]
    assert len(ids) == len(set(ids))


def test_out_of_range_values_and_bad_group_sizes():
    with pytest.raises(ShapeMismatchError, match=r"\[-8, 7\]"):
        pack_values("ek_i4", np.array([[9]]), np.ones((1, 1), np.float16), PER_CHANNEL)
    with pytest.raises(ConfigError, match="group size 48"):
        pack_values("ek_i4", np.zeros((1, 96)), np.ones((1, 2), np.float16), 48)
