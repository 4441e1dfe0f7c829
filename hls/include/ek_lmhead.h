// edgekit HLS: the LM head on the fabric, fused with argmax / top-k (only K (id, logit) pairs per token
// return to the host; the full logits row is written only when the host asks, for evaluation).
//
// Weights are group-quantized (hls/lm_head.py writes them): per row r, codes c of kBits bits (symmetric,
// two's complement; 8, 4 or 2 bits), one uint8 sub-scale u_g per kGroup weights and one float32 row
// scale S_r in head_params. The chain per token: final RMSNorm -> per-token absmax int8 q -> exact
// integer row sums acc_r = sum_g u_g * sum_{i in g} c_i q_i (48-bit) -> logit_r = float(acc_r) * a_scale
// * S_r -> top-k insertion. kLanes rows run in parallel; each lane takes one 64-bit word (64 / kBits
// MACs with the shared activations) a cycle. hls/reference.py lm_head_logits and top_k are the twin.
//
// DDR layout: word[row_block][column][lane] like ek_tlmm.h; a row is kSubWords words of sub-scales (byte
// g at bits 8 (g % 8)) then kCodeWords words of codes (field j at bits j kBits, LSB-first).
// head_params (float32): the final RMSNorm weight [dim], then the row scales [kRowBlocks * kLanes].
//
// Screened head (C::kHeadScreen = C > 0): a 2-bit copy of the head (same layout, 32 codes a word) follows
// the full head's words in DDR and its row scales follow the full head's. Without write_logits (a decode
// step) every row is scored with the 2-bit copy into a C-cell top-C register, then only those C rows are
// rescored exactly with the full codes (their words read row by row) and the K best by (logit, lower id)
// return: the full head's top-k whenever it lies among the C (measured, not guaranteed), at about half the
// DDR bytes of the int4 head. With write_logits the full head runs on every row as before.
#pragma once
#include "ek_quant.h"
#include "ek_tlmm.h"
#include "ek_types.h"

namespace ek {

typedef ap_int<48> head_acc_t;   // a DSP48E2 accumulator; hls/lm_head.py checks the bound

template <class C, int BITS = C::kHeadBits>
struct HeadLayout {
    static constexpr int kBits = BITS, kPerWord = 64 / kBits, kGroup = C::kHeadGroup;
    static constexpr int kLanes = C::kHeadLanes, kTopK = C::kTopK, kVocab = C::kVocab;
    static constexpr int kGroups = ceil_div(C::kDim, kGroup), kPadDim = kGroups * kGroup;
    static constexpr int kSubWords = ceil_div(kGroups, 8), kCodeWords = kPadDim / kPerWord;
    static constexpr int kWordsPerGroup = kGroup / kPerWord, kRowWords = kSubWords + kCodeWords;
    static constexpr int kRowBlocks = ceil_div(kVocab, kLanes);
    static constexpr int kRowScales = C::kDim;   // offset of the row scales in head_params
    static constexpr long kWords = (long)kRowBlocks * kLanes * kRowWords;
    static_assert(kGroup % kPerWord == 0, "a sub-scale group must be whole code words");
};

// Field j of a code word as a signed BITS-bit integer.
template <int BITS>
inline int code_at(const word_t& word, int j) {
    const int v = (int)(unsigned)((word >> (j * BITS)) & (word_t)((1u << BITS) - 1u));
    return v >= (1 << (BITS - 1)) ? v - (1 << BITS) : v;
}

// Keep the K largest (value, id) seen so far, largest first; a later equal value ranks after (stable).
// A shift register of K compare-and-shift cells, unrolled: the same result as numpy's stable argsort.
template <int K>
inline void topk_insert(int ids[K], float vals[K], int id, float v) {
    for (int p = K - 1; p >= 0; --p) {
#pragma HLS UNROLL
        if (v > vals[p]) {
            const bool shift = p > 0 && v > vals[p - 1];
            vals[p] = shift ? vals[p - 1] : v;
            ids[p] = shift ? ids[p - 1] : id;
        }
    }
}

// (v, id) ranks ahead of (w, j): a larger logit, or an equal one with the lower id (j < 0: an empty cell).
inline bool ranks_ahead(float v, int id, float w, int j) { return v > w || (v == w && j >= 0 && id < j); }

// topk_insert for rows arriving in any order (the rescored candidates): ties still go to the lower id.
template <int K>
inline void topk_insert_ranked(int ids[K], float vals[K], int id, float v) {
    for (int p = K - 1; p >= 0; --p) {
#pragma HLS UNROLL
        if (ranks_ahead(v, id, vals[p], ids[p])) {
            const bool shift = p > 0 && ranks_ahead(v, id, vals[p - 1], ids[p - 1]);
            vals[p] = shift ? vals[p - 1] : v;
            ids[p] = shift ? ids[p - 1] : id;
        }
    }
}

template <int K>
inline void topk_clear(int ids[K], float vals[K]) {
    for (int k = 0; k < K; ++k) {
        ids[k] = -1;
        vals[k] = -INFINITY;
    }
}

// The exact row sum of one row read word by word (its words sit kLanes apart): the rescoring of a candidate.
template <class H>
head_acc_t row_sum(const Ports& w, int row, const act_t* q) {
    const long base = (long)(row / H::kLanes) * H::kRowWords * H::kLanes + row % H::kLanes;
    head_acc_t acc = 0;
    int dot = 0;
    for (int c = 0; c < H::kCodeWords; ++c) {
#pragma HLS PIPELINE II = 1
        const word_t word = w.word(base + (long)(H::kSubWords + c) * H::kLanes);
        for (int j = 0; j < H::kPerWord; ++j) {
#pragma HLS UNROLL
            dot += code_at<H::kBits>(word, j) * (int)q[c * H::kPerWord + j];
        }
        if (c % H::kWordsPerGroup == H::kWordsPerGroup - 1) {
            const int g = c / H::kWordsPerGroup;
            const int u = (int)(unsigned)((w.word(base + (long)(g / 8) * H::kLanes) >> ((g % 8) * 8)) & (word_t)0xFFu);
            acc += (head_acc_t)u * dot;
            dot = 0;
        }
    }
    return acc;
}

template <class C>
struct Head {
    typedef HeadLayout<C> H;
    typedef HeadLayout<C, (C::kHeadScreen > 0 ? 2 : C::kHeadBits)> S;   // the 2-bit screening copy

