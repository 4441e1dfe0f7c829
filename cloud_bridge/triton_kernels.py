"""A Triton kernel for the cloud's GPU path: ek_i8 weights x int8 absmax activations.

Layout matched (edgekit/formats/layouts.py, `Int8`): codes uint8 [rows, padded_cols] = value + 128,
scales [rows, groups] (group 32; per-channel rows are not powers of two). Arithmetic matched
(edgekit/kernels/reference.py `linear_int8`): exact int32 group sums, then, in group order,
total += float32(acc_g) * s_g, and y = total * a_scale. One program per (output row, token).

Checked bit for bit against the numpy reference on the CPU with TRITON_INTERPRET=1 (no GPU here). On a
GPU the compiler may contract `total + acc * s` into an FMA, which changes the last bit of some outputs;
that path is not verified here.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import ConfigError
from edgekit.formats import QuantizedTensor
from edgekit.kernels import reference

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU server does not need it
    triton = None


if triton is not None:
    @triton.jit
    def _i8_linear_kernel(codes_ptr, scales_ptr, q_ptr, a_scale_ptr, out_ptr, rows, groups, padded_cols,
                          GROUP: tl.constexpr):
        row = tl.program_id(0)
        token = tl.program_id(1)
        offsets = tl.arange(0, GROUP)
        total = tl.zeros((1,), dtype=tl.float32)
        for g in range(groups):
            base = g * GROUP + offsets
            w = tl.load(codes_ptr + row * padded_cols + base).to(tl.int32) - 128        # [GROUP] values
            a = tl.load(q_ptr + token * padded_cols + base).to(tl.int32)                # [GROUP] int8 acts
            acc = tl.sum(w * a, axis=0)                                                 # exact in int32
            s = tl.load(scales_ptr + row * groups + g + tl.zeros((1,), dtype=tl.int32))
            total = total + acc.to(tl.float32) * s
        a_scale = tl.load(a_scale_ptr + token + tl.zeros((1,), dtype=tl.int32))
        tl.store(out_ptr + token * rows + row + tl.zeros((1,), dtype=tl.int32), total * a_scale)


def triton_linear_i8(tensor: QuantizedTensor, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """y [T, rows] = ek_i8 `tensor` applied to x float32 [T, cols] with per-token int8 activations."""
    import torch

    if triton is None:
        raise ConfigError("Triton is not installed", fix='pip install "edgekit[bridge-gpu]"')
    if tensor.format != "ek_i8" or tensor.group_size != 32:
        raise ConfigError(f"the Triton kernel takes ek_i8 with group 32, got "
                          f"{tensor.format} group {tensor.group_size}", fix="use the CPU kernels for this tensor")
    q, a_scale = reference.quantize_absmax_int8(np.ascontiguousarray(x, dtype=np.float32))
    padded = np.zeros((x.shape[0], tensor.padded_cols), dtype=np.int8)                  # zero padding
    padded[:, : tensor.cols] = q
    width = tensor.group_width
    groups = tensor.padded_cols // width
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)          # noqa: E731
    codes, scales = as_tensor(tensor.data), as_tensor(tensor.scales.astype(np.float32))
    out = torch.empty((x.shape[0], tensor.rows), dtype=torch.float32, device=device)
    _i8_linear_kernel[(tensor.rows, x.shape[0])](codes, scales, as_tensor(padded), as_tensor(a_scale), out,
                                                 tensor.rows, groups, tensor.padded_cols, GROUP=width)
    return out.cpu().numpy()
