"""Every (format, variant, available ISA) against the numpy reference, on shapes that are not tile multiples."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from edgekit import kernels
from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format, pack_values
from edgekit.kernels import reference
from edgekit.model.reference import quantize_absmax_int8 as model_quantize
from tests.kernels.conftest import INT_FORMATS, available_isas, random_tensor

ISAS = available_isas()
SHAPES = [(1, 5, 1), (7, 37, 1), (33, 200, 3), (19, 517, 5), (64, 1000, 2), (5, 4100, 1)]


def padded_q(x: np.ndarray, padded: int) -> tuple[np.ndarray, np.ndarray]:
    q, scale = reference.quantize_absmax_int8(x)
    out = np.zeros((x.shape[0], padded), dtype=np.int8)
    out[:, : x.shape[1]] = q
    return out, scale


def check_int(tensor, x, y, exact: bool):
    q, scale = padded_q(x, tensor.padded_cols)
    acc = reference.group_sums(tensor, q)
    want = reference.finish(tensor, acc, scale)
    if exact:
        np.testing.assert_array_equal(y, want)
    else:  # per-group scales summed in another order: float32 rounding of the sum only (zero-point formats
        # subtract a zero-point term per group, so the partial sums can exceed |acc| * scale: 1e-4 of the bound)
        scales = np.abs(tensor.scales.astype(np.float32))
        bound = (np.abs(acc) * scales[None]).sum(axis=2) * scale[:, None]
        assert np.all(np.abs(y - want) <= 1e-4 * bound + 1e-30), np.max(np.abs(y - want) / (bound + 1e-30))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_integer_formats_match_the_reference(fmt, isa, use_isa):
    use_isa(isa)
    rng = np.random.default_rng(zlib.crc32(f"{fmt}-{isa}".encode()))
    groups = [g for g in get_format(fmt).group_sizes]
    for rows, cols, tokens in SHAPES:
        for group in groups:
            tensor = random_tensor(rng, fmt, rows, cols, group)
            x = rng.standard_normal((tokens, cols)).astype(np.float32) * rng.uniform(0.1, 10)
            lin = kernels.prepare_linear(tensor, "int8_absmax")
            y = lin(x)
            assert y.shape == (tokens, rows) and y.dtype == np.float32
            single = group in (PER_TENSOR, PER_CHANNEL) or tensor.padded_cols == tensor.group_width
            check_int(tensor, x, y, exact=single or isa == "scalar")
            assert lin.last_variant.endswith(isa) or "scalar" in lin.last_variant


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [1, 2, 5, 9])
def test_ternary_per_tensor_is_bit_identical_to_reference_forward(tokens, isa, use_isa):
    """ReferenceForward.linear's int8_absmax branch: (q @ trits.T) * a_scale * post_scale."""
    use_isa(isa)
    rng = np.random.default_rng(tokens)
    for fmt in ("ek_t2", "ek_t1"):
        for rows, cols in [(96, 256), (17, 333), (130, 1030)]:
            trits = rng.integers(-1, 2, (rows, cols)).astype(np.float32)
            scale = np.array([[0.0371]], dtype=np.float32)
            tensor = pack_values(fmt, trits, scale, PER_TENSOR)
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            q, a_scale = model_quantize(x)
            want = (((q @ trits.T) * a_scale) * scale[0, 0].astype(np.float32)).astype(np.float32)
            np.testing.assert_array_equal(kernels.prepare_linear(tensor, "int8_absmax")(x), want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ["f16", "f32"])
def test_float_weights(fmt, isa, use_isa):
    use_isa(isa)
    rng = np.random.default_rng(7)
    for rows, cols, tokens in SHAPES:
        w = rng.standard_normal((rows, cols)).astype(np.float16 if fmt == "f16" else np.float32)
        x = rng.standard_normal((tokens, cols)).astype(np.float32)
        lin = kernels.prepare_linear(w, "none")
        want = x.astype(np.float64) @ w.astype(np.float64).T
        tol = 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T) + 1e-6
        assert np.all(np.abs(lin(x) - want) <= tol)
        q, a_scale = model_quantize(x)
        want8 = (q.astype(np.float64) @ w.astype(np.float64).T) * a_scale
        tol8 = 1e-5 * (np.abs(q).astype(np.float64) @ np.abs(w.astype(np.float64)).T) * a_scale + 1e-6
        assert np.all(np.abs(kernels.prepare_linear(w, "int8_absmax")(x) - want8) <= tol8)


