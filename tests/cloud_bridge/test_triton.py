"""The Triton ek_i8 kernel, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1), against the reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install 'edgekit[bridge-gpu]')")

SCRIPT = r"""
import numpy as np
from edgekit.kernels import prepare_linear, reference
from edgekit.quantize.methods import quantize_rtn
from edgekit.cloud_bridge.triton_kernels import triton_linear_i8

rng = np.random.default_rng(3)
for rows, cols, tokens in ((8, 64, 1), (5, 70, 3), (16, 96, 2)):      # 70: a padded last group
    tensor = quantize_rtn(rng.normal(size=(rows, cols)).astype(np.float32), "ek_i8", 32)
    x = (rng.normal(size=(tokens, cols)) * 4).astype(np.float32)
    got = triton_linear_i8(tensor, x)
    q, a_scale = reference.quantize_absmax_int8(x)
    padded = np.zeros((tokens, tensor.padded_cols), np.int8); padded[:, :cols] = q
    want = reference.linear_int8(tensor, padded, a_scale)
    assert np.array_equal(got, want), (rows, cols, tokens, np.abs(got - want).max())
    cpu = prepare_linear(tensor, "int8_absmax")(x)
    # the compiled SIMD kernels may add groups in another order: float32 rounding of the final sum only
    assert np.abs(got - cpu).max() <= 1e-5 * np.abs(want).max(), np.abs(got - cpu).max()
print("ok")
"""


@pytest.mark.slow
def test_triton_i8_kernel_is_bit_exact_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
