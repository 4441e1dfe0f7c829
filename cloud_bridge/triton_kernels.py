"""Triton kernels for the cloud's GPU path: every packed integer format x int8 absmax activations.

One kernel reads the packed bytes as they are stored (edgekit/formats/layouts.py), so the GPU holds the
same bytes the CPU's LUT kernels read:

- bit-stream formats (ek_t2, ek_i2/i3/i4, ek_u2/u3/u4, ek_i8 as 8-bit codes): code j of a row occupies bits
  [j*bits, (j+1)*bits) of the row's little-endian bit stream; a 3-bit code may straddle two bytes, so
  each lane loads bytes b and b+1 and shifts the 16-bit pair;
- ek_t1 (TQ1_0's base-3 fixed point): weight j is digit j % 5 of byte j // 5, recovered as
  ((byte * 3^(j % 5)) mod 256) * 3 >> 8 (ggml-quants.c, dequantize_row_tq1_0).

Values: ternary trit = code - 1, symmetric int = code - 2^(bits-1), asymmetric = code - zero[row, group].
Arithmetic matched (edgekit/kernels/reference.py `finish`, the scalar C order): exact int32 sums per
weight group, then
    per-tensor scale s:        y = (float32(acc) * a_scale) * s
    per-row / per-group s_rg:  total += float32(acc_g) * s_rg (groups in order); y = total * a_scale
One program computes a [BLOCK_T tokens, BLOCK_R rows] tile: each step decodes a [BLOCK_R, CHUNK_K] weight
tile to int8 values and accumulates tl.dot(int8 activations, int8 weights) in int32 (exact; tensor cores
on a GPU); a step is one weight group (32/64/128 columns), or 128 columns of a whole-row group with the
tail masked.

Float weights (f16/f32 heads, bitllama2.c's float trits) run as a torch matmul on the device: with int8
activations the products are integers and their float32 sums exact below 2^24, so they too match the
reference bit for bit; with float activations the sum order differs from numpy's BLAS (last-bit
differences, not bit-exact).

Checked bit for bit against the numpy reference on the CPU with TRITON_INTERPRET=1 (no GPU here). On a
GPU the compiler may contract `total + acc * s` into an FMA, which can change the last bit of some
outputs; that path is not verified here.
"""

from __future__ import annotations

import os

import numpy as np

from edgekit.errors import ConfigError
from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format
from edgekit.kernels import reference

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU server does not need it
    triton = None

BLOCK_ROWS = 64     # output rows per program
BLOCK_TOKENS = 16   # tokens per program (tl.dot needs >= 16)

