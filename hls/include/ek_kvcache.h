// edgekit HLS: the KV cache in DDR, float32 or int8 (EkConfig::kKvBits), one layer at a time.
//
// float32 (kKvBits = 32): kv[0 = K, 1 = V][pos][kv_head][head_dim] floats.
// int8 (kKvBits = 8): bytes [K codes][V codes][K scales][V scales]: codes [pos][kv_head][head_dim] int8,
// scales [pos][kv_head] float32. Each (token, kv head) row of head_dim values is quantized symmetric absmax
// (scale = max|x| / 127, q = round_half_away(x / scale)) and read back as float(q) * scale: the native
// engine's int8 KV cache (edgekit/runtime/kv_cache.py KVCacheInt8) does the same float32 operations, so the
// two agree value for value. A position costs 2 * kv_dim + 8 * kv_heads bytes instead of 8 * kv_dim.
#pragma once
#include <cstring>

#include "ek_quant.h"
#include "ek_stream.h"
#include "ek_types.h"

namespace ek {

template <int KVH, int HD, int MAXS, int BITS>
struct KvCache;

template <int KVH, int HD, int MAXS>
struct KvCache<KVH, HD, MAXS, 32> {
    typedef float word_t;
    static constexpr long kPlane = (long)MAXS * KVH * HD, kLayer = 2 * kPlane;

    // Store one token's row x[KVH * HD] of plane `which` (0 = K, 1 = V) at position pos.
    static void store_row(word_t* kv, int which, int pos, const float* x) {
        for (int i = 0; i < KVH * HD; ++i) {
#pragma HLS PIPELINE II = 1
            kv[which * kPlane + (long)pos * KVH * HD + i] = x[i];
        }
    }

    // Stream `count` rows of kv head kvh from position s0 of plane `which` into `out`.
    static void stream_block(const word_t* kv, int which, int s0, int count, int kvh, stream<float, HD>& out) {
        for (int s = 0; s < count; ++s)
            for (int d = 0; d < HD; ++d) {
#pragma HLS PIPELINE II = 1
                out.write(kv[which * kPlane + ((long)(s0 + s) * KVH + kvh) * HD + d]);
            }
    }
};

template <int KVH, int HD, int MAXS>
struct KvCache<KVH, HD, MAXS, 8> {
    typedef signed char word_t;
    static constexpr long kPlane = (long)MAXS * KVH * HD, kScales = 2 * kPlane;
    static constexpr long kScalePlane = (long)MAXS * KVH * 4, kLayer = kScales + 2 * kScalePlane;

    static float load_scale(const word_t* kv, int which, long row) {
        float scale;
        std::memcpy(&scale, kv + kScales + which * kScalePlane + 4 * row, 4);
        return scale;
    }

    static void store_row(word_t* kv, int which, int pos, const float* x) {
        for (int h = 0; h < KVH; ++h) {
            act_t q[HD];
            const float scale = quantize_absmax<HD>(x + h * HD, q);
            const long row = (long)pos * KVH + h;
            for (int d = 0; d < HD; ++d) {
#pragma HLS PIPELINE II = 1
                kv[which * kPlane + row * HD + d] = (signed char)(int)q[d];
            }
            std::memcpy(kv + kScales + which * kScalePlane + 4 * row, &scale, 4);
        }
    }

    static void stream_block(const word_t* kv, int which, int s0, int count, int kvh, stream<float, HD>& out) {
        for (int s = 0; s < count; ++s) {
            const long row = (long)(s0 + s) * KVH + kvh;
            const float scale = load_scale(kv, which, row);
            for (int d = 0; d < HD; ++d) {
#pragma HLS PIPELINE II = 1
                out.write((float)kv[which * kPlane + row * HD + d] * scale);
            }
        }
    }
};

}  // namespace ek
