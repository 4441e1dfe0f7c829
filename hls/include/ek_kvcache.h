// edgekit HLS: the KV cache in DDR, float32 or int8 (EkConfig::kKvBits), one layer at a time.
//
// float32 (kKvBits = 32): kv[0 = K, 1 = V][pos][kv_head][head_dim] floats.
// int8 (kKvBits = 8): bytes [K codes][V codes][K scales][V scales]: codes [pos][kv_head][head_dim] int8,
// scales [pos][kv_head] float32. Each (token, kv head) row of head_dim values is quantized symmetric absmax
// (scale = max|x| / 127, q = round_half_away(x / scale)) and read back as float(q) * scale: the native
// engine's int8 KV cache (edgekit/runtime/kv_cache.py KVCacheInt8) does the same float32 operations, so the
// two agree value for value. A position costs 2 * kv_dim + 8 * kv_heads bytes instead of 8 * kv_dim.
// The buffer is striped over the four wide ports (ek_axi.h): rows are read a 64-byte line a cycle.
#pragma once
#include "ek_axi.h"
#include "ek_quant.h"
#include "ek_stream.h"
#include "ek_types.h"

namespace ek {

template <int KVH, int HD, int MAXS, int BITS>
struct KvCache;

template <int KVH, int HD, int MAXS>
struct KvCache<KVH, HD, MAXS, 32> {
    typedef float word_t;   // the element (a striped buffer of floats)
    static constexpr long kPlane = (long)MAXS * KVH * HD, kLayer = 2 * kPlane;

    // Store one token's row x[KVH * HD] of plane `which` (0 = K, 1 = V) at position pos.
    static void store_row(const Ports& kv, int which, int pos, const float* x) {
        for (int i = 0; i < KVH * HD; ++i) {
#pragma HLS PIPELINE II = 1
            kv.set_float(which * kPlane + (long)pos * KVH * HD + i, x[i]);
        }
    }

    // Stream `count` rows of kv head kvh from position s0 of plane `which` into `out` (16 floats a line).
    static void stream_block(const Ports& kv, int which, int s0, int count, int kvh, stream<float, HD>& out) {
        for (int s = 0; s < count; ++s)
            read_span<4>(kv, which * kPlane + ((long)(s0 + s) * KVH + kvh) * HD, HD,
                         [&](long, ap_uint<32> bits) { out.write(float_of((unsigned)bits.to_uint())); });
    }
};

template <int KVH, int HD, int MAXS>
struct KvCache<KVH, HD, MAXS, 8> {
    typedef signed char word_t;
    static constexpr long kPlane = (long)MAXS * KVH * HD, kScales = 2 * kPlane;
    static constexpr long kScalePlane = (long)MAXS * KVH * 4, kLayer = kScales + 2 * kScalePlane;

    static float load_scale(const Ports& kv, int which, long row) {
        return float_of((unsigned)kv.get<4>(kScales + which * kScalePlane + 4 * row).to_uint());
    }

    static void store_row(const Ports& kv, int which, int pos, const float* x) {
        for (int h = 0; h < KVH; ++h) {
            act_t q[HD];
            const float scale = quantize_absmax<HD>(x + h * HD, q);
            const long row = (long)pos * KVH + h;
            for (int d = 0; d < HD; ++d) {
#pragma HLS PIPELINE II = 1
                kv.set_byte(which * kPlane + row * HD + d, (signed char)(int)q[d]);
            }
            unsigned bits;
            std::memcpy(&bits, &scale, 4);
            kv.set<4>(kScales + which * kScalePlane + 4 * row, ap_uint<32>(bits));
        }
    }

    // The int8 codes of one row (64 a line) and its scale.
    template <class VISIT>
    static float read_codes(const Ports& kv, int which, long row, VISIT visit) {
        read_span<1>(kv, which * kPlane + row * HD, HD, visit);
        return load_scale(kv, which, row);
    }

    static void stream_block(const Ports& kv, int which, int s0, int count, int kvh, stream<float, HD>& out) {
        for (int s = 0; s < count; ++s) {
            const long row = (long)(s0 + s) * KVH + kvh;
            signed char codes[HD];
            const float scale = read_codes(kv, which, row, [&](long d, ap_uint<8> bits) {
                codes[d] = (signed char)(int)bits.to_uint();
            });
            for (int d = 0; d < HD; ++d) {
#pragma HLS PIPELINE II = 1
                out.write((float)codes[d] * scale);
            }
        }
    }
};

}  // namespace ek