@pytest.mark.parametrize("fmt", ["ek_t2", "ek_i4", "ek_i8"])
def test_float_activations_on_integer_weights_stay_within_the_documented_bound(fmt):
    rng = np.random.default_rng(3)
    tensor = random_tensor(rng, fmt, 50, 300, get_format(fmt).group_sizes[0])
    x = rng.standard_normal((4, 300)).astype(np.float32)
    y = kernels.prepare_linear(tensor, "none")(x)
    w = tensor.dequantize()
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    s_a = np.abs(x).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(y - exact) <= np.abs(w).sum(axis=1)[None, :] * s_a / 2 * 1.001 + 1e-5)


def test_quantize_absmax_int8_is_bit_exact_including_rounding_edges():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 777)).astype(np.float32) * 3
    x[1] = 0.0                                           # an all-zero token: scale 0, codes 0
    x[2, :4] = [127.0, 0.49999997 * 127 / 127, -63.5, 63.5]  # ties and the float32 floor(|v|+0.5) edge
    x[3, 0] = -1e-30
    q, scale = kernels.quantize_absmax_int8(x)
    want_q, want_scale = model_quantize(x)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (6,)
    np.testing.assert_array_equal(q, want_q.astype(np.int8))
    np.testing.assert_array_equal(scale, want_scale[:, 0])


def test_large_layer_uses_all_threads_and_stays_exact():
    rng = np.random.default_rng(5)
    tensor = random_tensor(rng, "ek_t2", 2053, 2560, PER_TENSOR)
    x = rng.standard_normal((1, 2560)).astype(np.float32)
    lin = kernels.prepare_linear(tensor, "int8_absmax")
    before = kernels.get_num_threads()
    try:
        for threads in (1, 2, 3):
            kernels.set_num_threads(threads)
            assert kernels.get_num_threads() == threads
            check_int(tensor, x, lin(x), exact=True)
    finally:
        kernels.set_num_threads(before)


@pytest.mark.parametrize("tokens", [1, 5])
@pytest.mark.parametrize("formats", [("ek_t2", "ek_t2"), ("ek_t1", "ek_t2", "ek_t2"), ("ek_i4", "ek_i2"),
                                     ("ek_u4", "ek_i3", "ek_i8")])
def test_linear_group_is_bit_identical_to_its_parts(formats, tokens):
    """ek_linear_multi (LinearGroup): several weights over one input in one call, every part's columns equal
    to its own call's, bit for bit (row counts off the tiles, mixed formats, groups and layouts)."""
    from edgekit.kernels.api import LinearGroup
    rng = np.random.default_rng(len(formats) * 10 + tokens)
    cols = 320
    parts = []
    for i, fmt in enumerate(formats):
        group = PER_TENSOR if fmt in ("ek_t2", "ek_t1") else (PER_CHANNEL if fmt == "ek_i8" else 32)
        parts.append(kernels.prepare_linear(random_tensor(rng, fmt, 37 + 29 * i, cols, group), "int8_absmax"))
    if not LinearGroup.applies(parts):
        pytest.skip("kernel library without ek_linear_multi")
    x = rng.standard_normal((tokens, cols)).astype(np.float32)
    group = LinearGroup(parts)
    out = group(x)
    np.testing.assert_array_equal(out, np.concatenate([p(x) for p in parts], axis=1))
    assert out.shape == (tokens, sum(p.rows for p in parts))


def test_linear_group_refuses_parts_of_different_widths():
    from edgekit.kernels.api import LinearGroup
    rng = np.random.default_rng(3)
    parts = [kernels.prepare_linear(random_tensor(rng, "ek_t2", 16, cols, PER_TENSOR), "int8_absmax")
             for cols in (64, 96)]
    assert not LinearGroup.applies(parts)
    from edgekit.errors import ConfigError
    with pytest.raises(ConfigError, match="one call"):
        LinearGroup(parts)
