// edgekit HLS: rotate-half RoPE and causal attention over the DDR KV cache.
//
// KV cache in DDR: one layer's buffer in the layout of ek_kvcache.h (float32 or int8 with a scale per token
// and kv head); float attention reads it as float32 rows through KV::stream_block, integer attention
// (kAttnInt, int8 cache only) reads the int8 codes and scales as they are.
// RoPE table (host-computed, float32): rope[pos][head_dim / 2][2] = (cos, sin) of pos * inv_freq.
// Softmax is two-pass per (token, head): scores for s <= pos, their max m, then
// sum_s e^(score_s - m) and sum_s e^(score_s - m) v_s in ascending s; the output is their quotient.
// Key blocks of KB positions are read once per query tile and blocks past the tile's last position are
// skipped (block-wise causal prefill); decode is the same loop with a one-token tile streaming the cache.
#pragma once
#include "ek_kvcache.h"
#include "ek_math.h"
#include "ek_quant.h"
#include "ek_stream.h"
#include "ek_types.h"

#ifndef EK_ATTN_MACS
#define EK_ATTN_MACS 1
#endif
#ifndef EK_ATTN_HEADS
#define EK_ATTN_HEADS 1   // query heads of a kv group in parallel: attn_macs beyond head_dim (ek_config.h)
#endif

namespace ek {

// Rotate-half RoPE of one head vector x[HD] in place: pairs (i, i + HD/2), as in HF Llama.
template <int HD>
void apply_rope(float x[HD], const float* rope_row) {
    for (int i = 0; i < HD / 2; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
        const float c = rope_row[2 * i], s = rope_row[2 * i + 1];
        const float x1 = x[i], x2 = x[i + HD / 2];
        x[i] = x1 * c - x2 * s;
        x[i + HD / 2] = x2 * c + x1 * s;
    }
}

// Keys in block b of a tile whose last query sits at `last` (the last block is cut at `last`).
template <int KB>
inline int block_count(int b, int last) { return (b * KB + KB <= last + 1) ? KB : last + 1 - b * KB; }

// The GQ = H / KVH query heads of kv head kvh share every K and V row: each row is read from DDR once per
// tile and used by all GQ x n_tok queries (score slot t * GQ + g is token t, head kvh * GQ + g).

// Pass 1, float: scores = (q_t . k_s) / sqrt(HD) for s <= p0 + t, and their max per slot.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void score_group(const float q[TT][H * HD], int n_tok, int p0, int kvh, const Ports& kv, float inv_sqrt_hd,
                 float scores[TT * (H / KVH)][MAXS], float maxs[TT * (H / KVH)]) {
    constexpr int GQ = H / KVH;
    const int last = p0 + n_tok - 1;
    for (int i = 0; i < n_tok * GQ; ++i) maxs[i] = -INFINITY;
    for (int b = 0; b < ceil_div(last + 1, KB); ++b) {   // blocks past `last` are masked for the whole tile
        const int s0 = b * KB, count = block_count<KB>(b, last);
        stream<float, HD> keys;
        KV::stream_block(kv, 0, s0, count, kvh, keys);
        for (int s = 0; s < count; ++s) {
            float key[HD];
            for (int d = 0; d < HD; ++d) key[d] = keys.read();
            for (int t = 0; t < n_tok; ++t) {
                if (s0 + s > p0 + t) continue;             // causal mask inside the diagonal block
                for (int g = 0; g < GQ; ++g) {
#pragma HLS UNROLL factor = EK_ATTN_HEADS
                    const int h = kvh * GQ + g, slot = t * GQ + g;
                    EK_COUNT(EK_COUNTER_ATTN_MACS, 2 * HD);    // QK here, PV in pass 2
                    float dot = 0.0f;
                    for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                        dot += q[t][h * HD + d] * key[d];      // in order: the numpy twin sums the same way
                    }
                    scores[slot][s0 + s] = dot * inv_sqrt_hd;
                    maxs[slot] = scores[slot][s0 + s] > maxs[slot] ? scores[slot][s0 + s] : maxs[slot];
                }
            }
        }
    }
}

