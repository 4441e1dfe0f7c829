"""What the device reads, taken from a `Model`: ternary matrices, the packed weight blob, the float
parameters (scales and norms) and the host-computed RoPE table, all in hls/include/ek_layer.h's layouts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.hls.design import Design
from edgekit.hls.lm_head import SCREEN_BITS, HeadData, quantize_head
from edgekit.hls.packing import MATRICES, pack_matrix
from edgekit.model.model import Model
from edgekit.model.reference import ReferenceForward, rope_inv_freq


@dataclass
class DeviceData:
    trits: dict[str, np.ndarray]    # "layers.{i}.wq" -> int8 [out, in]
    weights: np.ndarray             # uint64 [layers * layer_words]
    params: np.ndarray              # float32 [layers * layer_params]
    rope: np.ndarray                # float32 [max_seq, head_dim / 2, 2] (cos, sin)
    head: HeadData                  # the on-chip LM head (hls/lm_head.py)
    head_params: np.ndarray         # float32 [dim + head_rows (+ head_rows)]: final norm weight, row scales
    screen: HeadData | None = None  # the 2-bit screening copy (head_screen > 0)

    @property
    def head_words(self) -> np.ndarray:
        """The device's head buffer: the full head's words, then the screening copy's."""
        return self.head.words if self.screen is None else np.concatenate([self.head.words, self.screen.words])


def head_data(model: Model, design: Design, forward: ReferenceForward) -> tuple[HeadData, np.ndarray, HeadData | None]:
    weight, post_scale = forward.weight(model.output_name)
    weight = np.asarray(weight, dtype=np.float32)
    head = quantize_head(weight, design, post_scale)
    screen = quantize_head(weight, design, post_scale, SCREEN_BITS) if design.hls.head_screen else None
    forward.forget(model.output_name)
    norm = np.asarray(model.tensors["norm"], dtype=np.float32).reshape(-1)
    scales = [norm, head.row_scales] + ([screen.row_scales] if screen is not None else [])
    return head, np.concatenate(scales).astype(np.float32), screen


def ternary_matrix(forward: ReferenceForward, name: str) -> tuple[np.ndarray, np.float32]:
    """(trits int8 [out, in], scale) of one linear weight; refuses anything not exactly ternary."""
    weight, scale = forward.weight(name)
    scale = np.asarray(scale, dtype=np.float32)
    if scale.size != 1 or not np.isin(weight, (-1.0, 0.0, 1.0)).all():
        raise UnsupportedModelError(f"{name} is not a ternary matrix with one scale (the TLMM engine's input)",
                                    fix="quantize to ternary first: edgekit quantize --format ek_t1")
    return weight.astype(np.int8), np.float32(scale.reshape(()))


def layer_params(model: Model, design: Design, layer: int, scales: list[np.float32]) -> np.ndarray:
    """[layer_params] float32: 7 scales + pad, attn_norm, ffn_norm, attn/ffn sub-norms (ones if absent)."""
    off, p = design.param_offsets(), f"layers.{layer}."
    out = np.zeros(off["layer"], dtype=np.float32)
    out[:7] = scales
    sizes = {"attn_norm": design.dim, "ffn_norm": design.dim, "attn_sub_norm": design.q_dim,
             "ffn_sub_norm": design.hidden}
    for name, size in sizes.items():
        tensor = model.tensors.get(p + name)
        out[off[name]:off[name] + size] = 1.0 if tensor is None else np.asarray(tensor, dtype=np.float32)
    return out


def rope_table(model: Model, max_seq: int) -> np.ndarray:
    """cos/sin of pos * inv_freq in float32, computed as edgekit/model/reference.py apply_rope does."""
    inv = rope_inv_freq(model.config, model.tensors.get("rope_freqs"))
    angles = np.arange(max_seq)[:, None].astype(np.float32) * inv[None, :]   # [max_seq, hd/2]
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32)


def extract_device_data(model: Model, design: Design) -> DeviceData:
    forward = ReferenceForward(model)
    trits, blobs, params = {}, [], []
    for layer in range(design.layers):
        scales = []
        for name in MATRICES:
            key = f"layers.{layer}.{name}"
            trits[key], scale = ternary_matrix(forward, key)
            scales.append(scale)
            blobs.append(pack_matrix(trits[key], design.code, design.hls.lanes))
        params.append(layer_params(model, design, layer, scales))
        forward.forget()
    head, head_params, screen = head_data(model, design, forward)
    return DeviceData(trits=trits, weights=np.concatenate(blobs), params=np.concatenate(params),
                      rope=rope_table(model, design.max_seq), head=head, head_params=head_params, screen=screen)
