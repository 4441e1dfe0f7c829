"""The integer/float32 reference of the HLS design: numpy doing exactly what hls/include/*.h does.

Every sum runs in index order, every float32 operation is one IEEE-rounded numpy ufunc in the C++'s
order, exp is `ek_math.h`'s polynomial, and the ternary matmul is an exact integer sum (the engine's table
lookups give the same integers: `packing.tlmm_by_tables`). So this and the C simulation agree bit for
bit, and this is held close to edgekit's float reference forward (edgekit/model/reference.py).
"""

from __future__ import annotations

import numpy as np

from edgekit.hls.design import Design

F32 = np.float32
LOG2E = F32(float.fromhex("0x1.715476p+0"))
EXP2_POLY = [F32(float.fromhex(h)) for h in ("0x1p+0", "0x1.62e43p-1", "0x1.ebfbep-3", "0x1.c6b08ep-5",
                                              "0x1.3b2ab6p-7", "0x1.5d87fep-10", "0x1.430912p-13",
                                              "0x1.ffcbfcp-17")]


def exp_approx(x: np.ndarray) -> np.ndarray:
    """ek_math.h exp_approx: clamp, t = x log2 e, 2^frac(t) by Horner, times 2^floor(t)."""
    x = np.minimum(np.maximum(np.asarray(x, dtype=F32), F32(-87.0)), F32(88.0))
    t = x * LOG2E
    n = np.floor(t)
    f = t - n
    p = np.full_like(f, EXP2_POLY[7])
    for k in range(6, -1, -1):
        p = p * f + EXP2_POLY[k]
    return np.ldexp(p, n.astype(np.int32)).astype(F32)


def sum_squares(x: np.ndarray, lanes: int = 1) -> np.ndarray:
    """Sum of x^2 over the last axis as ek_quant.h sum_squares: `lanes` partial sums (element i into lane
    i % lanes, each in index order), then the partials added in lane order: [..., N] -> [...]."""
    partial = [np.zeros(x.shape[:-1], dtype=F32) for _ in range(lanes)]
    for i in range(x.shape[-1]):
        partial[i % lanes] = partial[i % lanes] + x[..., i] * x[..., i]
    s = partial[0]
    for p in partial[1:]:
        s = s + p
    return s


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: np.float32, lanes: int = 1) -> np.ndarray:
    d = np.sqrt(sum_squares(x, lanes) / F32(x.shape[-1]) + eps)
    return x / d[..., None] * weight


def bitlinear_norm(x: np.ndarray, lanes: int = 1) -> np.ndarray:
    rms = np.sqrt(sum_squares(x, lanes) / F32(x.shape[-1]))
    d = np.where(rms > 0, rms * F32(x.shape[-1]), F32(1.0))
    return x / d[..., None]


