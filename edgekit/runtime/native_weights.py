"""The native engine's weights: every linear layer bound once to its kernels (edgekit.kernels.prepare_linear).

What each canonical tensor becomes (matching what edgekit.model.reference.ReferenceForward computes):
- a `QuantizedTensor`: passed to the kernels as is (per-tensor ternary keeps its scale inside, applied
  as ((acc * a_scale) * s), the reference's order, so ternary A8 linears are bit-exact);
- a float ternary matrix with a `<name>.scale` tensor (bitllama2.c): packed losslessly to ek_t2 with that
  per-tensor scale, the same trits and the same float order as the reference's (q @ W.T) * a_scale * s;
- any other float matrix: float32 through the kernels' f32 path.

Fusion: q/k/v (and gate/up) share their input, so one kernel call over the row-concatenated matrix does the
work of three (two). Packing is per row, so concatenating rows leaves every output element's computation
unchanged (tests check the fused engine is bit-identical to the unfused one). Fusion needs the same format,
group size and, for per-tensor scales, the same scale; and it is only done for small matrices, where the
per-call overhead (~10 us) is comparable to the work, because the fused copy costs its size in memory.
Larger integer-weight groups (BitNet 2B4T's gate/up, 2 x 6912 x 2560) stay separate matrices but run as one
foreign call (edgekit.kernels.api.LinearGroup, ek_linear_multi): one activation quantization, one pool run,
no copy; each part's outputs are exactly its own call's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values
from edgekit.kernels import PreparedLinear, prepare_linear, quantize_absmax_int8
from edgekit.kernels.api import LinearGroup
from edgekit.model.config import ModelConfig
from edgekit.model.lazy import materialize
from edgekit.model.model import Model

logger = logging.getLogger(__name__)

FUSE_MAX_BYTES = 8 << 20     # above this a fused copy costs more RSS than the saved call overhead is worth


def kernel_weight(model: Model, name: str) -> QuantizedTensor | np.ndarray:
    """The tensor `name` in a form prepare_linear takes (see the module doc for the three cases)."""
    w = model.tensors[name]
    if isinstance(w, QuantizedTensor):
        return w
    w = np.ascontiguousarray(materialize(w), dtype=np.float32)
    scale = model.tensors.get(name + ".scale")
    if model.config.ternary_weights and scale is not None:
        # trits stored as float32 {-1, 0, +1}; the model validated them when it was loaded
        scales = np.asarray(scale, dtype=np.float32).reshape(1, 1)
        return pack_values("ek_t2", w.astype(np.int8), scales, PER_TENSOR)
    return w


def can_fuse(weights: list[QuantizedTensor | np.ndarray]) -> bool:
    """True when the row-concatenation of `weights` computes each row exactly as the parts do."""
    first = weights[0]
    if isinstance(first, np.ndarray):
        same = all(isinstance(w, np.ndarray) and w.shape[1] == first.shape[1] for w in weights)
        return same and sum(w.nbytes for w in weights) <= FUSE_MAX_BYTES
    if not all(isinstance(w, QuantizedTensor) for w in weights):
        return False
    keys = {(w.format, w.cols, w.group_size, w.scales.dtype, w.zeros is None) for w in weights}
    if len(keys) != 1 or sum(w.nbytes for w in weights) > FUSE_MAX_BYTES:
        return False
    if first.group_size == PER_TENSOR and get_format(first.format).kind != "float":
        return all(np.array_equal(w.scales, first.scales) for w in weights)
    return True


def concat_rows(weights: list[QuantizedTensor | np.ndarray]) -> QuantizedTensor | np.ndarray:
    """Stack matrices [rows_i, cols] into [sum rows_i, cols] (packed rows and their scales side by side)."""
    first = weights[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(weights, axis=0)
    per_tensor = first.group_size == PER_TENSOR
    scales = first.scales if per_tensor else np.concatenate([w.scales for w in weights], axis=0)
    zeros = None if first.zeros is None else (
        first.zeros if per_tensor else np.concatenate([w.zeros for w in weights], axis=0))
    rows = sum(w.rows for w in weights)
    return QuantizedTensor(first.format, (rows, first.cols), first.group_size,
                           np.concatenate([w.data for w in weights], axis=0), scales, zeros)


@dataclass
class FusedLinear:
    """One or more linears over the same input: `__call__(x)` gives their outputs side by side [T, sum N].

    `parts` are the kernels called (one when fused), `widths` each logical output's columns. With
    `split_activations` (integer weights under a float-activation model, see split_rows) every call runs
    the kernels on x and on its int8 rounding residual as 2T tokens of one call and adds the halves."""

    parts: list[PreparedLinear]
    widths: list[int]
    bias: np.ndarray | None = None
    split_activations: bool = False
    _decode_out: np.ndarray | None = field(default=None, repr=False)
    _group: LinearGroup | None = field(default=None, repr=False)

    def __post_init__(self):
        if len(self.parts) > 1 and LinearGroup.applies(self.parts):
            self._group = LinearGroup(self.parts)       # unfused parts: still one foreign call (ek_linear_multi)

    @property
    def out_features(self) -> int:
        return sum(self.widths)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x float32 [T, K] -> float32 [T, sum N] (+ bias). Decode (T = 1) writes one preallocated buffer."""
        x = np.ascontiguousarray(x, dtype=np.float32)       # kernels refuse strided views (no copy if contiguous)
        tokens = x.shape[0]
        if self.split_activations:
            both = self._run(split_rows(x))                  # [2T, N]: W q(x) s_x and W q(r) s_r
            out = np.add(both[:tokens], both[tokens:], out=self._decode_out if tokens == 1 else None)
        else:
            out = self._run(x, self._decode_out if tokens == 1 else None)
        if self.bias is not None:
            out += self.bias
        return out

    def _run(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((x.shape[0], self.out_features), dtype=np.float32)
        if len(self.parts) == 1:
            return self.parts[0](x, out=out)
        if self._group is not None:
            return self._group(x, out=out)
        start = 0
        for part in self.parts:                 # kernels need a contiguous out: write, then place
            out[:, start:start + part.rows] = part(x)
            start += part.rows
        return out

    @property
    def variants(self) -> list[str]:
        if self._group is not None:
            return [self._group.last_variant] * len(self.parts)
        return [p.last_variant for p in self.parts]


def split_rows(x: np.ndarray) -> np.ndarray:
    """x [T, K] -> [2T, K]: x, then x minus its per-token int8 absmax rounding (what the kernels compute from x).

    The integer kernels quantize each row to int8 with scale max|row| / 127. The residual row is quantized
    the same way with its own ~127x smaller scale, so the sum of both products carries ~15-bit activations:
    float-activation models (the reference keeps x in float) then agree with the reference to ~1e-4, where
    one int8 pass loses ~1.5% top-1 agreement on stories260K (int4 g32: 98.4% vs 100%, measured). Decode
    stays one weight pass: the kernels read each weight row once for both tokens."""
    q, scale = quantize_absmax_int8(x)                                        # bit-exact with the C quantizer
    out = np.empty((2 * x.shape[0], x.shape[1]), dtype=np.float32)
    out[:x.shape[0]] = x
    np.multiply(q, scale[:, None], out=out[x.shape[0]:])
    np.subtract(x, out[x.shape[0]:], out=out[x.shape[0]:])
    return out


def needs_split(weights: list[QuantizedTensor | np.ndarray], act_quant: str, act_passes: int) -> bool:
    """Two passes for integer weights whose model keeps float activations (act_quant "none")."""
    integer = any(isinstance(w, QuantizedTensor) and get_format(w.format).kind != "float" for w in weights)
    return act_passes == 2 and act_quant == "none" and integer


def prepare_group(model: Model, names: list[str], act_quant: str, bias_names: list[str] | None,
                  fuse: bool, act_passes: int = 2) -> FusedLinear:
    """Bind the linears `names` (sharing one input), fused into one kernel call when that is exact."""
    weights = [kernel_weight(model, n) for n in names]
    widths = [w.shape[0] for w in weights]
    if fuse and len(weights) > 1 and can_fuse(weights):
        parts = [prepare_linear(concat_rows(weights), act_quant)]
    else:
        parts = [prepare_linear(w, act_quant) for w in weights]
    bias = None
    if bias_names:
        bias = np.concatenate([np.asarray(materialize(model.tensors[b]), np.float32) for b in bias_names])
    group = FusedLinear(parts, widths, bias, needs_split(weights, act_quant, act_passes))
    group._decode_out = np.empty((1, group.out_features), dtype=np.float32)
    return group


@dataclass
class LayerWeights:
    """One transformer block's prepared linears and its small float tensors (norm weights)."""

    qkv: FusedLinear
    wo: FusedLinear
    gate_up: FusedLinear
    w2: FusedLinear
    attn_norm: np.ndarray | None
    ffn_norm: np.ndarray | None
    q_norm: np.ndarray | None
    k_norm: np.ndarray | None
    attn_sub_norm: np.ndarray | None
    ffn_sub_norm: np.ndarray | None


def _optional(model: Model, name: str) -> np.ndarray | None:
    w = model.tensors.get(name)
    return None if w is None else np.asarray(materialize(w), dtype=np.float32)


def prepare_layer(model: Model, layer: int, fuse: bool, act_passes: int = 2) -> LayerWeights:
    c: ModelConfig = model.config
    p = f"layers.{layer}."
    act, n = c.act_quant, act_passes
    qkv_bias = [p + "bq", p + "bk", p + "bv"] if c.qkv_bias else None
    return LayerWeights(
        qkv=prepare_group(model, [p + "wq", p + "wk", p + "wv"], act, qkv_bias, fuse, n),
        wo=prepare_group(model, [p + "wo"], act, [p + "bo"] if c.o_bias else None, fuse, n),
        gate_up=prepare_group(model, [p + "w1", p + "w3"], act, None, fuse, n),
        w2=prepare_group(model, [p + "w2"], act, None, fuse, n),
        attn_norm=_optional(model, p + "attn_norm"), ffn_norm=_optional(model, p + "ffn_norm"),
        q_norm=_optional(model, p + "q_norm"), k_norm=_optional(model, p + "k_norm"),
        attn_sub_norm=_optional(model, p + "attn_sub_norm"), ffn_sub_norm=_optional(model, p + "ffn_sub_norm"))


def prepare_output(model: Model, act_passes: int = 2) -> FusedLinear:
    """The output layer (the embedding matrix when tied), with float activations like the reference's logits
    (a packed output layer runs on the integer kernels in `act_passes` int8 passes, see split_rows)."""
    return prepare_group(model, [model.output_name], "none", None, False, act_passes)