// Pass 2, float: out = sum_s e^(score - max) v_s / sum_s e^(score - max), ascending s.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void weigh_group(const float scores[TT * (H / KVH)][MAXS], const float maxs[TT * (H / KVH)], int n_tok, int p0,
                 int kvh, const Ports& kv, float out[TT][H * HD]) {
    constexpr int GQ = H / KVH;
    const int last = p0 + n_tok - 1;
    float sums[TT * GQ], acc[TT * GQ][HD];
    for (int i = 0; i < n_tok * GQ; ++i) {
        sums[i] = 0.0f;
        for (int d = 0; d < HD; ++d) acc[i][d] = 0.0f;
    }
    for (int b = 0; b < ceil_div(last + 1, KB); ++b) {
        const int s0 = b * KB, count = block_count<KB>(b, last);
        stream<float, HD> values;
        KV::stream_block(kv, 1, s0, count, kvh, values);
        for (int s = 0; s < count; ++s) {
            float value[HD];
            for (int d = 0; d < HD; ++d) value[d] = values.read();
            for (int t = 0; t < n_tok; ++t) {
                if (s0 + s > p0 + t) continue;
                for (int g = 0; g < GQ; ++g) {
#pragma HLS UNROLL factor = EK_ATTN_HEADS
                    const int slot = t * GQ + g;
                    const float e = exp_approx(scores[slot][s0 + s] - maxs[slot]);
                    sums[slot] += e;
                    for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                        acc[slot][d] += e * value[d];
                    }
                }
            }
        }
    }
    for (int t = 0; t < n_tok; ++t)
        for (int g = 0; g < GQ; ++g)
            for (int d = 0; d < HD; ++d) out[t][(kvh * GQ + g) * HD + d] = acc[t * GQ + g][d] / sums[t * GQ + g];
}

// Integer attention on the int8 KV codes (C::kAttnInt; hls/reference.py attend_int is the twin):
//   the query row of each head is absmax-quantized: q_i int8, s_q (ek_quant.h quantize_absmax);
//   score_s = float(sum_d q_i[d] k_s[d]) * s_q * s_k[s] * (1 / sqrt(HD))   (int8 x int8 -> int32, scales after);
//   softmax as the float path (max, our exp, ascending float sums);
//   the value weights e_s * s_v[s] become 16-bit fixed point against V = max of s_v over the attended
//   positions (known after pass 1): w_s = min(65535, floor(e_s * s_v[s] * (65535 / V) + 0.5));
//   acc[d] = sum_s w_s v_s[d] (16 x 8 bits -> 48-bit, a DSP48E2 accumulator), out = float(acc) * (V / 65535) / sum.
typedef ap_int<48> attn_acc_t;
constexpr int kAttnWeightMax = 65535;

template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void score_group_int(const float q[TT][H * HD], int n_tok, int p0, int kvh, const Ports& kv, float inv_sqrt_hd,
                     float scores[TT * (H / KVH)][MAXS], float maxs[TT * (H / KVH)], float vmax[TT]) {
    constexpr int GQ = H / KVH;
    const int last = p0 + n_tok - 1;
    act_t qi[TT * GQ][HD];
    float sq[TT * GQ];
    for (int t = 0; t < n_tok; ++t) {
        vmax[t] = 0.0f;
        for (int g = 0; g < GQ; ++g) {
            sq[t * GQ + g] = quantize_absmax<HD>(&q[t][(kvh * GQ + g) * HD], qi[t * GQ + g]);
            maxs[t * GQ + g] = -INFINITY;
        }
    }
    for (int b = 0; b < ceil_div(last + 1, KB); ++b) {
        const int s0 = b * KB, count = block_count<KB>(b, last);
        for (int s = 0; s < count; ++s) {
            const long row = (long)(s0 + s) * KVH + kvh;
            signed char key[HD];
            const float sk = KV::read_codes(kv, 0, row, [&](long d, ap_uint<8> bits) { key[d] = (signed char)(int)bits.to_uint(); });
            const float sv = KV::load_scale(kv, 1, row);
            for (int t = 0; t < n_tok; ++t) {
                if (s0 + s > p0 + t) continue;
                vmax[t] = sv > vmax[t] ? sv : vmax[t];
                for (int g = 0; g < GQ; ++g) {
#pragma HLS UNROLL factor = EK_ATTN_HEADS
                    const int slot = t * GQ + g;
                    EK_COUNT(EK_COUNTER_ATTN_MACS, 2 * HD);
                    int dot = 0;
                    for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                        dot += (int)qi[slot][d] * (int)key[d];   // exact: any order
                    }
                    scores[slot][s0 + s] = (float)dot * sq[slot] * sk * inv_sqrt_hd;
                    maxs[slot] = scores[slot][s0 + s] > maxs[slot] ? scores[slot][s0 + s] : maxs[slot];
                }
            }
        }
    }
}

