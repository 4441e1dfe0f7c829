"""Repacked layouts (EK_LAYOUT_TERNARY_LUT3), the lookup-table kernels that read them, and the registry whole:
every kernel variant the library lists for this CPU runs and matches the numpy reference bit for bit."""

from __future__ import annotations

import ctypes
import os

import zlib

import numpy as np
import pytest

from edgekit import kernels
from edgekit.errors import ConfigError
from edgekit.formats import PER_CHANNEL, PER_TENSOR, get_format
from edgekit.kernels import _native, reference
from tests.kernels.conftest import INT_FORMATS, available_isas, random_tensor
from tests.kernels.test_dispatch import run_python
from tests.kernels.test_kernels import check_int

needs_library = pytest.mark.skipif(_native.load() is None, reason="compiled kernels not built")
needs_avx512 = pytest.mark.skipif("avx512" not in available_isas(), reason="this CPU has no AVX-512 VNNI/VBMI")

# rows around the 32-row tile, cols around the 3-column triple and the 42-pair (252-column) widening segment
LUT_SHAPES = [(1, 3, 1), (31, 7, 2), (33, 256, 4), (64, 253, 8), (65, 505, 9), (100, 1030, 13), (32, 2560, 17)]


def want(tensor, x):
    q, scale = reference.quantize_absmax_int8(x)
    padded = np.zeros((x.shape[0], tensor.padded_cols), dtype=np.int8)
    padded[:, : x.shape[1]] = q
    return reference.linear_int8(tensor, padded, scale)


@needs_library
@needs_avx512
@pytest.mark.parametrize("fmt", ["ek_t2", "ek_t1"])
@pytest.mark.parametrize("group", [PER_TENSOR, PER_CHANNEL])
def test_lut3_kernels_are_bit_exact(fmt, group, use_isa):
    use_isa("avx512")
    rng = np.random.default_rng(len(fmt) + group)
    for rows, cols, tokens in LUT_SHAPES:
        tensor = random_tensor(rng, fmt, rows, cols, group)
        lin = kernels.prepare_linear(tensor, "int8_absmax", layout="lut3")
        assert lin.layout == "lut3"
        x = rng.standard_normal((tokens, cols)).astype(np.float32) * 3
        np.testing.assert_array_equal(lin(x), want(tensor, x))
        assert lin.last_variant == f"{fmt[3:]}_lut3_avx512"


