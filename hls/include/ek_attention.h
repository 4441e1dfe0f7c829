// edgekit HLS: rotate-half RoPE and causal attention over the DDR KV cache.
//
// KV cache in DDR: one layer's buffer in the layout of ek_kvcache.h (float32 or int8 with a scale per token
// and kv head); attention reads it as float32 rows through KV::stream_block.
// RoPE table (host-computed, float32): rope[pos][head_dim / 2][2] = (cos, sin) of pos * inv_freq.
// Softmax is two-pass per (token, head): scores for s <= pos, their max m, then
// sum_s e^(score_s - m) and sum_s e^(score_s - m) v_s in ascending s; the output is their quotient.
// Key blocks of KB positions are read once per query tile and blocks past the tile's last position are
// skipped (block-wise causal prefill); decode is the same loop with a one-token tile streaming the cache.
#pragma once
#include "ek_kvcache.h"
#include "ek_math.h"
#include "ek_stream.h"
#include "ek_types.h"

#ifndef EK_ATTN_MACS
#define EK_ATTN_MACS 1
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

// Pass 1 for head h: scores[t][s] = (q_t . k_s) / sqrt(HD) for s <= p0 + t, and their max per token.
// Each key block is read once and used by every query of the tile.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void score_head(const float q[TT][H * HD], int n_tok, int p0, int h, const typename KV::word_t* kv, float inv_sqrt_hd,
                float scores[TT][MAXS], float maxs[TT]) {
    const int last = p0 + n_tok - 1, kvh = h / (H / KVH);
    for (int t = 0; t < n_tok; ++t) maxs[t] = -INFINITY;
    for (int b = 0; b < ceil_div(last + 1, KB); ++b) {   // blocks past `last` are masked for the whole tile
        const int s0 = b * KB, count = block_count<KB>(b, last);
        stream<float, HD> keys;
        KV::stream_block(kv, 0, s0, count, kvh, keys);
        for (int s = 0; s < count; ++s) {
            float key[HD];
            for (int d = 0; d < HD; ++d) key[d] = keys.read();
            for (int t = 0; t < n_tok; ++t) {
                if (s0 + s > p0 + t) continue;             // causal mask inside the diagonal block
                EK_COUNT(EK_COUNTER_ATTN_MACS, 2 * HD);    // QK here, PV in pass 2
                float dot = 0.0f;
                for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                    dot += q[t][h * HD + d] * key[d];      // in order: the numpy twin sums the same way
                }
                scores[t][s0 + s] = dot * inv_sqrt_hd;
                maxs[t] = scores[t][s0 + s] > maxs[t] ? scores[t][s0 + s] : maxs[t];
            }
        }
    }
}

// Pass 2 for head h: out_t = sum_s e^(score - max) v_s / sum_s e^(score - max), ascending s.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void weigh_values(const float scores[TT][MAXS], const float maxs[TT], int n_tok, int p0, int h,
                  const typename KV::word_t* kv, float out[TT][H * HD]) {
    const int last = p0 + n_tok - 1, kvh = h / (H / KVH);
    float sums[TT], acc[TT][HD];
    for (int t = 0; t < n_tok; ++t) {
        sums[t] = 0.0f;
        for (int d = 0; d < HD; ++d) acc[t][d] = 0.0f;
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
                const float e = exp_approx(scores[t][s0 + s] - maxs[t]);
                sums[t] += e;
                for (int d = 0; d < HD; ++d) {
#pragma HLS UNROLL factor = EK_ATTN_MACS
                    acc[t][d] += e * value[d];
                }
            }
        }
    }
    for (int t = 0; t < n_tok; ++t)
        for (int d = 0; d < HD; ++d) out[t][h * HD + d] = acc[t][d] / sums[t];
}

// out[t][h*HD..] for a tile of n_tok queries q[TT][H*HD] at positions p0 + t over one layer's cache kv.
template <class KV, int H, int KVH, int HD, int TT, int MAXS, int KB>
void attend_tile(const float q[TT][H * HD], int n_tok, int p0, const typename KV::word_t* kv, float inv_sqrt_hd,
                 float out[TT][H * HD]) {
    static float scores[TT][MAXS];
    float maxs[TT];
    for (int h = 0; h < H; ++h) {
        score_head<KV, H, KVH, HD, TT, MAXS, KB>(q, n_tok, p0, h, kv, inv_sqrt_hd, scores, maxs);
        weigh_values<KV, H, KVH, HD, TT, MAXS, KB>(scores, maxs, n_tok, p0, h, kv, out);
    }
}

}  // namespace ek
