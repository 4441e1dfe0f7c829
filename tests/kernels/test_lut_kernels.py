"""The lookup-table kernels added for issue 4: the AVX2 sign-symmetric ternary LUT3 kernel (src/lut_avx2.c) and the
bit-serial intN kernels on EK_LAYOUT_BITPLANE (src/bitplane.c: vpshufb on AVX2, vpermw on AVX-512), each held bit for bit to the numpy reference, with
the bit-serial numpy twin (reference.linear_bitserial) held to the direct reference first."""

from __future__ import annotations

import ctypes
import zlib

import numpy as np
import pytest

from edgekit import kernels
from edgekit.errors import ConfigError
from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format
from edgekit.kernels import KernelInputError, _native, reference
from tests.kernels.conftest import available_isas, random_tensor
from tests.kernels.test_kernels import padded_q

needs_library = pytest.mark.skipif(_native.load() is None, reason="compiled kernels not built")
needs_avx2 = pytest.mark.skipif("avx2" not in available_isas(), reason="this CPU has no AVX2")

BITPLANE_FORMATS = ["ek_i2", "ek_i3", "ek_i4", "ek_u2", "ek_u3", "ek_u4"]
# rows around the 32-row tile, cols around the 8-column octet and the 32-octet (256-column) widening span;
# tokens across the scalar / vector epilogue switch (T >= 4)
BITPLANE_SHAPES = [(1, 8, 1), (31, 37, 2), (33, 200, 3), (65, 517, 4), (40, 1000, 9), (32, 2560, 5)]
LUT3_SHAPES = [(1, 3, 1), (31, 7, 2), (33, 256, 4), (64, 253, 5), (65, 505, 9), (100, 1030, 13), (32, 2560, 17)]


def seeded(*parts) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("-".join(map(str, parts)).encode()))


def expected(tensor, x):
    q, scale = padded_q(x, tensor.padded_cols)
    return reference.linear_int8(tensor, q, scale)


def groups_of(fmt: str) -> list[int]:
    return list(get_format(fmt).group_sizes)


@pytest.mark.parametrize("fmt", BITPLANE_FORMATS)
def test_bitserial_numpy_twin_equals_the_direct_reference(fmt):
    """Tables of quad partial sums + bit planes with shifts + offset / zero-point term == the plain integer dot."""
    rng = seeded("twin", fmt)
    for group in groups_of(fmt):
        for rows, cols, tokens in BITPLANE_SHAPES:
            tensor = random_tensor(rng, fmt, rows, cols, group)
            q, scale = padded_q(rng.standard_normal((tokens, cols)).astype(np.float32) * 4, tensor.padded_cols)
            np.testing.assert_array_equal(reference.bitserial_group_sums(tensor, reference.pack_bitplanes(tensor), q),
                                          reference.group_sums(tensor, q))
            np.testing.assert_array_equal(reference.linear_bitserial(tensor, q, scale),
                                          reference.linear_int8(tensor, q, scale))


