// edgekit HLS top function: AXI master ports for the weights, parameters, RoPE table, KV cache and
// hidden states, AXI-lite control for the scalars (register map: hls/ip.py, the one source the PYNQ
// driver shares). One call runs layers [layer_begin, layer_end) on n_tokens tokens from start_pos,
// tile by tile: prefill is n_tokens > 1, decode is n_tokens = 1. Then the LM head (ek_lmhead.h) runs on
// the last head_rows of those tokens: top-k ids and logits for each, and the logits rows when write_logits.
#include "ek_config.h"
#include "ek_layer.h"
#include "ek_lmhead.h"

using ek::EkConfig;
typedef ek::Engine<EkConfig> Eng;
typedef ek::Layout<EkConfig> Lay;
typedef ek::Head<EkConfig> HeadEngine;

// Only ek_top leaves the shared library built for C simulation: every design names its config EkConfig,
// so two designs loaded in one process must not share template statics (built with -fvisibility=hidden
// -fno-gnu-unique; see hls/csim.py).
#if defined(__GNUC__) && !defined(__SYNTHESIS__)
#define EK_EXPORT __attribute__((visibility("default")))
#else
#define EK_EXPORT
#endif

// The weights, the KV cache and the LM head are striped over four 128-bit AXI masters each (ek_axi.h): a line of
// 64 bytes a cycle, the bandwidth fpga/estimate.py assumes. The three share bundles gmem0..gmem3 (they never
// stream at the same time), which the block design connects to S_AXI_HP0..HP3; the small buffers go on gmem4.
#define EK_STRIPED(name, bundle) \
    _Pragma(EK_STR(HLS INTERFACE m_axi port = name offset = slave bundle = bundle max_read_burst_length = 64 \
                   max_write_burst_length = 64 num_read_outstanding = 16)) \
    _Pragma(EK_STR(HLS INTERFACE s_axilite port = name bundle = control))
#define EK_STR(x) #x
#define EK_SMALL(name) \
    _Pragma(EK_STR(HLS INTERFACE m_axi port = name offset = slave bundle = gmem4)) \
    _Pragma(EK_STR(HLS INTERFACE s_axilite port = name bundle = control))
#define EK_SCALAR(name) _Pragma(EK_STR(HLS INTERFACE s_axilite port = name bundle = control))

extern "C" EK_EXPORT void ek_top(ek::beat_t* weights, ek::beat_t* weights_1, ek::beat_t* weights_2, ek::beat_t* weights_3,
                                 const float* params, const float* rope,
                                 ek::beat_t* kv, ek::beat_t* kv_1, ek::beat_t* kv_2, ek::beat_t* kv_3, float* hbuf,
                                 ek::beat_t* head, ek::beat_t* head_1, ek::beat_t* head_2, ek::beat_t* head_3,
                                 const float* head_params, int* top_ids, float* top_logits,
                                 float* logits, int n_tokens, int start_pos, int layer_begin, int layer_end,
                                 int head_rows, int write_logits) {
    EK_STRIPED(weights, gmem0) EK_STRIPED(weights_1, gmem1) EK_STRIPED(weights_2, gmem2) EK_STRIPED(weights_3, gmem3)
    EK_STRIPED(kv, gmem0) EK_STRIPED(kv_1, gmem1) EK_STRIPED(kv_2, gmem2) EK_STRIPED(kv_3, gmem3)
    EK_STRIPED(head, gmem0) EK_STRIPED(head_1, gmem1) EK_STRIPED(head_2, gmem2) EK_STRIPED(head_3, gmem3)
    EK_SMALL(params) EK_SMALL(rope) EK_SMALL(hbuf) EK_SMALL(head_params) EK_SMALL(top_ids) EK_SMALL(top_logits)
    EK_SMALL(logits)
    EK_SCALAR(n_tokens) EK_SCALAR(start_pos) EK_SCALAR(layer_begin) EK_SCALAR(layer_end) EK_SCALAR(head_rows)
    EK_SCALAR(write_logits) EK_SCALAR(return)
    const ek::Ports wports = {weights, weights_1, weights_2, weights_3, 0};
    const ek::Ports kvports = {kv, kv_1, kv_2, kv_3, 0};
    const ek::Ports hports = {head, head_1, head_2, head_3, 0};
    // The host checks these too; hardware cannot raise, so a bad call does nothing.
    // layer_begin == layer_end is a head-only call on hbuf rows [n_tokens - head_rows, n_tokens).
    if (n_tokens < 1 || start_pos < 0 || start_pos + n_tokens > EkConfig::kMaxSeq || layer_begin < 0 ||
        layer_end > EkConfig::kLayers || layer_begin > layer_end || head_rows < 0 || head_rows > n_tokens ||
        (layer_begin == layer_end && head_rows == 0))
        return;
    EK_COUNT(ek::EK_COUNTER_CALLS, 1);
    static float h[EkConfig::kTileTokens][EkConfig::kDim];
    for (int layer = layer_begin; layer < layer_end; ++layer) {
        for (int t0 = 0; t0 < n_tokens; t0 += EkConfig::kTileTokens) {
            const int n = n_tokens - t0 < EkConfig::kTileTokens ? n_tokens - t0 : EkConfig::kTileTokens;
            for (int t = 0; t < n; ++t)
                for (int i = 0; i < EkConfig::kDim; ++i) h[t][i] = hbuf[(long)(t0 + t) * EkConfig::kDim + i];
            Eng::run_layer_tile(wports.at(8 * layer * Lay::kLayerWords), params + layer * Lay::kLayerParams, rope,
                                kvports.at((long)sizeof(Lay::kv_t) * layer * Lay::kKvLayer), h, n, start_pos + t0);
            for (int t = 0; t < n; ++t)
                for (int i = 0; i < EkConfig::kDim; ++i) hbuf[(long)(t0 + t) * EkConfig::kDim + i] = h[t][i];
        }
    }
    static float x[EkConfig::kDim];
    for (int r = 0; r < head_rows; ++r) {
        const long row = n_tokens - head_rows + r;
        for (int i = 0; i < EkConfig::kDim; ++i) x[i] = hbuf[row * EkConfig::kDim + i];
        HeadEngine::run_row(hports, head_params, x, top_ids + (long)r * EkConfig::kTopK,
                            top_logits + (long)r * EkConfig::kTopK, logits + (long)r * EkConfig::kVocab, write_logits != 0);
    }
}

// C simulation only: the work counters (ek_types.h), read by the csim device through ctypes.
#ifndef __SYNTHESIS__
extern "C" EK_EXPORT long* ek_counters() { return ek::counters(); }
#endif