@needs_library
@pytest.mark.parametrize("fmt", ["ek_t2", "ek_t1"])
def test_lut3_repack_is_a_pure_reencoding_read_back_by_the_scalar_fallback(fmt, use_isa):
    """The scalar kernel decodes the repacked bytes (ek_lut_decode_row): any ISA change after prepare stays exact,
    and equality with the reference over random trits shows the repack lost or moved no weight."""
    rng = np.random.default_rng(9)
    tensor = random_tensor(rng, fmt, 70, 301, PER_TENSOR)
    lin = kernels.prepare_linear(tensor, "int8_absmax", layout="lut3")
    x = rng.standard_normal((3, 301)).astype(np.float32)
    for isa in available_isas():
        use_isa(isa)
        np.testing.assert_array_equal(lin(x), want(tensor, x))
    tiles, pairs = -(-70 // 32), -(-(-(-301 // 3)) // 2)
    assert lin.kernel_nbytes == tiles * pairs * 40 + tensor.scales.nbytes  # 1.67 bits per weight plus padding


@needs_library
def test_lut3_is_refused_where_it_does_not_apply():
    rng = np.random.default_rng(1)
    with pytest.raises(ConfigError, match="does not apply"):
        kernels.prepare_linear(random_tensor(rng, "ek_i4", 8, 64, 32), "int8_absmax", layout="lut3")
    with pytest.raises(ConfigError, match="does not apply"):
        kernels.prepare_linear(random_tensor(rng, "ek_t2", 8, 64, 32), "int8_absmax", layout="lut3")
    with pytest.raises(ConfigError, match="not a weight layout"):
        kernels.prepare_linear(random_tensor(rng, "ek_t2", 8, 64, PER_TENSOR), "int8_absmax", layout="tl2")


@needs_library
@pytest.mark.parametrize("layout", ["native", "lut3"])
def test_threads_and_prefill_blocks_stay_exact_on_a_large_layer(layout):
    rng = np.random.default_rng(5)
    tensor = random_tensor(rng, "ek_t2", 2053, 2560, PER_TENSOR)
    lin = kernels.prepare_linear(tensor, "int8_absmax", layout=layout)
    x = rng.standard_normal((19, 2560)).astype(np.float32)
    expected = want(tensor, x)
    before = kernels.get_num_threads()
    try:
        for threads in (1, 2, 3):
            kernels.set_num_threads(threads)
            np.testing.assert_array_equal(lin(x), expected)
            np.testing.assert_array_equal(lin(x[:1].copy()), expected[:1])
    finally:
        kernels.set_num_threads(before)


def listed_variants() -> list[tuple[str, str, str, str]]:
    """(format, isa, layout, kernel) for every integer kernel the library lists for an ISA this CPU runs."""
    if _native.load() is None:
        return []
    out = []
    for fmt, per_isa in kernels.info()["variants"].items():
        for isa, names in per_isa.items():
            if isa not in available_isas() or fmt not in INT_FORMATS:
                continue
            for key, name in names.items():
                layout = key.split("_", 1)[1] if "_" in key else "native"
                out.append((fmt, isa, layout, name))
    return sorted(set(out))


@needs_library
@pytest.mark.parametrize("fmt, isa, layout, name", listed_variants())
def test_every_listed_variant_runs_and_matches_the_reference(fmt, isa, layout, name, use_isa):
    use_isa(isa)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    single = PER_TENSOR if get_format(fmt).kind == "ternary" else PER_CHANNEL
    grouped = [32] if layout == "native" and 32 in get_format(fmt).group_sizes and fmt != "ek_t1" else []
    for group in [single, *grouped]:
        for rows, cols, tokens in [(37, 517, 1), (40, 700, 13)]:  # 13 tokens: blocks of 8, 4 and 1
            tensor = random_tensor(rng, fmt, rows, cols, group)
            lin = kernels.prepare_linear(tensor, "int8_absmax", layout=layout)
            x = rng.standard_normal((tokens, cols)).astype(np.float32)
            check_int(tensor, x, lin(x), exact=group == single or isa == "scalar")
            assert lin.last_variant == name


@needs_library
def test_c_entry_points_refuse_bad_layouts_and_weights():
    lib = _native.load()
    rng = np.random.default_rng(2)
    tensor = random_tensor(rng, "ek_t2", 8, 64, PER_TENSOR)
    data, scales = np.ascontiguousarray(tensor.data), tensor.scales.astype(np.float32)
    q, s = np.zeros((1, 64), np.int8), np.ones(1, np.float32)
    y = np.empty((1, 8), np.float32)
    weight = _native.Weight(1, 7, 8, 64, data.shape[1], 64, 1, 0, data.ctypes.data, scales.ctypes.data, None)
    act = _native.Act(_native.ACT_I8, 0, 1, 64, q.ctypes.data, s.ctypes.data, None, None)
    assert lib.ek_linear(ctypes.byref(weight), ctypes.byref(act), y.ctypes.data, 8, None) == -1   # layout 7
    assert lib.ek_repack_size(ctypes.byref(weight), 1) == 0                                   # not native
    weight.layout = 0
    assert lib.ek_repack_size(ctypes.byref(weight), 5) == 0                                   # unknown layout
    assert lib.ek_repack(ctypes.byref(weight), 5, y.ctypes.data) == -3
    assert lib.ek_repack(ctypes.byref(weight), 1, None) == -3
    weight.format = 5                                                                         # ek_i4: no LUT3
    assert lib.ek_repack_size(ctypes.byref(weight), 1) == 0


@needs_library
def test_kernel_library_environment_variable():
    path = str(_native.library_path())
    done = run_python("import edgekit.kernels as k; print(k.info()['library'])", EDGEKIT_KERNEL_LIBRARY=path)
    assert done.returncode == 0 and done.stdout.strip() == os.path.realpath(path), done.stderr
    done = run_python("import edgekit.kernels as k; k.info()", EDGEKIT_KERNEL_LIBRARY="/nonexistent/_ek.so")
    assert done.returncode != 0 and "ConfigError" in done.stderr and "EDGEKIT_KERNEL_LIBRARY" in done.stderr


@needs_library
def test_auto_layout_is_the_measured_choice_and_names_itself():
    rng = np.random.default_rng(3)
    lin = kernels.prepare_linear(random_tensor(rng, "ek_t2", 64, 256, PER_TENSOR), "int8_absmax")
    assert lin.layout in ("native", "lut3") and f"layout {lin.layout}" in repr(lin)
    grouped = kernels.prepare_linear(random_tensor(rng, "ek_t2", 64, 256, 32), "int8_absmax")
    assert grouped.layout == "native"  # LUT3 takes one scale per tensor or row only
