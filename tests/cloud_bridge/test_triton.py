"""The Triton packed-format kernels, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1): each format
against the numpy reference bit for bit, and the cloud server on them against the server on the LUT kernels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install 'edgekit[bridge-gpu]')")

KERNEL_SCRIPT = r"""
import numpy as np
from edgekit.kernels import prepare_linear, reference
from edgekit.quantize.methods import quantize_absmean, quantize_rtn
from edgekit.cloud_bridge.triton_kernels import triton_linear

rng = np.random.default_rng(3)
CASES = {"ek_t2": (-1, 0, 32), "ek_t1": (-1, 0), "ek_i2": (0, 32), "ek_i3": (0, 64), "ek_i4": (0, 128),
         "ek_u2": (32,), "ek_u3": (0, 32), "ek_u4": (64,), "ek_i8": (0, 32)}
for fmt, group_sizes in CASES.items():
    for group in group_sizes:
        for rows, cols, tokens in ((8, 64, 1), (70, 70, 3), (130, 256, 20)):  # 70 cols: padding; 20: two token blocks
            w = rng.normal(size=(rows, cols)).astype(np.float32)
            tensor = (quantize_absmean if fmt.startswith("ek_t") else quantize_rtn)(w, fmt, group)
            x = (rng.normal(size=(tokens, cols)) * 4).astype(np.float32)
            got = triton_linear(tensor, x)
            q, a_scale = reference.quantize_absmax_int8(x)
            padded = np.zeros((tokens, tensor.padded_cols), np.int8); padded[:, :cols] = q
            want = reference.linear_int8(tensor, padded, a_scale)
            assert np.array_equal(got, want), (fmt, group, rows, cols, np.abs(got - want).max())
            cpu = prepare_linear(tensor, "int8_absmax")(x)
            # the compiled SIMD kernels may add groups in another order: float32 rounding of the final sum only
            assert np.abs(got - cpu).max() <= 1e-5 * np.abs(want).max() + 1e-30, (fmt, group)
print("ok")
"""

SERVER_SCRIPT = r"""
import sys
import numpy as np
from edgekit.model import load
from edgekit.cloud_bridge.exits import SplitPlan, load_exit_heads
from edgekit.cloud_bridge.layers import LayerStack
from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer
from edgekit.cloud_bridge.session import BridgeConfig, BridgeEdge

model = load(sys.argv[1])
heads = load_exit_heads(model)
plan = SplitPlan(tuple(sorted(heads)), model.config.n_layers)
prompt = model.tokenizer.encode("Once upon a time", add_bos=True)
tokens, stacks = {}, {}
for kernels in ("auto", "cpu"):        # auto picks Triton here: TRITON_INTERPRET=1
    with BackgroundServer(model, ServerConfig(token="triton-test-token", kernels=kernels)) as server:
        stacks[kernels] = server.bridge.stack
        edge = BridgeEdge(model, heads, plan, BridgeConfig(url=server.ws_url, token="triton-test-token",
                                                           threshold=2.0, encoding="f32", timeout_s=120.0))  # all hard
        try:
            out = list(edge.generate(prompt, 6))
        finally:
            edge.close()
        assert all(o.source == "cloud" for o in out), [o.source for o in out]
        tokens[kernels] = [o.token for o in out]
triton_stack, cpu_stack = stacks["auto"], stacks["cpu"]
assert triton_stack.linears == "triton" and cpu_stack.linears == "cpu"
assert all(kernel.calls > 0 for kernel, _ in triton_stack._kernels.values()), "a linear did not run on Triton"
assert tokens["auto"] == tokens["cpu"], tokens
# the cloud layers bit for bit: Triton against the numpy reference (the LUT kernels' oracle)
h = np.random.default_rng(0).normal(size=(5, model.config.dim)).astype(np.float32)
positions = np.arange(5)
got = triton_stack.run_layers(h, plan.split, model.config.n_layers, positions, triton_stack.new_cache(16))
reference = LayerStack(model, linears="numpy")
want = reference.run_layers(h, plan.split, model.config.n_layers, positions, reference.new_cache(16))
assert np.array_equal(got, want), np.abs(got - want).max()
print("ok", tokens["auto"])
"""


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_triton_packed_kernels_are_bit_exact_under_the_interpreter():
    assert _run(KERNEL_SCRIPT).strip().endswith("ok")


@pytest.mark.slow
def test_server_on_triton_gives_the_lut_servers_tokens(bridge_model_path):
    assert _run(SERVER_SCRIPT, str(bridge_model_path)).startswith("ok")
