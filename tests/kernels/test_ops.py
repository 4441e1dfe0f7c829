"""The C element-wise steps (src/ops.c via edgekit.kernels.ops) against the engine's numpy steps (native_ops)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.kernels import ops
from edgekit.kernels.api import KernelInputError
from edgekit.runtime import native_ops

pytestmark = pytest.mark.skipif(not ops.available(), reason="kernel library without ops.c")

SIZES = [1, 3, 7, 8, 9, 16, 100, 128, 129, 255, 256, 257, 640, 2560, 6912]


@pytest.mark.parametrize("n", SIZES)
def test_rms_norm_is_bit_identical(n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, n)) * rng.uniform(0.01, 30.0, (3, 1))).astype(np.float32)
    weight = rng.standard_normal(n).astype(np.float32)
    for w in (weight, None):
        expected = native_ops.rms_norm(x, w, 1e-5)
        np.testing.assert_array_equal(ops.rms_norm(x, w, 1e-5), expected)


def test_rms_norm_strided_rows_and_zero_rows():
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((4, 300)).astype(np.float32)
    wide[2] = 0.0
    x = wide[:, 40:296]                                     # rows with a stride of 300 floats
    weight = rng.standard_normal(256).astype(np.float32)
    np.testing.assert_array_equal(ops.rms_norm(x, weight, 1e-6), native_ops.rms_norm(x, weight, 1e-6))


def test_relu2_gate_is_bit_identical():
    rng = np.random.default_rng(2)
    both = rng.standard_normal((2, 2 * 6912)).astype(np.float32)
    both[0, 5] = np.nan
    gate, up = both[:, :6912], both[:, 6912:]
    np.testing.assert_array_equal(ops.relu2_gate(gate, up), native_ops.relu2_gate(gate, up))
    np.testing.assert_array_equal(ops.relu2_gate(gate[:1], up[:1]), native_ops.relu2_gate(gate[:1], up[:1]))


@pytest.mark.parametrize("tokens", [1, 5])
def test_rope_is_bit_identical(tokens):
    rng = np.random.default_rng(tokens)
    heads, hd = 25, 128
    qkv = rng.standard_normal((tokens, (heads + 5) * hd)).astype(np.float32)
    x = qkv[:, :heads * hd].reshape(tokens, heads, hd)      # a strided view, as the engine passes it
    angles = rng.uniform(0, 100, (tokens, 1, hd // 2)).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    np.testing.assert_array_equal(ops.rope(x, cos, sin), native_ops.apply_rope(x, cos, sin))


def numpy_attention(q, keys, values, scale):
    kv, s, hd = keys.shape
    qg = q.reshape(kv, -1, hd).astype(np.float64)
    scores = qg @ keys.transpose(0, 2, 1).astype(np.float64) * scale
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ values.astype(np.float64)).reshape(1, -1)


@pytest.mark.parametrize("length", [1, 17, 200])
def test_attend_decode_matches_float64_attention(length):
    rng = np.random.default_rng(length)
    heads, kv, hd, max_len = 20, 5, 128, 256
    cache_k = rng.standard_normal((kv, max_len, hd)).astype(np.float32)
    cache_v = rng.standard_normal((kv, max_len, hd)).astype(np.float32)
    q = (rng.standard_normal((heads, hd)) * 3).astype(np.float32)
    attend = ops.DecodeAttention(heads, kv, hd, 8, 1 / np.sqrt(hd))        # scratch grows past 8
    out = attend(q, cache_k[:, :length], cache_v[:, :length])
    expected = numpy_attention(q, cache_k[:, :length], cache_v[:, :length], 1 / np.sqrt(hd))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_wrong_buffers_are_refused():
    x = np.zeros((2, 16), np.float32)
    with pytest.raises(KernelInputError, match="float32"):
        ops.rms_norm(x.astype(np.float64), None, 1e-5)
    with pytest.raises(KernelInputError, match="weight"):
        ops.rms_norm(x, np.ones(15, np.float32), 1e-5)
    with pytest.raises(KernelInputError, match="contiguous"):
        ops.rms_norm(x[:, ::2], None, 1e-5)
    with pytest.raises(KernelInputError, match="differ"):
        ops.relu2_gate(x, x[:, :8])
    with pytest.raises(KernelInputError, match="cos"):
        ops.rope(x.reshape(2, 1, 16), np.ones((2, 1, 4), np.float32), np.ones((2, 1, 8), np.float32))
    attend = ops.DecodeAttention(4, 2, 8, 4, 0.5)
    keys = np.zeros((2, 4, 8), np.float32)
    with pytest.raises(KernelInputError, match="keys"):
        attend(np.zeros(32, np.float32), keys[:, :, :4], keys[:, :, :4])
    with pytest.raises(KernelInputError, match="q must"):
        attend(np.zeros(31, np.float32), keys, keys)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_attend_decode_portable_and_avx512_paths(isa):
    from edgekit import kernels
    from edgekit.kernels import _native
    if not _native.load().ek_isa_available(_native.ISA_IDS[isa]):
        pytest.skip(f"{isa} not available here")
    rng = np.random.default_rng(7)
    heads, kv, hd = 8, 2, 64
    keys = rng.standard_normal((kv, 33, hd)).astype(np.float32)
    values = rng.standard_normal((kv, 33, hd)).astype(np.float32)
    q = (rng.standard_normal((heads, hd)) * 4).astype(np.float32)
    kernels.set_isa(isa)
    try:
        out = ops.DecodeAttention(heads, kv, hd, 33, 0.125)(q, keys, values)
    finally:
        kernels.set_isa("auto")
    np.testing.assert_allclose(out, numpy_attention(q, keys, values, 0.125), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("heads,kv,hd,length", [(20, 5, 128, 1), (20, 5, 128, 17), (20, 5, 128, 200),
                                                (8, 1, 64, 33), (6, 3, 8, 9), (16, 1, 32, 5)])
def test_attend_decode_reads_float16_rows(isa, heads, kv, hd, length):
    """f16 keys/values (the f16 cache's stored blocks) read directly: equal to float64 attention over the same
    f16 values widened, on the portable loop, the AVX2/F16C group kernel (hd % 16 == 0, group <= 8; also
    under the AVX-512 ISA) and the portable fallback of the other shapes (hd 8, a group of 16)."""
    if not ops.reads_f16_kv():
        pytest.skip("kernel library without ek_attend_decode_kv")
    from edgekit import kernels
    from edgekit.kernels import _native
    if not _native.load().ek_isa_available(_native.ISA_IDS[isa]):
        pytest.skip(f"{isa} not available here")
    rng = np.random.default_rng(heads * 1000 + length)
    max_len = length + 7
    cache_k = rng.standard_normal((kv, max_len, hd)).astype(np.float16)
    cache_v = (rng.standard_normal((kv, max_len, hd)) * 2).astype(np.float16)
    q = (rng.standard_normal((heads, hd)) * 3).astype(np.float32)
    keys, values = cache_k[:, :length], cache_v[:, :length]                   # views with the cache's strides
    kernels.set_isa(isa)
    try:
        out = ops.DecodeAttention(heads, kv, hd, 4, 1 / np.sqrt(hd))(q, keys, values)
    finally:
        kernels.set_isa("auto")
    expected = numpy_attention(q, keys.astype(np.float32), values.astype(np.float32), 1 / np.sqrt(hd))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_attend_decode_refuses_mixed_or_unknown_kv_dtypes():
    attend = ops.DecodeAttention(4, 2, 16, 4, 0.25)
    q = np.zeros(64, np.float32)
    keys = np.zeros((2, 4, 16), np.float16)
    with pytest.raises(KernelInputError, match="values must be float32 or float16"):
        attend(q, keys, keys.astype(np.float32))
    with pytest.raises(KernelInputError, match="keys must be float32 or float16"):
        attend(q, keys.astype(np.float64), keys.astype(np.float64))


def test_fast_address_equals_numpys_for_every_kind_of_buffer():
    """_native.address (buffer protocol, the engine's per-call pointer) is array.ctypes.data for writable
    contiguous arrays and row views, and falls back to it for read-only, strided and empty arrays."""
    from edgekit.kernels import _native
    base = np.arange(4 * 96, dtype=np.float32).reshape(4, 96)
    read_only = base.copy()
    read_only.flags.writeable = False
    for a in (base, base[2], base[1:3], base[:, 8:40], base[:, ::2], read_only, base[:0], base.astype(np.float16),
              np.zeros((5, 3, 8), np.int8)[:, 1]):
        assert _native.address(a) == a.ctypes.data