def quantize_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [T, N] -> (q [T, N] int64 in [-127, 127], scale [T] float32) as ek_quant.h quantize_absmax."""
    scale = np.max(np.abs(x), axis=-1) / F32(127.0)
    safe = np.where(scale > 0, scale, F32(1.0))
    v = x / safe[:, None]
    r = np.floor(np.abs(v) + F32(0.5))
    return np.where(v < 0, -r, r).astype(np.int64), scale.astype(F32)


def silu_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    return gate / (F32(1.0) + exp_approx(-gate)) * up


def relu2_gate(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    g = np.where(gate > 0, gate, F32(0.0))
    return g * g * up


def apply_rope(x: np.ndarray, rope: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """x [T, heads, hd], rope [max_seq, hd/2, 2] (cos, sin) -> rotate-half RoPE (ek_attention.h)."""
    half = x.shape[-1] // 2
    c, s = rope[positions, :, 0][:, None, :], rope[positions, :, 1][:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def attend(q: np.ndarray, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, group: int,
           inv_sqrt_hd: np.float32) -> np.ndarray:
    """q [T, H, hd], keys/values [S, KVH, hd] -> [T, H, hd]; two-pass softmax, ascending s (ek_attention.h)."""
    S = int(positions.max()) + 1
    k = np.repeat(keys[:S], group, axis=1).transpose(1, 0, 2)           # [H, S, hd]
    v = np.repeat(values[:S], group, axis=1).transpose(1, 0, 2)
    qh = q.transpose(1, 0, 2)                                             # [H, T, hd]
    dot = np.zeros((qh.shape[0], qh.shape[1], S), dtype=F32)              # [H, T, S]
    for d in range(q.shape[-1]):
        dot = dot + qh[:, :, None, d] * k[:, None, :, d]
    scores = dot * inv_sqrt_hd
    valid = np.arange(S)[None, None, :] <= positions[None, :, None]       # [1, T, S]
    m = np.max(np.where(valid, scores, -np.inf), axis=-1, keepdims=True)
    e = np.where(valid, exp_approx(scores - m), F32(0.0))
    sums = np.zeros(e.shape[:2], dtype=F32)
    acc = np.zeros(qh.shape, dtype=F32)
    for s in range(S):
        sums = sums + e[:, :, s]
        acc = acc + e[:, :, s, None] * v[:, None, s, :]
    return (acc / sums[..., None]).transpose(1, 0, 2)


ATTN_WEIGHT_MAX = 65535        # ek_attention.h kAttnWeightMax: 16-bit fixed-point value weights


def attend_int(q: np.ndarray, codes: np.ndarray, scales: np.ndarray, positions: np.ndarray, group: int,
               inv_sqrt_hd: np.float32) -> np.ndarray:
    """Integer attention on the int8 KV cache (ek_attention.h score_group_int / weigh_group_int).
    q [T, H, hd] float32; codes [2, S', KVH, hd] int8 (K, V); scales [2, S', KVH] float32 -> [T, H, hd].
    Queries absmax int8 per (token, head); score = float(int dot) * s_q * s_k * inv_sqrt_hd; float softmax;
    value weights w = min(65535, floor(e * s_v * (65535 / V) + 0.5)) with V the max s_v over the attended
    positions; out = float(sum_s w_s v_s) * (V / 65535) / sum_s e_s (sums ascending in s)."""
    T, H, hd = q.shape
    S = int(positions.max()) + 1
    qi, sq = quantize_absmax(q.reshape(T * H, hd))
    qi, sq = qi.reshape(T, H, hd).transpose(1, 0, 2), sq.reshape(T, H).T           # [H, T, hd], [H, T]
    k = np.repeat(codes[0, :S], group, axis=1).transpose(1, 0, 2).astype(np.int64)  # [H, S, hd]
    v = np.repeat(codes[1, :S], group, axis=1).transpose(1, 0, 2).astype(np.int64)
    sk = np.repeat(scales[0, :S], group, axis=1).T                                  # [H, S]
    sv = np.repeat(scales[1, :S], group, axis=1).T
    dot = np.einsum("htd,hsd->hts", qi, k)                                          # exact int64
    scores = dot.astype(F32) * sq[:, :, None] * sk[:, None, :] * inv_sqrt_hd
    valid = np.arange(S)[None, None, :] <= positions[None, :, None]                  # [1, T, S]
    m = np.max(np.where(valid, scores, -np.inf), axis=-1, keepdims=True)
    e = np.where(valid, exp_approx(scores - m), F32(0.0))
    vmax = np.max(np.where(valid, sv[:, None, :], F32(0.0)), axis=-1)                # [H, T]
    r = np.where(vmax > 0, F32(ATTN_WEIGHT_MAX) / np.where(vmax > 0, vmax, F32(1.0)), F32(0.0)).astype(F32)
    w = np.minimum(np.floor(e * sv[:, None, :] * r[:, :, None] + F32(0.5)), F32(ATTN_WEIGHT_MAX))
    w = np.where(valid, w, F32(0.0)).astype(np.int64)
    acc = np.einsum("hts,hsd->htd", w, v)                                           # exact int64 (48 bits)
    sums = np.zeros(e.shape[:2], dtype=F32)
    for s in range(S):
        sums = sums + e[:, :, s]
    back = (vmax / F32(ATTN_WEIGHT_MAX)).astype(F32)
    out = acc.astype(F32) * back[:, :, None] / sums[..., None]
    return out.transpose(1, 0, 2)


def quantize_kv_rows(x: np.ndarray, kv_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """ek_kvcache.h's int8 rows: x [T, kv_dim] -> (codes [T, kv_dim] int8, scales [T, kv_heads] float32),
    absmax per (token, kv head) as the native engine's int8 KV cache (runtime/kv_cache.py)."""
    t = x.shape[0]
    q, scale = quantize_absmax(np.asarray(x, dtype=F32).reshape(t * kv_heads, -1))
    return q.astype(np.int8).reshape(t, -1), scale.reshape(t, kv_heads)


