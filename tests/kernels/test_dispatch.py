"""ISA forcing, thread settings, deliberately bad buffers, the logged fallback path and the numpy fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from edgekit import kernels
from edgekit.errors import ConfigError
from edgekit.formats import PER_TENSOR
from edgekit.kernels import KernelInputError, _native, reference
from tests.conftest import REPO_ROOT
from tests.kernels.conftest import available_isas, random_tensor

needs_library = pytest.mark.skipif(_native.load() is None, reason="compiled kernels not built")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=full_env,
                          cwd=REPO_ROOT, timeout=120)


@needs_library
@pytest.mark.parametrize("isa", available_isas())
def test_environment_forces_an_available_isa(isa):
    done = run_python("import edgekit.kernels as k; print(k.info()['isa'])", EDGEKIT_KERNEL=isa)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == isa


@needs_library
@pytest.mark.parametrize("value", ["sse9", "neon" if "neon" not in available_isas() else "avx2"])
def test_unknown_or_unavailable_isa_is_a_clear_error(value):
    if value in available_isas():
        pytest.skip(f"{value} runs here")
    done = run_python("import edgekit.kernels as k; k.info()", EDGEKIT_KERNEL=value)
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and f"EDGEKIT_KERNEL={value!r}" in done.stderr


@needs_library
def test_environment_sets_threads_and_rejects_nonsense():
    done = run_python("import edgekit.kernels as k; print(k.get_num_threads())", EDGEKIT_NUM_THREADS="3")
    assert done.stdout.strip() == "3", done.stderr
    done = run_python("import edgekit.kernels as k; k.get_num_threads()", EDGEKIT_NUM_THREADS="many")
    assert done.returncode != 0 and "EDGEKIT_NUM_THREADS" in done.stderr
    with pytest.raises(ConfigError):
        kernels.set_num_threads(0)


@needs_library
def test_set_isa_rejects_unknown_names():
    with pytest.raises(ConfigError, match="not a kernel ISA"):
        kernels.set_isa("mmx")


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    return kernels.prepare_linear(random_tensor(rng, "ek_t2", 40, 130, PER_TENSOR), "int8_absmax")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 130), dtype=np.float64), "dtype float64"),
    (np.zeros((2, 129), dtype=np.float32), "shape"),
    (np.zeros((130,), dtype=np.float32), "2-D"),
    (np.zeros((2, 260), dtype=np.float32)[:, ::2], "C-contiguous"),
    (np.zeros((130, 2), dtype=np.float32).T, "C-contiguous"),
    ([[0.0] * 130], "2-D"),
])
def test_bad_activation_buffers_are_errors(layer, bad, message):
    with pytest.raises(KernelInputError, match=message):
        layer(bad)


def test_misaligned_buffer_is_an_error(layer):
    raw = np.zeros(130 * 4 + 1, dtype=np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(1, 130)
    assert not misaligned.flags.aligned
    with pytest.raises(KernelInputError, match="aligned"):
        layer(misaligned)


def test_bad_output_buffers_are_errors(layer):
    x = np.ones((2, 130), dtype=np.float32)
    with pytest.raises(KernelInputError, match="shape"):
        layer(x, out=np.empty((2, 39), dtype=np.float32))
    read_only = np.empty((2, 40), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(KernelInputError, match="read-only"):
        layer(x, out=read_only)
    out = np.empty((2, 40), dtype=np.float32)
    assert layer(x, out=out) is out


def test_bad_weights_and_modes_are_errors():
    with pytest.raises(KernelInputError):
        kernels.prepare_linear(np.zeros((3, 4), dtype=np.int32), "none")
    with pytest.raises(ConfigError, match="act_quant"):
        kernels.prepare_linear(np.zeros((3, 4), dtype=np.float32), "int4")
    rng = np.random.default_rng(1)
    tensor = random_tensor(rng, "ek_i4", 8, 64, 32)
    broken = type(tensor)(tensor.format, tensor.shape, tensor.group_size, tensor.data[:, :-1], tensor.scales)
    with pytest.raises(Exception, match="packed data"):
        kernels.prepare_linear(broken, "int8_absmax")


@needs_library
def test_shape_a_fast_kernel_cannot_take_falls_back_with_a_logged_reason(caplog):
    """ek_t1 with per-group scales: AVX2 base-3 chunks straddle groups, so the scalar kernel runs, correctly."""
    if "avx2" not in available_isas():
        pytest.skip("no AVX2 here")
    rng = np.random.default_rng(2)
    tensor = random_tensor(rng, "ek_t1", 21, 300, 32)
    with caplog.at_level(logging.INFO, logger="edgekit.kernels.api"):
        lin = kernels.prepare_linear(tensor, "int8_absmax")
    assert any("falls back" in r.message and "straddle" in r.message for r in caplog.records)
    x = rng.standard_normal((3, 300)).astype(np.float32)
    q, scale = reference.quantize_absmax_int8(x)
    padded = np.zeros((3, tensor.padded_cols), dtype=np.int8)
    padded[:, :300] = q
    np.testing.assert_array_equal(lin(x), reference.linear_int8(tensor, padded, scale))
    assert lin.last_variant == "int_dot_scalar"


def test_numpy_fallback_when_the_library_is_missing(monkeypatch, caplog):
    monkeypatch.setattr(_native, "load", lambda: None)
    rng = np.random.default_rng(4)
    tensor = random_tensor(rng, "ek_u4", 12, 100, 32)
    lin = kernels.prepare_linear(tensor, "int8_absmax")
    assert lin.variant == "numpy_reference"
    assert kernels.info()["compiled"] is False
    x = rng.standard_normal((2, 100)).astype(np.float32)
    q, scale = reference.quantize_absmax_int8(x)
    padded = np.zeros((2, tensor.padded_cols), dtype=np.int8)
    padded[:, :100] = q
    np.testing.assert_array_equal(lin(x), reference.linear_int8(tensor, padded, scale))
    w = rng.standard_normal((5, 9)).astype(np.float32)
    np.testing.assert_allclose(kernels.prepare_linear(w, "none")(x[:, :9].copy()), x[:, :9] @ w.T, rtol=1e-6)


def test_missing_library_is_reported_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(_native, "library_path", lambda: None)
    _native.load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="edgekit.kernels._native"):
            assert _native.load() is None
        assert any("not built" in r.message for r in caplog.records)
    finally:
        monkeypatch.undo()
        _native.load.cache_clear()
        _native.load()


@needs_library
def test_info_and_read_bandwidth():
    info = kernels.info()
    assert info["compiled"] and info["isa"] in info["available_isas"]
    assert info["variants"]["ek_t2"]["scalar"]["decode"] == "int_dot_scalar"
    if "avx2" in info["available_isas"]:
        assert info["variants"]["ek_t2"]["avx2"]["decode"] == "t2_maddubs_avx2"
    assert kernels.read_bandwidth(8 << 20, 1, reps=1) > 0.1


@needs_library
@pytest.mark.parametrize("fmt, group", [("ek_t2", PER_TENSOR), ("ek_i8", 32), ("ek_i4", 32)])
def test_weights_off_a_cache_line_are_bound_aligned_and_give_the_same_result(fmt, group):
    """safetensors/numpy arrays start 16 bytes past a cache line; the binding copies them to 64-byte-aligned
    memory (AVX-512 rows would straddle two lines) and the result is that of the aligned weight."""
    rng = np.random.default_rng(3)
    tensor = random_tensor(rng, fmt, 45, 700, group)
    raw = np.empty(tensor.data.nbytes + 80, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + 16
    shifted = raw[start:start + tensor.data.nbytes].reshape(tensor.data.shape)
    shifted[...] = tensor.data
    off = type(tensor)(tensor.format, tensor.shape, tensor.group_size, shifted, tensor.scales, tensor.zeros)
    assert off.data.ctypes.data % 64 == 16
    lin = kernels.prepare_linear(off, "int8_absmax")
    assert lin._weight.data % 64 == 0 and lin._keep[0] is not off.data
    x = rng.standard_normal((2, 700)).astype(np.float32)
    np.testing.assert_array_equal(lin(x), kernels.prepare_linear(tensor, "int8_absmax")(x))
    copy = kernels.api.aligned(shifted)
    assert copy.ctypes.data % 64 == 0 and np.array_equal(copy, shifted) and kernels.api.aligned(copy) is copy
