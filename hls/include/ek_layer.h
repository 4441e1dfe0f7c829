// edgekit HLS: one BitNet transformer layer on a tile of tokens, and the DDR layouts it reads.
//
// Chain per block: [RMSNorm | nothing when each linear norms its own input] -> per-token absmax int8
// (with bitllama2.c's BitLinear norm when C::kLinearInputNorm) -> tables -> TLMM -> dequantize ->
// RoPE / attention or SiLU-gated / squared-ReLU FFN -> [BitNet sub-norm] -> ... -> residual add.
// The configuration struct C is the generated ek_config.h (the only model-specific C++).
#pragma once
#include "ek_attention.h"
#include "ek_quant.h"
#include "ek_tlmm.h"

namespace ek {

constexpr int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

// Where things are in the three DDR buffers. Matrices of a layer in the order wq wk wv wo w1 w2 w3
// (bitllama2.c's order), each in the TLMM layout (ek_tlmm.h); hls/packing.py computes the same offsets.
template <class C>
struct Layout {
    typedef TritCode<C::kGroup, C::kHalfTable, C::kBase3> Code;
    static constexpr int kD = C::kDim, kH = C::kHidden, kHd = C::kHeadDim;
    static constexpr int kQDim = C::kHeads * C::kHeadDim, kKvDim = C::kKvHeads * C::kHeadDim;
    template <int OUT, int IN>
    static constexpr long words() { return MatrixShape<Code, C::kLanes, OUT, IN>::kWords; }
    static constexpr long kWq = 0;
    static constexpr long kWk = kWq + words<kQDim, kD>();
    static constexpr long kWv = kWk + words<kKvDim, kD>();
    static constexpr long kWo = kWv + words<kKvDim, kD>();
    static constexpr long kW1 = kWo + words<kD, kQDim>();
    static constexpr long kW2 = kW1 + words<kH, kD>();
    static constexpr long kW3 = kW2 + words<kD, kH>();
    static constexpr long kLayerWords = kW3 + words<kH, kD>();
    // Per-layer float parameters: 7 weight scales (+1 pad), attn_norm, ffn_norm, attn/ffn sub-norms.
    static constexpr int kAttnNorm = 8, kFfnNorm = kAttnNorm + kD, kAttnSubNorm = kFfnNorm + kD;
    static constexpr int kFfnSubNorm = kAttnSubNorm + kQDim, kLayerParams = kFfnSubNorm + kH;
    typedef KvCache<C::kKvHeads, C::kHeadDim, C::kMaxSeq, C::kKvBits> Kv;   // float32 or int8 (ek_kvcache.h)
    typedef typename Kv::word_t kv_t;                                      // the element: float or signed char
    static constexpr long kKvLayer = Kv::kLayer;                           // kv_t elements per layer
    static constexpr int kMaxGroups = ceil_div(max3(kD, kQDim, kH), C::kGroup);
};

template <class C>
struct Engine {
    typedef Layout<C> L;
    static constexpr int TT = C::kTileTokens, G = C::kGroup, E = L::Code::kEntries;
    static constexpr bool HALF = C::kHalfTable;
    typedef entry_t Tables[TT][L::kMaxGroups][E];

    // Quantize each token row of x and build its tables; a_scale[t] = max|x_t| / 127.
    template <int IN>
    static void prepare_input(const float x[TT][IN], int n_tok, float a_scale[TT], Tables& tables) {
        static act_t q[TT][IN];
        for (int t = 0; t < n_tok; ++t) a_scale[t] = quantize_input<IN, C::kLinearInputNorm>(x[t], q[t]);
        build_tables<G, HALF, TT, IN, L::kMaxGroups>(q, n_tok, tables);
    }

    template <int OUT, int IN>
    static void bitlinear(const Ports& w, const Tables& tables, int n_tok, const float a_scale[TT],
                          float w_scale, float y[TT][OUT]) {
#pragma HLS DATAFLOW
        stream<acc_t, C::kLanes * TT> accs;   // TLMM -> dequantization, no [TT][OUT] accumulator buffer
        tlmm_stream<G, HALF, C::kBase3, C::kLanes, TT, OUT, IN, L::kMaxGroups>(w, tables, n_tok, accs);
        dequantize_stream<OUT, TT>(accs, n_tok, a_scale, w_scale, y);
    }

    template <int N>
    static void norm_rows(const float x[TT][N], const float* weight, int n_tok, float y[TT][N]) {
        for (int t = 0; t < n_tok; ++t) rms_norm<N>(x[t], weight, C::kNormEps, y[t]);
    }

    // A block's input: RMSNorm with `weight`, or a plain copy when bitllama2.c's BitLinear norm (applied inside
    // quantize_input) takes its place.
    static void block_input(const float h[TT][L::kD], const float* weight, int n_tok, float x[TT][L::kD]) {
        if (C::kLinearInputNorm) {
            for (int t = 0; t < n_tok; ++t)
                for (int i = 0; i < L::kD; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
                    x[t][i] = h[t][i];
                }
        } else {
            norm_rows<L::kD>(h, weight, n_tok, x);
        }
    }