if triton is not None:
    @triton.jit
    def _packed_linear_kernel(data_ptr, scales_ptr, zeros_ptr, q_ptr, a_scale_ptr, out_ptr,
                              tokens, rows, row_bytes, padded_cols, groups, group_width,
                              BITS: tl.constexpr, OFFSET: tl.constexpr, BASE3: tl.constexpr,
                              HAS_ZEROS: tl.constexpr, PER_TENSOR_SCALE: tl.constexpr,
                              BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, CHUNK_K: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)                       # [BLOCK_R] output rows
        t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)                       # [BLOCK_T] tokens
        row_ok, tok_ok = r < rows, t < tokens
        lanes = tl.arange(0, CHUNK_K)                                                # [CHUNK_K]
        total = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
        acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.int32)
        for g in range(groups):
            acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.int32)
            for start in range(0, group_width, CHUNK_K):
                within = start + lanes
                col = g * group_width + within                                       # [CHUNK_K] columns
                col_ok = (within < group_width) & (col < padded_cols)
                ok = row_ok[:, None] & col_ok[None, :]                               # [BLOCK_R, CHUNK_K]
                if BASE3:
                    byte = tl.load(data_ptr + r[:, None] * row_bytes + (col // 5)[None, :], mask=ok,
                                   other=0).to(tl.int32)
                    digit = col % 5
                    power = tl.where(digit == 0, 1, tl.where(digit == 1, 3, tl.where(digit == 2, 9,
                                     tl.where(digit == 3, 27, 81))))
                    code = (((byte * power[None, :]) & 255) * 3) >> 8
                else:
                    bit = col * BITS
                    at = r[:, None] * row_bytes + (bit // 8)[None, :]
                    pair = tl.load(data_ptr + at, mask=ok, other=0).to(tl.int32)
                    if BITS % 8 != 0:        # a code may continue into the next byte (3-bit codes)
                        hi_ok = ok & ((bit // 8 + 1) < row_bytes)[None, :]
                        pair = pair | (tl.load(data_ptr + at + 1, mask=hi_ok, other=0).to(tl.int32) << 8)
                    code = (pair >> (bit % 8)[None, :]) & ((1 << BITS) - 1)
                if HAS_ZEROS:
                    zero = tl.load(zeros_ptr + r * groups + g, mask=row_ok, other=0).to(tl.int32)
                    value = code - zero[:, None]
                else:
                    value = code + OFFSET
                w = tl.where(ok, value, 0).to(tl.int8)                               # [BLOCK_R, CHUNK_K]
                a = tl.load(q_ptr + t[:, None] * padded_cols + col[None, :],
                            mask=tok_ok[:, None] & col_ok[None, :], other=0)          # [BLOCK_T, CHUNK_K] int8
                acc += tl.dot(a, tl.trans(w), out_dtype=tl.int32)                    # exact int32 sums
            if not PER_TENSOR_SCALE:
                s = tl.load(scales_ptr + r * groups + g, mask=row_ok, other=0.0)
                total = total + acc.to(tl.float32) * s[None, :]
        a_scale = tl.load(a_scale_ptr + t, mask=tok_ok, other=0.0)[:, None]           # [BLOCK_T, 1]
        if PER_TENSOR_SCALE:
            s = tl.load(scales_ptr + tl.zeros((BLOCK_R,), dtype=tl.int32))
            y = (acc.to(tl.float32) * a_scale) * s[None, :]
        else:
            y = total * a_scale
        tl.store(out_ptr + t[:, None] * rows + r[None, :], y, mask=tok_ok[:, None] & row_ok[None, :])


def triton_available() -> bool:
    return triton is not None


def default_device() -> str | None:
    """"cuda" when a CUDA device and Triton exist, "cpu" under TRITON_INTERPRET=1, else None (LUT kernels)."""
    if triton is None:
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else None


def _require_triton() -> None:
    if triton is None:
        raise ConfigError("Triton is not installed", fix='pip install "edgekit[bridge-gpu]"')


class TritonLinear:
    """One weight matrix on the device, with PreparedLinear's call contract: x float32 [T, cols] (host)
    -> y float32 [T, rows] (host). The weight's packed bytes and scales are copied to the device once."""

    def __init__(self, weight: QuantizedTensor | np.ndarray, act_quant: str, device: str = "cpu"):
        import torch

        _require_triton()
        self.act_quant, self.device, self.calls = act_quant, device, 0
        self._torch = torch
        if isinstance(weight, np.ndarray) or get_format(weight.format).kind == "float":
            dense = weight if isinstance(weight, np.ndarray) else reference.float_weights(weight)
            self.tensor, self.rows, self.cols = None, dense.shape[0], dense.shape[1]
            self._dense = self._to_device(np.asarray(dense, dtype=np.float32))
            return
        self.tensor, self.rows, self.cols = weight, weight.rows, weight.cols
        fmt = get_format(weight.format)
        self._args = self._packed_args(weight, fmt)

    def _to_device(self, array: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _packed_args(self, t: QuantizedTensor, fmt) -> dict:
        per_tensor = t.group_size == PER_TENSOR
        groups = 1 if per_tensor else t.padded_cols // t.group_width
        scales = np.asarray(t.scales, dtype=np.float32).reshape(-1)
        zeros = t.zeros if t.zeros is not None else np.zeros(1, np.uint8)
        offset = -1 if fmt.kind == "ternary" else (fmt.code_range()[0] if fmt.symmetric else 0)
        self._buffers = [self._to_device(np.asarray(t.data, np.uint8)), self._to_device(scales),
                         self._to_device(np.asarray(zeros, np.uint8))]
        width = t.padded_cols if per_tensor or t.group_size == 0 else t.group_width
        # columns per step: the group width (32/64/128) or, for a whole-row group, 128 with the tail masked
        chunk = t.group_width if t.group_size > 0 else 128
        return dict(row_bytes=t.data.shape[1], padded_cols=t.padded_cols, groups=groups, group_width=width,
                    CHUNK_K=chunk,
                    BITS=fmt.bits, OFFSET=int(offset), BASE3=fmt.name == "ek_t1",
                    HAS_ZEROS=t.zeros is not None, PER_TENSOR_SCALE=per_tensor)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.cols:
            raise ConfigError(f"x has shape {x.shape}, expected [tokens, {self.cols}]",
                              fix="pass [tokens, in_features] activations for this layer")
        self.calls += 1
        if self.tensor is None:
            return self._dense_call(x)
        return self._packed_call(x)

    def _dense_call(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.act_quant == "int8_absmax":  # integer products: exact float32 sums, any order
            q, a_scale = reference.quantize_absmax_int8(x)
            y = (self._to_device(q.astype(np.float32)) @ self._dense.T) * self._to_device(a_scale)[:, None]
        else:
            y = self._to_device(x) @ self._dense.T
        return y.to(torch.float32).cpu().numpy()

    def _packed_call(self, x: np.ndarray) -> np.ndarray:
        torch, a = self._torch, self._args
        tokens = x.shape[0]
        q, a_scale = reference.quantize_absmax_int8(x)                                  # host, [T, cols]
        padded = np.zeros((tokens, a["padded_cols"]), dtype=np.int8)                   # zero padding
        padded[:, : self.cols] = q
        out = torch.empty((tokens, self.rows), dtype=torch.float32, device=self.device)
        if tokens == 0:
            return out.cpu().numpy()
        data, scales, zeros = self._buffers
        grid = (triton.cdiv(self.rows, BLOCK_ROWS), triton.cdiv(tokens, BLOCK_TOKENS))
        _packed_linear_kernel[grid](data, scales, zeros, self._to_device(padded), self._to_device(a_scale), out,
                                    tokens, self.rows, a["row_bytes"], a["padded_cols"], a["groups"],
                                    a["group_width"], BITS=a["BITS"], OFFSET=a["OFFSET"], BASE3=a["BASE3"],
                                    HAS_ZEROS=a["HAS_ZEROS"], PER_TENSOR_SCALE=a["PER_TENSOR_SCALE"],
                                    BLOCK_T=BLOCK_TOKENS, BLOCK_R=BLOCK_ROWS, CHUNK_K=a["CHUNK_K"])
        return out.cpu().numpy()

    def __repr__(self) -> str:
        kind = self.tensor.format if self.tensor is not None else "float"
        return f"TritonLinear({kind} [{self.rows} x {self.cols}], act {self.act_quant}, {self.device})"


def triton_linear(tensor: QuantizedTensor, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """y [T, rows] = packed `tensor` applied to x float32 [T, cols] with per-token int8 activations."""
    return TritonLinear(tensor, "int8_absmax", device)(x)


def triton_linear_i8(tensor: QuantizedTensor, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The ek_i8 case of `triton_linear` (kept for callers of the first version)."""
    if tensor.format != "ek_i8":
        raise ConfigError(f"triton_linear_i8 takes ek_i8, got {tensor.format}", fix="call triton_linear")
    return triton_linear(tensor, x, device)