def dequantize_kv_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float(q) * scale per (token, kv head): codes [T, kv_dim], scales [T, kv_heads] -> [T, kv_dim] float32."""
    t, kv_heads = scales.shape
    rows = codes.astype(F32).reshape(t, kv_heads, -1) * scales[:, :, None]
    return rows.reshape(t, -1).astype(F32)


def kv_layer_bytes(kv: np.ndarray, codes: np.ndarray | None, scales: np.ndarray | None) -> np.ndarray:
    """One layer's DDR buffer in ek_kvcache.h's layout: float32 [2, max_seq, kv_dim] when codes is None,
    else bytes [K codes | V codes | K scales | V scales] (codes [2, max_seq, kv_dim], scales [2, max_seq, kvh])."""
    if codes is None:
        return np.ascontiguousarray(kv, dtype=F32)
    return np.concatenate([codes.reshape(-1).view(np.uint8), scales.astype(F32).reshape(-1).view(np.uint8)])


class HlsReference:
    """The accelerator in numpy: `run(h, start_pos)` updates hidden states [T, dim] through every layer,
    keeping the KV cache [layers, 2, max_seq, kv_dim] like the device's DDR buffer (with kv_bits 8 `kv`
    holds what attention reads back, float(q) * scale, and `kv_codes` / `kv_scales` what DDR holds)."""

    def __init__(self, design: Design, trits: dict[str, np.ndarray], params: np.ndarray, rope: np.ndarray):
        self.design = design
        self.trits = {k: v.astype(np.int64) for k, v in trits.items()}   # "layers.{i}.wq" -> [out, in]
        self.params = params.reshape(design.layers, -1)
        self.rope = rope.reshape(design.max_seq, design.head_dim // 2, 2)
        self.kv = np.zeros((design.layers, 2, design.max_seq, design.kv_dim), dtype=F32)
        self.kv_codes = self.kv_scales = None
        if design.hls.kv_bits == 8:
            self.kv_codes = np.zeros(self.kv.shape, dtype=np.int8)
            self.kv_scales = np.zeros(self.kv.shape[:3] + (design.kv_heads,), dtype=F32)
        self.eps = F32(design.norm_eps)
        self.lanes = design.hls.ew_lanes

    def quantize_input(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return quantize_absmax(bitlinear_norm(x, self.lanes) if self.design.linear_input_norm else x)

    def bitlinear(self, q: np.ndarray, a_scale: np.ndarray, layer: int, name: str) -> np.ndarray:
        acc = q @ self.trits[f"layers.{layer}.{name}"].T                   # exact int64 = the table sums
        w_scale = self.params[layer, list(("wq", "wk", "wv", "wo", "w1", "w2", "w3")).index(name)]
        return acc.astype(F32) * a_scale[:, None] * w_scale

    def norm_param(self, layer: int, name: str, size: int) -> np.ndarray:
        start = self.design.param_offsets()[name]
        return self.params[layer, start:start + size]

    def attention_block(self, h: np.ndarray, layer: int, positions: np.ndarray) -> np.ndarray:
        d = self.design
        x = h if d.linear_input_norm else rms_norm(h, self.norm_param(layer, "attn_norm", d.dim), self.eps, self.lanes)
        q8, a = self.quantize_input(x)
        T = h.shape[0]
        q = self.bitlinear(q8, a, layer, "wq").reshape(T, d.heads, d.head_dim)
        k = self.bitlinear(q8, a, layer, "wk").reshape(T, d.kv_heads, d.head_dim)
        v = self.bitlinear(q8, a, layer, "wv")
        q, k = apply_rope(q, self.rope, positions), apply_rope(k, self.rope, positions)
        self.store_kv(layer, positions, k.reshape(T, -1), v)
        if d.hls.attn_int:
            codes = self.kv_codes[layer].reshape(2, d.max_seq, d.kv_heads, d.head_dim)
            o = attend_int(q, codes, self.kv_scales[layer], positions, d.heads // d.kv_heads,
                           d.inv_sqrt_head_dim).reshape(T, d.q_dim)
        else:
            keys = self.kv[layer, 0].reshape(d.max_seq, d.kv_heads, d.head_dim)
            values = self.kv[layer, 1].reshape(d.max_seq, d.kv_heads, d.head_dim)
            o = attend(q, keys, values, positions, d.heads // d.kv_heads, d.inv_sqrt_head_dim).reshape(T, d.q_dim)
        if d.sub_norms:
            o = rms_norm(o, self.norm_param(layer, "attn_sub_norm", d.q_dim), self.eps, self.lanes)
        q8, a = self.quantize_input(o)
        return h + self.bitlinear(q8, a, layer, "wo")

    def store_kv(self, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        for which, rows in ((0, k), (1, v)):
            if self.kv_codes is None:
                self.kv[layer, which, positions] = rows
                continue
            codes, scales = quantize_kv_rows(rows, self.design.kv_heads)
            self.kv_codes[layer, which, positions], self.kv_scales[layer, which, positions] = codes, scales
            self.kv[layer, which, positions] = dequantize_kv_rows(codes, scales)

    def kv_bytes(self, layer: int) -> np.ndarray:
        """Layer `layer`'s KV buffer as the device holds it (ek_kvcache.h)."""
        if self.kv_codes is None:
            return kv_layer_bytes(self.kv[layer], None, None)
        return kv_layer_bytes(self.kv[layer], self.kv_codes[layer], self.kv_scales[layer])

    def ffn_block(self, h: np.ndarray, layer: int) -> np.ndarray:
        d = self.design
        x = h if d.linear_input_norm else rms_norm(h, self.norm_param(layer, "ffn_norm", d.dim), self.eps, self.lanes)
        q8, a = self.quantize_input(x)
        gate, up = self.bitlinear(q8, a, layer, "w1"), self.bitlinear(q8, a, layer, "w3")
        act = relu2_gate(gate, up) if d.relu2 else silu_gate(gate, up)
        if d.sub_norms:
            act = rms_norm(act, self.norm_param(layer, "ffn_sub_norm", d.hidden), self.eps, self.lanes)
        q8, a = self.quantize_input(act)
        return h + self.bitlinear(q8, a, layer, "w2")

    def run(self, h: np.ndarray, start_pos: int, layer_begin: int = 0, layer_end: int | None = None) -> np.ndarray:
        """Hidden states [T, dim] float32 at positions start_pos.. through layers [begin, end)."""
        h = np.asarray(h, dtype=F32)
        positions = np.arange(start_pos, start_pos + h.shape[0])
        for layer in range(layer_begin, self.design.layers if layer_end is None else layer_end):
            h = self.attention_block(h, layer, positions)
            h = self.ffn_block(h, layer)
        return h