    template <int N>
    static void add_rows(float h[TT][N], const float y[TT][N], int n_tok) {
        for (int t = 0; t < n_tok; ++t)
            for (int i = 0; i < N; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
                h[t][i] = h[t][i] + y[t][i];
            }
    }

    // q, k [TT][heads * HD] rotated at positions p0 + t.
    template <int HEADS>
    static void rope_rows(float x[TT][HEADS * L::kHd], const float* rope, int n_tok, int p0) {
        for (int t = 0; t < n_tok; ++t)
            for (int h = 0; h < HEADS; ++h) apply_rope<L::kHd>(&x[t][h * L::kHd], rope + (long)(p0 + t) * L::kHd);
    }

    typedef typename L::kv_t kv_t;

    static void store_kv(const float k[TT][L::kKvDim], const float v[TT][L::kKvDim], const Ports& kv, int n_tok, int p0) {
        for (int t = 0; t < n_tok; ++t) {
            L::Kv::store_row(kv, 0, p0 + t, k[t]);
            L::Kv::store_row(kv, 1, p0 + t, v[t]);
        }
    }

    static void attention_block(const Ports& w, const float* p, const float* rope, const Ports& kv, float h[TT][L::kD],
                                int n_tok, int p0) {
        static float x[TT][L::kD], q[TT][L::kQDim], k[TT][L::kKvDim], v[TT][L::kKvDim];
        static float o[TT][L::kQDim], on[TT][L::kQDim], y[TT][L::kD];
        static Tables tables;  // TT tokens x E entries read in one cycle by every lane: registers/LUTRAM
#pragma HLS ARRAY_PARTITION variable = tables complete dim = 1
#pragma HLS ARRAY_PARTITION variable = tables complete dim = 3
        float a_scale[TT];
        block_input(h, p + L::kAttnNorm, n_tok, x);
        prepare_input<L::kD>(x, n_tok, a_scale, tables);
        bitlinear<L::kQDim, L::kD>(w.at(8 * L::kWq), tables, n_tok, a_scale, p[0], q);
        bitlinear<L::kKvDim, L::kD>(w.at(8 * L::kWk), tables, n_tok, a_scale, p[1], k);
        bitlinear<L::kKvDim, L::kD>(w.at(8 * L::kWv), tables, n_tok, a_scale, p[2], v);
        rope_rows<C::kHeads>(q, rope, n_tok, p0);
        rope_rows<C::kKvHeads>(k, rope, n_tok, p0);
        store_kv(k, v, kv, n_tok, p0);
        attend_tile<typename L::Kv, C::kHeads, C::kKvHeads, L::kHd, TT, C::kMaxSeq, C::kKeyBlock, C::kAttnInt>(
            q, n_tok, p0, kv, C::kInvSqrtHeadDim, o);
        if (C::kSubNorms) norm_rows<L::kQDim>(o, p + L::kAttnSubNorm, n_tok, on);
        prepare_input<L::kQDim>(C::kSubNorms ? on : o, n_tok, a_scale, tables);
        bitlinear<L::kD, L::kQDim>(w.at(8 * L::kWo), tables, n_tok, a_scale, p[3], y);
        add_rows<L::kD>(h, y, n_tok);
    }

    static void ffn_block(const Ports& w, const float* p, float h[TT][L::kD], int n_tok) {
        static float x[TT][L::kD], gate[TT][L::kH], up[TT][L::kH], act[TT][L::kH], an[TT][L::kH], y[TT][L::kD];
        static Tables tables;
#pragma HLS ARRAY_PARTITION variable = tables complete dim = 1
#pragma HLS ARRAY_PARTITION variable = tables complete dim = 3
        float a_scale[TT];
        block_input(h, p + L::kFfnNorm, n_tok, x);
        prepare_input<L::kD>(x, n_tok, a_scale, tables);
        bitlinear<L::kH, L::kD>(w.at(8 * L::kW1), tables, n_tok, a_scale, p[4], gate);
        bitlinear<L::kH, L::kD>(w.at(8 * L::kW3), tables, n_tok, a_scale, p[6], up);
        for (int t = 0; t < n_tok; ++t)
            for (int i = 0; i < L::kH; ++i) {
#pragma HLS UNROLL factor = EK_EW_LANES
                act[t][i] = C::kRelu2 ? relu2_gate(gate[t][i], up[t][i]) : silu_gate(gate[t][i], up[t][i]);
            }
        if (C::kSubNorms) norm_rows<L::kH>(act, p + L::kFfnSubNorm, n_tok, an);
        prepare_input<L::kH>(C::kSubNorms ? an : act, n_tok, a_scale, tables);
        bitlinear<L::kD, L::kH>(w.at(8 * L::kW2), tables, n_tok, a_scale, p[5], y);
        add_rows<L::kD>(h, y, n_tok);
    }

    // One layer on tokens at positions p0 .. p0 + n_tok - 1 (n_tok <= TT); h is updated in place.
    static void run_layer_tile(const Ports& w, const float* p, const float* rope, const Ports& kv, float h[TT][L::kD],
                               int n_tok, int p0) {
        attention_block(w, p, rope, kv, h, n_tok, p0);
        ffn_block(w, p, h, n_tok);
    }
};

}  // namespace ek