template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void weigh_group_int(const float scores[TT * (H / KVH)][MAXS], const float maxs[TT * (H / KVH)], const float vmax[TT],
                     int n_tok, int p0, int kvh, const Ports& kv, float out[TT][H * HD]) {
    constexpr int GQ = H / KVH;
    const int last = p0 + n_tok - 1;
    float sums[TT * GQ], r[TT];
    attn_acc_t acc[TT * GQ][HD];
    for (int t = 0; t < n_tok; ++t) r[t] = vmax[t] > 0.0f ? (float)kAttnWeightMax / vmax[t] : 0.0f;
    for (int i = 0; i < n_tok * GQ; ++i) {
        sums[i] = 0.0f;
        for (int d = 0; d < HD; ++d) acc[i][d] = 0;
    }
    for (int b = 0; b < ceil_div(last + 1, KB); ++b) {
        const int s0 = b * KB, count = block_count<KB>(b, last);
        for (int s = 0; s < count; ++s) {
            const long row = (long)(s0 + s) * KVH + kvh;
            signed char value[HD];
            const float sv = KV::read_codes(kv, 1, row, [&](long d, ap_uint<8> bits) { value[d] = (signed char)(int)bits.to_uint(); });
            for (int t = 0; t < n_tok; ++t) {
                if (s0 + s > p0 + t) continue;
                for (int g = 0; g < GQ; ++g) {
#pragma HLS UNROLL factor = EK_ATTN_HEADS
                    const int slot = t * GQ + g;
                    const float e = exp_approx(scores[slot][s0 + s] - maxs[slot]);
                    sums[slot] += e;
                    const float wf = std::floor(e * sv * r[t] + 0.5f);
                    const int w = wf > (float)kAttnWeightMax ? kAttnWeightMax : (int)wf;
                    for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                        acc[slot][d] += (attn_acc_t)(w * (int)value[d]);
                    }
                }
            }
        }
    }
    for (int t = 0; t < n_tok; ++t) {
        const float back = vmax[t] / (float)kAttnWeightMax;
        for (int g = 0; g < GQ; ++g)
            for (int d = 0; d < HD; ++d)
                out[t][(kvh * GQ + g) * HD + d] = (float)acc[t * GQ + g][d].to_int64() * back / sums[t * GQ + g];
    }
}

// out[t][h*HD..] for a tile of n_tok queries q[TT][H*HD] at positions p0 + t over one layer's cache kv,
// one kv head (and its GQ query heads) at a time.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB, bool INT = false>
void attend_tile(const float q[TT][H * HD], int n_tok, int p0, const Ports& kv, float inv_sqrt_hd,
                 float out[TT][H * HD]) {
    constexpr int GQ = H / KVH;
    static float scores[TT * GQ][MAXS];
    float maxs[TT * GQ], vmax[TT];
    for (int kvh = 0; kvh < KVH; ++kvh) {
        if constexpr (INT) {   // the int8 cache's codes: KV is KvCache<.., 8>
            score_group_int<KV, H, KVH, HD, TT, MAXS, KB>(q, n_tok, p0, kvh, kv, inv_sqrt_hd, scores, maxs, vmax);
            weigh_group_int<KV, H, KVH, HD, TT, MAXS, KB>(scores, maxs, vmax, n_tok, p0, kvh, kv, out);
        } else {
            score_group<KV, H, KVH, HD, TT, MAXS, KB>(q, n_tok, p0, kvh, kv, inv_sqrt_hd, scores, maxs);
            weigh_group<KV, H, KVH, HD, TT, MAXS, KB>(scores, maxs, n_tok, p0, kvh, kv, out);
        }
    }
}

}  // namespace ek
