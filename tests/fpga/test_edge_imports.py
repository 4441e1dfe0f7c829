"""The FPGA back end is edge code: it runs (C simulation included) without importing torch or transformers."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
from edgekit.model import load
from edgekit.runtime import open_backend
backend = open_backend(load(sys.argv[1]), "fpga", 32)
logits = backend.prefill([1, 5, 9])
assert logits.shape == (3, 512), logits.shape
heavy = sorted(m for m in ("torch", "transformers", "hls4ml", "pynq") if m in sys.modules)
print("heavy:", heavy)
"""


def test_fpga_backend_imports_no_torch(models):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(models / "bitnet" / "bitllama2c_1M_ternary_msbfirst.bin")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "EDGEKIT_FPGA_DEVICE": "csim"})
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout
