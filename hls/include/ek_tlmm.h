// edgekit HLS: the TLMM engine (table-lookup ternary matmul, TeLLMe / T-MAC lineage).
//
// Offline, each weight row is cut into groups of G trits t_0..t_{G-1}; a group's full index is
// sum_j (t_j + 1) 3^j in [0, 3^G). With HALF tables (mirror consolidation) a group and its negation share
// one entry: indices above the all-zero group Z = (3^G - 1) / 2 are stored as sign 1 and 3^G - 1 - index,
// so the table has Z + 1 = (3^G + 1) / 2 entries. A code is [sign | index], kBits wide, packed LSB-first
// into 64-bit words, kPerWord codes a word (hls/packing.py writes the same layout). With BASE3 the DDR word
// is instead 8 bytes of 5 base-3 digits (digit = trit + 1, byte = sum_k d_k 3^k: 1.6 bits a trit, TQ1_0's
// density), 40 / G groups a word in row order; load_row_block decodes each word into those groups' codes
// as it copies a row block on chip (one decoder on the load path, not one per lane), so the on-chip tile
// holds kTileBits = kPerWord x kBits wide words (G=3: 13 codes, 65 bits, within URAM's 72-bit width).
//
// Online, for each token and group the engine builds table[k] = sum_j (digit_j(k) - 1) a_j from the int8
// activations, then LANES rows look their codes up in parallel and accumulate in int32. The same engine
// serves decode (n_tok = 1) and prefill (a tile of up to TT tokens that reuses every weight word).
//
// DDR layout of one matrix [OUT, IN]: word[rb][c][lane], rb = row / LANES (rows padded with zero groups to
// a multiple of LANES), c = word column (ceil(groups / kPerWord) a row), lane = row % LANES.
#pragma once
#include "ek_axi.h"
#include "ek_stream.h"
#include "ek_types.h"

#ifndef EK_TILE_STORAGE
#define EK_TILE_STORAGE bram  // ek_config.h says uram on parts that have UltraRAM
#endif

namespace ek {

template <int G, bool HALF, bool BASE3 = false>
struct TritCode {
    static constexpr int kGroupSize = G;
    static constexpr bool kBase3 = BASE3;
    static constexpr int kStates = pow3(G);
    static constexpr int kZero = (kStates - 1) / 2;  // index of the all-zero group
    static constexpr int kEntries = HALF ? kZero + 1 : kStates;
    static constexpr int kIndexBits = bits_for(kEntries - 1);
    static constexpr int kBits = kIndexBits + (HALF ? 1 : 0);
    static constexpr int kPerWord = BASE3 ? 40 / G : 64 / kBits;
    static constexpr int kTileBits = kPerWord * kBits;
    static constexpr unsigned kIndexMask = (1u << kIndexBits) - 1u;
    typedef ap_uint<kTileBits> tile_t;   // one decoded word on chip
};

// A DDR word as on-chip codes: the same bits, or (BASE3) 8 base-3 bytes -> 40 digits -> 40 / G group codes.
// In hardware each byte's digits come from a 243-entry ROM; C simulation divides.
template <class CODE>
typename CODE::tile_t decode_word(word_t w) {
    typedef typename CODE::tile_t tile_t;
    if (!CODE::kBase3) return tile_t(w);
    int digits[40];
    for (int b = 0; b < 8; ++b) {
#pragma HLS UNROLL
        int v = (int)((w >> (8 * b)) & 0xFF).to_uint();
        for (int k = 0; k < 5; ++k) {
            digits[5 * b + k] = v % 3;
            v /= 3;
        }
    }
    tile_t out = 0;
    for (int s = 0; s < CODE::kPerWord; ++s) {
#pragma HLS UNROLL
        int index = 0;
        for (int j = CODE::kGroupSize - 1; j >= 0; --j) index = 3 * index + digits[s * CODE::kGroupSize + j];
        unsigned code = (unsigned)index;
        if (CODE::kEntries < CODE::kStates && index > CODE::kZero)   // half tables: sign + mirrored index
            code = (1u << CODE::kIndexBits) | (unsigned)(CODE::kStates - 1 - index);
        out |= tile_t(code) << (s * CODE::kBits);
    }
    return out;
}

// Shape of one packed matrix in words.
template <class CODE, int LANES, int OUT, int IN>
struct MatrixShape {
    static constexpr int kGroups = ceil_div(IN, CODE::kGroupSize);
    static constexpr int kWordsPerRow = ceil_div(kGroups, CODE::kPerWord);
    static constexpr int kRowBlocks = ceil_div(OUT, LANES);
    static constexpr int kWords = kRowBlocks * kWordsPerRow * LANES;
};

// table[k] for one group of G activations a[0..G-1] (k in [0, kEntries)). Fully unrolled in hardware:
// the digits of k are constants, so each entry is a small adder tree.
template <int G, bool HALF>
void build_group_table(const int a[G], entry_t table[TritCode<G, HALF>::kEntries]) {
    for (int k = 0; k < TritCode<G, HALF>::kEntries; ++k) {
#pragma HLS UNROLL
        int sum = 0, rest = k;
        for (int j = 0; j < G; ++j) {
            sum += (rest % 3 - 1) * a[j];
            rest /= 3;
        }
        table[k] = sum;   // exact: |sum| <= 127 G fits EK_ENTRY_BITS (checked in build_tables)
    }
}

// Tables for n_tok tokens of an int8 vector x[TT][IN] (groups past IN read zero activations).
template <int G, bool HALF, int TT, int IN, int MAXG>
void build_tables(const act_t x[TT][IN], int n_tok, entry_t tables[TT][MAXG][TritCode<G, HALF>::kEntries]) {
    constexpr int kGroups = ceil_div(IN, G);
    static_assert(kGroups <= MAXG, "table memory too small for this input width");
    static_assert(127 * G < (1 << (EK_ENTRY_BITS - 1)), "EK_ENTRY_BITS too narrow for 127 x G");
    for (int t = 0; t < n_tok; ++t) {
        for (int g = 0; g < kGroups; ++g) {
#pragma HLS PIPELINE II = 1
            if (t == 0) EK_COUNT(EK_COUNTER_TABLES, 1);   // the tile's tokens are built in parallel
            int a[G];
            for (int j = 0; j < G; ++j) a[j] = (g * G + j < IN) ? (int)x[t][g * G + j] : 0;
            build_group_table<G, HALF>(a, tables[t][g]);
        }
    }
}

// One lookup: the entry for `code`, negated when its sign bit is set (HALF tables only).
template <int G, bool HALF>
inline int lookup_code(const entry_t* table, unsigned code) {
    typedef TritCode<G, HALF> C;
    int value = table[code & C::kIndexMask];
    if (HALF && ((code >> C::kIndexBits) & 1u)) value = -value;
    return value;
}

// Copy one row block (LANES rows x words-per-row) from DDR into an on-chip tile (the LM head's words), a line
// of kLineWords words a cycle through the four ports (ek_axi.h).
template <int WPR, int LANES>
void load_row_block(const Ports& w, int rb, word_t tile[WPR * LANES]) {
    const long lines = read_span<8>(w, (long)rb * WPR * LANES, WPR * LANES, [&](long i, ap_uint<64> bits) { tile[i] = bits; });
    EK_COUNT(EK_COUNTER_AXI_LINES, lines);
}

// The same for ternary words, decoding each into on-chip codes (decode_word): kLineWords decoders.
template <class CODE, int WPR, int LANES>
void load_code_block(const Ports& w, int rb, typename CODE::tile_t tile[WPR * LANES]) {
    const long lines = read_span<8>(w, (long)rb * WPR * LANES, WPR * LANES,
                                    [&](long i, ap_uint<64> bits) { tile[i] = decode_word<CODE>(word_t(bits)); });
    EK_COUNT(EK_COUNTER_AXI_LINES, lines);
}

// sum_i W[row][i] x[t][i] through the tables, streamed out row by row (tokens inner) so dequantization
// consumes it as it comes (the fused chain). The next row block loads while this one computes (ping-pong
// tiles; HLS overlaps them, C simulation runs them in turn with the same result).
template <int G, bool HALF, bool BASE3, int LANES, int TT, int OUT, int IN, int MAXG>
void tlmm_stream(const Ports& w, const entry_t tables[TT][MAXG][TritCode<G, HALF>::kEntries], int n_tok,
                 stream<acc_t, LANES * TT>& out) {
    typedef TritCode<G, HALF, BASE3> C;
    typedef typename C::tile_t tile_t;
    constexpr int kGroups = ceil_div(IN, G);
    constexpr int kWpr = ceil_div(kGroups, C::kPerWord);
    constexpr int kRowBlocks = ceil_div(OUT, LANES);
    static tile_t tiles[2][kWpr * LANES];
#pragma HLS BIND_STORAGE variable = tiles type = ram_2p impl = EK_TILE_STORAGE
    load_code_block<C, kWpr, LANES>(w, 0, tiles[0]);
    for (int rb = 0; rb < kRowBlocks; ++rb) {
        if (rb + 1 < kRowBlocks) load_code_block<C, kWpr, LANES>(w, rb + 1, tiles[(rb + 1) & 1]);
        const tile_t* tile = tiles[rb & 1];
        // Each lane adds or subtracts (the half table's sign bit) its entry into an accumulator exactly as wide
        // as the row sum can get, |sum| <= 127 IN: one carry-chain LUT a bit (21 bits for IN = 6912).
        ap_int<bits_for(127 * IN) + 1> acc[TT][LANES];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
        for (int t = 0; t < TT; ++t)
            for (int l = 0; l < LANES; ++l) acc[t][l] = 0;
        EK_COUNT(EK_COUNTER_TLMM, kGroups);               // one group of every lane and token a cycle
        for (int g = 0; g < kGroups; ++g) {
#pragma HLS PIPELINE II = 1
            const int c = g / C::kPerWord, shift = (g % C::kPerWord) * C::kBits;
            for (int l = 0; l < LANES; ++l) {
#pragma HLS UNROLL
                unsigned code = ((tile[c * LANES + l] >> shift) & ((1u << C::kBits) - 1u)).to_uint();
                for (int t = 0; t < TT; ++t) {  // LANES x TT lookup units; a decode uses one token of each
#pragma HLS UNROLL
                    if (t < n_tok) acc[t][l] += lookup_code<G, HALF>(tables[t][g], code);
                }
            }
        }
        for (int l = 0; l < LANES; ++l) {
            const int row = rb * LANES + l;
            if (row < OUT)
                for (int t = 0; t < n_tok; ++t) out.write(acc_t(acc[t][l]));
        }
    }
}

// The same into an array y[TT][OUT] (the testbench's view of one matrix).
template <int G, bool HALF, bool BASE3, int LANES, int TT, int OUT, int IN, int MAXG>
void tlmm(const Ports& w, const entry_t tables[TT][MAXG][TritCode<G, HALF>::kEntries], int n_tok,
          acc_t y[TT][OUT]) {
    stream<acc_t, LANES * TT> rows;
    tlmm_stream<G, HALF, BASE3, LANES, TT, OUT, IN, MAXG>(w, tables, n_tok, rows);
    for (int row = 0; row < OUT; ++row)
        for (int t = 0; t < n_tok; ++t) y[t][row] = rows.read();
}

}  // namespace ek
