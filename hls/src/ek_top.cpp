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

extern "C" EK_EXPORT void ek_top(const ek::word_t* weights, const float* params, const float* rope, Lay::kv_t* kv, float* hbuf,
                                 const ek::word_t* head, const float* head_params, int* top_ids, float* top_logits,
                                 float* logits, int n_tokens, int start_pos, int layer_begin, int layer_end,
                                 int head_rows, int write_logits) {
#pragma HLS INTERFACE m_axi port = weights offset = slave bundle = gmem0 max_read_burst_length = 256
// The head's weights share the TLMM weights' port: the two never stream at the same time.
#pragma HLS INTERFACE m_axi port = head offset = slave bundle = gmem0 max_read_burst_length = 256
#pragma HLS INTERFACE m_axi port = head_params offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = top_ids offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = top_logits offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = logits offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = params offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = rope offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = kv offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = hbuf offset = slave bundle = gmem1
#pragma HLS INTERFACE s_axilite port = weights bundle = control
#pragma HLS INTERFACE s_axilite port = params bundle = control
#pragma HLS INTERFACE s_axilite port = rope bundle = control
#pragma HLS INTERFACE s_axilite port = kv bundle = control
#pragma HLS INTERFACE s_axilite port = hbuf bundle = control
#pragma HLS INTERFACE s_axilite port = head bundle = control
#pragma HLS INTERFACE s_axilite port = head_params bundle = control
#pragma HLS INTERFACE s_axilite port = top_ids bundle = control
#pragma HLS INTERFACE s_axilite port = top_logits bundle = control
#pragma HLS INTERFACE s_axilite port = logits bundle = control
#pragma HLS INTERFACE s_axilite port = n_tokens bundle = control
#pragma HLS INTERFACE s_axilite port = start_pos bundle = control
#pragma HLS INTERFACE s_axilite port = layer_begin bundle = control
#pragma HLS INTERFACE s_axilite port = layer_end bundle = control
#pragma HLS INTERFACE s_axilite port = head_rows bundle = control
#pragma HLS INTERFACE s_axilite port = write_logits bundle = control
#pragma HLS INTERFACE s_axilite port = return bundle = control
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
            Eng::run_layer_tile(weights + layer * Lay::kLayerWords, params + layer * Lay::kLayerParams, rope,
                                kv + layer * Lay::kKvLayer, h, n, start_pos + t0);
            for (int t = 0; t < n; ++t)
                for (int i = 0; i < EkConfig::kDim; ++i) hbuf[(long)(t0 + t) * EkConfig::kDim + i] = h[t][i];
        }
    }
    static float x[EkConfig::kDim];
    for (int r = 0; r < head_rows; ++r) {
        const long row = n_tokens - head_rows + r;
        for (int i = 0; i < EkConfig::kDim; ++i) x[i] = hbuf[row * EkConfig::kDim + i];
        HeadEngine::run_row(head, head_params, x, top_ids + (long)r * EkConfig::kTopK,
                            top_logits + (long)r * EkConfig::kTopK, logits + (long)r * EkConfig::kVocab, write_logits != 0);
    }
}

// C simulation only: the work counters (ek_types.h), read by the csim device through ctypes.
#ifndef __SYNTHESIS__
extern "C" EK_EXPORT long* ek_counters() { return ek::counters(); }
#endif
