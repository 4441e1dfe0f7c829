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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgekit.formats import PER_TENSOR, QuantizedTensor, get_format, pack_values
from edgekit.kernels import PreparedLinear, prepare_linear
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

    `parts` are the kernels called (one when fused); `splits` the column offsets of each logical output."""

    parts: list[PreparedLinear]
    widths: list[int]
    bias: np.ndarray | None = None
    _decode_out: np.ndarray | None = field(default=None, repr=False)

    @property
    def out_features(self) -> int:
        return sum(self.widths)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x float32 [T, K] -> float32 [T, sum N] (+ bias). Decode (T = 1) writes one preallocated buffer."""
        x = np.ascontiguousarray(x, dtype=np.float32)       # kernels refuse strided views (no copy if contiguous)
        tokens = x.shape[0]
        if tokens == 1:
            out = self._decode_out
        else:
            out = np.empty((tokens, self.out_features), dtype=np.float32)
        if len(self.parts) == 1:
            self.parts[0](x, out=out)
        else:
            start = 0
            for part in self.parts:             # kernels need a contiguous out: write, then place
                out[:, start:start + part.rows] = part(x)
                start += part.rows
        if self.bias is not None:
            out += self.bias
        return out

    @property
    def variants(self) -> list[str]:
        return [p.last_variant for p in self.parts]


def prepare_group(model: Model, names: list[str], act_quant: str, bias_names: list[str] | None,
                  fuse: bool) -> FusedLinear:
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
    group = FusedLinear(parts, widths, bias)
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


def prepare_layer(model: Model, layer: int, fuse: bool) -> LayerWeights:
    c: ModelConfig = model.config
    p = f"layers.{layer}."
    act = c.act_quant
    qkv_bias = [p + "bq", p + "bk", p + "bv"] if c.qkv_bias else None
    return LayerWeights(
        qkv=prepare_group(model, [p + "wq", p + "wk", p + "wv"], act, qkv_bias, fuse),
        wo=prepare_group(model, [p + "wo"], act, [p + "bo"] if c.o_bias else None, fuse),
        gate_up=prepare_group(model, [p + "w1", p + "w3"], act, None, fuse),
        w2=prepare_group(model, [p + "w2"], act, None, fuse),
        attn_norm=_optional(model, p + "attn_norm"), ffn_norm=_optional(model, p + "ffn_norm"),
        q_norm=_optional(model, p + "q_norm"), k_norm=_optional(model, p + "k_norm"),
        attn_sub_norm=_optional(model, p + "attn_sub_norm"), ffn_sub_norm=_optional(model, p + "ffn_sub_norm"))


def prepare_output(model: Model) -> FusedLinear:
    """The output layer (the embedding matrix when tied), with float activations like the reference's logits.

    A packed output layer (e.g. int8 blocks) still runs on integer kernels, which quantize the final hidden
    state per token to int8: the one place the engine's logits differ from the reference's by design."""
    return prepare_group(model, [model.output_name], "none", None, fuse=False)