def lm_head_logits(h: np.ndarray, norm_weight: np.ndarray, eps: np.float32, codes: np.ndarray,
                   sub_scales: np.ndarray, row_scales: np.ndarray, vocab: int, lanes: int = 1) -> np.ndarray:
    """ek_lmhead.h on hidden states h [T, dim]: final RMSNorm, absmax int8, the exact integer row sums
    acc_r = sum_g u_g sum_i c_i q_i, then float(acc_r) * a_scale * S_r -> logits [T, vocab] float32."""
    x = rms_norm(np.asarray(h, dtype=F32), norm_weight, eps, lanes)
    q, a_scale = quantize_absmax(x)                                         # [T, dim] int64, [T]
    gs = codes.shape[1] // sub_scales.shape[1]
    qp = np.zeros((q.shape[0], codes.shape[1]), dtype=np.int64)
    qp[:, :q.shape[1]] = q
    weights = codes.astype(np.int64) * np.repeat(sub_scales.astype(np.int64), gs, axis=1)   # [rows, dim_pad]
    acc = qp @ weights.T                                                    # exact int64 = the 48-bit sums
    return (acc.astype(F32) * a_scale[:, None] * row_scales[None, :])[:, :vocab].astype(F32)


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [T, k], logits float32 [T, k]) largest first, ties to the lower id (ek_lmhead.h's insertion)."""
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return order.astype(np.int32), np.take_along_axis(logits, order, axis=-1).astype(F32)


def screened_top_k(full_logits: np.ndarray, screen_logits: np.ndarray, candidates: int,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """ek_lmhead.h's screened head: the `candidates` best rows of the 2-bit screen (ties to the lower id), their
    full-head logits, and the k best of those by (logit, lower id) -> (ids int32 [T, k], logits float32 [T, k])."""
    cand, _ = top_k(screen_logits, candidates)                             # [T, C]
    values = np.take_along_axis(full_logits, cand.astype(np.int64), axis=-1)
    order = np.lexsort((cand, -values), axis=-1)[:, :k]                    # logit first, then the lower id
    ids = np.take_along_axis(cand, order, axis=-1)
    return ids.astype(np.int32), np.take_along_axis(values, order, axis=-1).astype(F32)