@needs_library
@pytest.mark.parametrize("fmt", BITPLANE_FORMATS)
def test_bitplane_repack_writes_the_documented_bytes(fmt):
    """ek_repack's bytes equal the numpy packing of the layout ek_kernels.h documents (bits per weight exact)."""
    rng = seeded("repack", fmt)
    for rows, cols in [(1, 8), (33, 200), (70, 517)]:
        tensor = random_tensor(rng, fmt, rows, cols, groups_of(fmt)[-1])
        lin = kernels.prepare_linear(tensor, "int8_absmax", layout="bitplane")
        assert lin.layout == "bitplane"
        want = reference.pack_bitplanes(tensor)
        np.testing.assert_array_equal(lin._keep[0].reshape(-1), want.reshape(-1))
        bits = get_format(fmt).bits
        assert want.nbytes == -(-rows // 32) * 32 * -(-tensor.padded_cols // 8) * 8 * bits // 8


@needs_library
@pytest.mark.parametrize("isa", [i for i in ("scalar", "avx2", "avx512") if i in available_isas()])
@pytest.mark.parametrize("fmt", BITPLANE_FORMATS)
def test_bitplane_kernels_are_bit_exact_for_every_group_size(fmt, isa, use_isa):
    """Per-group scales are added in group order, as scalar.c does, so even grouped outputs are bit-identical."""
    use_isa(isa)
    rng = seeded("bitplane", fmt, isa)
    for group in groups_of(fmt):
        for rows, cols, tokens in BITPLANE_SHAPES:
            tensor = random_tensor(rng, fmt, rows, cols, group)
            lin = kernels.prepare_linear(tensor, "int8_absmax", layout="bitplane")
            x = rng.standard_normal((tokens, cols)).astype(np.float32) * rng.uniform(0.1, 10)
            np.testing.assert_array_equal(lin(x), expected(tensor, x))
            want_name = "int_dot_scalar" if isa == "scalar" else f"{fmt[3:]}_bitplane_{isa}"
            assert lin.last_variant == want_name


@needs_library
@needs_avx2
@pytest.mark.parametrize("fmt", ["ek_t2", "ek_t1"])
@pytest.mark.parametrize("group", [PER_TENSOR, PER_CHANNEL])
def test_lut3_avx2_kernels_are_bit_exact(fmt, group, use_isa):
    use_isa("avx2")
    rng = seeded("lut3-avx2", fmt, group)
    for rows, cols, tokens in LUT3_SHAPES:
        tensor = random_tensor(rng, fmt, rows, cols, group)
        lin = kernels.prepare_linear(tensor, "int8_absmax", layout="lut3")
        x = rng.standard_normal((tokens, cols)).astype(np.float32) * 3
        np.testing.assert_array_equal(lin(x), expected(tensor, x))
        assert lin.last_variant == f"{fmt[3:]}_lut3_avx2"


@needs_library
@needs_avx2
def test_lut3_avx2_sign_symmetry_at_the_extremes(use_isa):
    """All-(-1) and all-(+1) rows at full-scale activations: every index is 0 or 26 (the folded ends), and the int16
    segment sums reach their bound (84 * 381 + the negative count) without overflow."""
    use_isa("avx2")
    from edgekit.formats import pack_values
    cols = 3 * 84 * 2                                              # two full 42-pair widening segments
    values = np.stack([np.full(cols, -1), np.full(cols, 1), np.zeros(cols)]).repeat(11, axis=0)[:33]
    tensor = pack_values("ek_t2", values, np.array([[0.5]], dtype=np.float32), PER_TENSOR)
    lin = kernels.prepare_linear(tensor, "int8_absmax", layout="lut3")
    x = np.full((2, cols), 3.0, dtype=np.float32)
    x[1] = -3.0
    np.testing.assert_array_equal(lin(x), expected(tensor, x))


@needs_library
@pytest.mark.parametrize("isa", [i for i in ("avx2", "avx512") if i in available_isas()])
def test_auto_layout_follows_the_measured_rule(isa, use_isa):
    """src/bitplane.c and src/lut.c: ek_i3/u3 -> bitplane on AVX2 and AVX-512; ek_t1 -> LUT3 on both; ek_t2 ->
    LUT3 only for the AVX2 kernels on an AVX-512 CPU (native on AVX2-only CPUs and on AVX-512); others native."""
    use_isa(isa)
    rng = seeded("auto", isa)
    layouts = {fmt: kernels.prepare_linear(random_tensor(rng, fmt, 40, 256, group), "int8_absmax").layout
               for fmt, group in [("ek_i3", 32), ("ek_u3", 64), ("ek_i4", 32), ("ek_i2", 32), ("ek_t1", PER_TENSOR),
                                  ("ek_t2", PER_TENSOR)]}
    assert layouts["ek_i3"] == layouts["ek_u3"] == "bitplane"
    assert layouts["ek_i4"] == layouts["ek_i2"] == "native"
    assert layouts["ek_t1"] == "lut3"
    avx512_cpu = "avx512" in available_isas()          # the ISA list follows the CPU (AVX-512 VNNI/VBMI there)
    assert layouts["ek_t2"] == ("lut3" if isa == "avx2" and avx512_cpu else "native")


@needs_library
def test_bitplane_layout_stays_exact_across_threads_and_isa_changes(use_isa):
    rng = seeded("threads")
    tensor = random_tensor(rng, "ek_u3", 2053, 2560, 128)
    lin = kernels.prepare_linear(tensor, "int8_absmax", layout="bitplane")
    x = rng.standard_normal((6, 2560)).astype(np.float32)
    want = expected(tensor, x)
    before = kernels.get_num_threads()
    try:
        for threads in (1, 2, 3):
            kernels.set_num_threads(threads)
            for isa in available_isas():                            # scalar decodes the repacked bytes
                use_isa(isa)
                np.testing.assert_array_equal(lin(x), want)
                np.testing.assert_array_equal(lin(x[:1].copy()), want[:1])
    finally:
        kernels.set_num_threads(before)


@needs_library
def test_bitplane_is_refused_where_it_does_not_apply_and_bad_buffers_are_errors():
    rng = seeded("refuse")
    for fmt, group in [("ek_t2", PER_TENSOR), ("ek_t1", PER_TENSOR), ("ek_i8", PER_CHANNEL)]:
        with pytest.raises(ConfigError, match="does not apply"):
            kernels.prepare_linear(random_tensor(rng, fmt, 8, 64, group), "int8_absmax", layout="bitplane")
    lin = kernels.prepare_linear(random_tensor(rng, "ek_i3", 40, 130, 32), "int8_absmax", layout="bitplane")
    with pytest.raises(KernelInputError, match="shape"):
        lin(np.zeros((2, 129), dtype=np.float32))
    with pytest.raises(KernelInputError, match="dtype"):
        lin(np.zeros((2, 130), dtype=np.float64))
    with pytest.raises(KernelInputError, match="C-contiguous"):
        lin(np.zeros((2, 260), dtype=np.float32)[:, ::2])
    with pytest.raises(KernelInputError, match="shape"):
        lin(np.zeros((2, 130), dtype=np.float32), out=np.empty((2, 41), dtype=np.float32))


@needs_library
def test_c_entry_points_refuse_a_bitplane_repack_they_cannot_do():
    lib = _native.load()
    tensor = random_tensor(seeded("c"), "ek_i3", 8, 64, 32)
    data, scales = np.ascontiguousarray(tensor.data), tensor.scales.astype(np.float32).reshape(-1)
    weight = _native.Weight(4, 0, 8, 64, data.shape[1], 32, 0, 0, data.ctypes.data, scales.ctypes.data, None)
    assert lib.ek_repack_size(ctypes.byref(weight), 2) == 32 * 8 * 3 * 8 // 8  # one tile, 8 octets, 3 planes
    weight.group = 12                                               # groups must be whole octets
    assert lib.ek_repack_size(ctypes.byref(weight), 2) == 0
    assert lib.ek_repack(ctypes.byref(weight), 2, data.ctypes.data) == -3
    weight.group, weight.format = 32, 9                             # ek_i8: no bit-plane layout
    assert lib.ek_repack_size(ctypes.byref(weight), 2) == 0
    weight.format, weight.zeros = 7, None                           # ek_u3 without its zero points
    q, s = np.zeros((1, 64), np.int8), np.ones(1, np.float32)
    act = _native.Act(_native.ACT_I8, 0, 1, 64, q.ctypes.data, s.ctypes.data, None, None)
    y = np.empty((1, 8), np.float32)
    weight.layout = 2
    assert lib.ek_linear(ctypes.byref(weight), ctypes.byref(act), y.ctypes.data, 8, None) == -1