    // One hidden row x[dim] -> top-k (ids, logits), and the logits row when `write_logits`.
    static void run_row(const Ports& w, const float* hp, const float x[C::kDim], int* top_ids, float* top_logits,
                        float* logits, bool write_logits) {
        static float xn[C::kDim];
        static act_t q[H::kPadDim];
#pragma HLS ARRAY_PARTITION variable = q cyclic factor = H::kPerWord
        rms_norm<C::kDim>(x, hp, C::kNormEps, xn);
        const float a_scale = quantize_absmax<C::kDim>(xn, q);
        for (int i = C::kDim; i < H::kPadDim; ++i) q[i] = 0;
        int ids[H::kTopK];
        float vals[H::kTopK];
#pragma HLS ARRAY_PARTITION variable = ids complete
#pragma HLS ARRAY_PARTITION variable = vals complete
        topk_clear<H::kTopK>(ids, vals);
        if (C::kHeadScreen > 0 && !write_logits) {
            screened(w, hp, q, a_scale, ids, vals);
        } else {
            scan<H, H::kTopK>(w, hp + H::kRowScales, q, a_scale, ids, vals, logits, write_logits);
        }
        for (int k = 0; k < H::kTopK; ++k) {
            top_ids[k] = ids[k];
            top_logits[k] = vals[k];
        }
    }

    // Screen every row with the 2-bit copy, then rescore the kHeadScreen best with the full codes.
    static void screened(const Ports& w, const float* hp, const act_t* q, float a_scale, int ids[H::kTopK],
                         float vals[H::kTopK]) {
        constexpr int NC = C::kHeadScreen > 0 ? C::kHeadScreen : 1;
        int cids[NC];
        float cvals[NC];
#pragma HLS ARRAY_PARTITION variable = cids complete
#pragma HLS ARRAY_PARTITION variable = cvals complete
        topk_clear<NC>(cids, cvals);
        scan<S, NC>(w.at(8 * H::kWords), hp + H::kRowScales + H::kRowBlocks * H::kLanes, q, a_scale, cids, cvals,
                    nullptr, false);
        for (int k = 0; k < NC; ++k) {
            if (cids[k] < 0) continue;
            EK_COUNT(EK_COUNTER_HEAD, H::kCodeWords);
            const float v = (float)row_sum<H>(w, cids[k], q).to_int64() * a_scale * hp[H::kRowScales + cids[k]];
            topk_insert_ranked<H::kTopK>(ids, vals, cids[k], v);
        }
    }

    // Every row of layout L (words w, row scales rs) -> the K best into (ids, vals), logits when asked.
    template <class L, int K>
    static void scan(const Ports& w, const float* rs, const act_t* q, float a_scale, int ids[K], float vals[K],
                     float* logits, bool write_logits) {
        static word_t tiles[2][L::kRowWords * L::kLanes];
#pragma HLS BIND_STORAGE variable = tiles type = ram_2p impl = EK_TILE_STORAGE
        load_row_block<L::kRowWords, L::kLanes>(w, 0, tiles[0]);
        for (int rb = 0; rb < L::kRowBlocks; ++rb) {
            if (rb + 1 < L::kRowBlocks) load_row_block<L::kRowWords, L::kLanes>(w, rb + 1, tiles[(rb + 1) & 1]);
            const word_t* tile = tiles[rb & 1];
            head_acc_t acc[L::kLanes];
            int dot[L::kLanes];
#pragma HLS ARRAY_PARTITION variable = acc complete
#pragma HLS ARRAY_PARTITION variable = dot complete
            for (int l = 0; l < L::kLanes; ++l) {
                acc[l] = 0;
                dot[l] = 0;
            }
            EK_COUNT(EK_COUNTER_HEAD, L::kCodeWords);       // one code word of every lane a cycle
            for (int c = 0; c < L::kCodeWords; ++c) {
#pragma HLS PIPELINE II = 1
                const int g = c / L::kWordsPerGroup;
                for (int l = 0; l < L::kLanes; ++l) {
#pragma HLS UNROLL
                    const word_t word = tile[(L::kSubWords + c) * L::kLanes + l];
                    int sum = 0;
                    for (int j = 0; j < L::kPerWord; ++j) {
#pragma HLS UNROLL
                        sum += code_at<L::kBits>(word, j) * (int)q[c * L::kPerWord + j];
                    }
                    dot[l] += sum;
                    if (c % L::kWordsPerGroup == L::kWordsPerGroup - 1) {   // group done: times its sub-scale
                        const int u = (int)(unsigned)((tile[(g / 8) * L::kLanes + l] >> ((g % 8) * 8)) & (word_t)0xFFu);
                        acc[l] += (head_acc_t)u * dot[l];
                        dot[l] = 0;
                    }
                }
            }
            for (int l = 0; l < L::kLanes; ++l) {
                const int row = rb * L::kLanes + l;
                if (row < L::kVocab) {
                    const float v = (float)acc[l].to_int64() * a_scale * rs[row];
                    if (write_logits) logits[row] = v;
                    topk_insert<K>(ids, vals, row, v);
                }
            }
        }
    }
};

}  // namespace ek
