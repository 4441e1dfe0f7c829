/* Lookup-table (LUT) ternary kernels in the T-MAC / bitnet.cpp lineage, on EK_LAYOUT_TERNARY_LUT3
 * (ek_kernels.h describes the bytes), plus that layout's repack and its portable decoder.
 *
 * (The AVX2 kernels of this layout are in lut_avx2.c.)
 *
 * Idea: for one token, the 27 partial sums of every column triple, T_j[i] = (d0-1) x0 + (d1-1) x1 + (d2-1) x2
 * for i = d0 + 3 d1 + 9 d2, are built once (prepare(): one zmm of 32 int16 per triple, |T| <= 381, exact);
 * each weight triple of a row is then one 5-bit index, and vpermw looks up 32 rows' partial sums of one
 * triple in one instruction (the table is the instruction's 32-entry int16 source). So the weights never get
 * unpacked to values: 96 multiply-adds are one vpermw + one vpaddw (plus ~1.5 ops of index extraction per
 * triple, shared by every token of a block). No sign-symmetry folding is needed: 27 signed entries fit the 32
 * lanes of one table (bitnet.cpp's TL2 folds 27 into 14 + a sign bit to fit 16-entry vpshufb tables;
 * with vpermw the fold would only add a sign step). Tables stay exact int16 (no int8 table quantization):
 * a row accumulates int16 for 42 pairs of triples (84 * 381 = 32004 < 2^15), then widens into int32.
 *
 * The layout stores 1.67 bits per weight (ek_t2: 2, ek_t1: 1.6). Whether it pays is measured per format and
 * ISA: see ek_lut_preferred_layout for the numbers, the command and the choice.
 */
#include "ek_kernels.h"

#include <stdlib.h>
#include <string.h>

#define LUT_TILE 32   /* rows per tile: the 32 int16 lanes of a zmm */
#define PAIR_BYTES 40 /* 32 nibble-pair bytes + 2 x uint32 of bit 4 */
#define ZERO_INDEX 13 /* 1 + 3 + 9: three zero trits */

static int is_ternary(int format) { return format == EK_FMT_T2 || format == EK_FMT_T1; }

/* Pairs of triples per tile row: ceil(ceil(cols / 3) / 2). */
static int64_t lut_pairs(int64_t cols) { return ((cols + 2) / 3 + 1) / 2; }
static int64_t lut_tiles(int64_t rows) { return (rows + LUT_TILE - 1) / LUT_TILE; }
static int64_t lut_tile_bytes(int64_t cols) { return lut_pairs(cols) * PAIR_BYTES; }

size_t ek_lut_repack_size(const ek_weight *w, int layout) {
    if (layout != EK_LAYOUT_TERNARY_LUT3 || !is_ternary(w->format) || w->group != w->cols) return 0;
    return (size_t)(lut_tiles(w->rows) * lut_tile_bytes(w->cols));
}

/* The index of triple j of one tile row held in pair bytes `pb` (j = 0 or 1 within the pair). */
static inline int pair_index(const uint8_t *pb, int row, int j) {
    uint32_t bits;
    memcpy(&bits, pb + 32 + 4 * j, 4);
    return ((pb[row] >> (4 * j)) & 15) | (int)(((bits >> row) & 1u) << 4);
}

/* Row r of a LUT3 weight as trits [cols] (the scalar fallback's decoder). */
void ek_lut_decode_row(const ek_weight *w, int64_t r, int8_t *out) {
    const uint8_t *tile = w->data + (r / LUT_TILE) * lut_tile_bytes(w->cols);
    int row = (int)(r % LUT_TILE);
    for (int64_t c = 0; c < w->cols; c += 3) {
        int64_t triple = c / 3;
        int idx = pair_index(tile + (triple / 2) * PAIR_BYTES, row, (int)(triple & 1));
        for (int d = 0; d < 3 && c + d < w->cols; d++, idx /= 3) out[c + d] = (int8_t)(idx % 3 - 1);
    }
}

/* Re-encode native rows [r0, r1) (r0 a multiple of 32) into their tiles: a pure re-encoding of the trits,
 * streamed one 32-row tile at a time (32 decoded rows of scratch). */
int ek_lut_repack_rows(const ek_weight *w, int layout, uint8_t *dst, int64_t r0, int64_t r1) {
    if (ek_lut_repack_size(w, layout) == 0) return EK_ERR_UNSUPPORTED;
    int64_t pairs = lut_pairs(w->cols), width = pairs * 6;
    int8_t *vals = malloc((size_t)(LUT_TILE * width));
    if (!vals) return EK_ERR_NOMEM;
    for (int64_t t = r0 / LUT_TILE; t < lut_tiles(r1); t++) {
        memset(vals, 0, (size_t)(LUT_TILE * width)); /* zero trits for padded rows and columns */
        for (int i = 0; i < LUT_TILE && t * LUT_TILE + i < w->rows; i++)
            ek_decode_row_values(w->format, w->data + (t * LUT_TILE + i) * w->row_bytes, 0, w->cols, vals + i * width);
        uint8_t *tile = dst + t * lut_tile_bytes(w->cols);
        for (int64_t p = 0; p < pairs; p++) {
            uint8_t *pb = tile + p * PAIR_BYTES;
            uint32_t bits[2] = {0, 0};
            for (int i = 0; i < LUT_TILE; i++) {
                uint8_t byte = 0;
                for (int j = 0; j < 2; j++) {
                    const int8_t *v = vals + i * width + (2 * p + j) * 3;
                    int idx = (v[0] + 1) + 3 * (v[1] + 1) + 9 * (v[2] + 1);
                    byte |= (uint8_t)((idx & 15) << (4 * j));
                    bits[j] |= (uint32_t)(idx >> 4) << i;
                }
                pb[i] = byte;
            }
            memcpy(pb + 32, bits, 8);
        }
    }
    free(vals);
    return EK_OK;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define EK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
#define EK_INLINE static inline __attribute__((always_inline)) EK_AVX512
#ifndef EK_PREFETCH
#define EK_PREFETCH 2048 /* bytes ahead of the weight stream, as in avx512.c */
#endif
#define WIDEN_PAIRS 42 /* int16 accumulation for 42 pairs: 84 * 381 = 32004 < 32767 */

static size_t lut_scratch(const ek_weight *w, const ek_act *a) {
    return (size_t)(a->tokens * lut_pairs(w->cols) * 2 * 64);
}

/* Tables [T][2 * pairs][32] int16: lane i of triple j = sum_d (digit_d(i) - 1) * q[3j + d] (0 past cols). */
static EK_AVX512 void build_tables(const ek_weight *w, const ek_act *a, void *scratch) {
    int16_t m[3][32];
    for (int i = 0; i < 32; i++)
        for (int d = 0, v = i; d < 3; d++, v /= 3) m[d][i] = (int16_t)(i < 27 ? v % 3 - 1 : 0);
    __m512i m0 = _mm512_loadu_si512(m[0]), m1 = _mm512_loadu_si512(m[1]), m2 = _mm512_loadu_si512(m[2]);
    int64_t triples = lut_pairs(w->cols) * 2, full = w->cols / 3;
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        __m512i *out = (__m512i *)scratch + t * triples;
        for (int64_t j = 0; j < triples; j++) {
            int8_t x[3] = {0, 0, 0};
            if (j < full) memcpy(x, q + 3 * j, 3);
            else for (int d = 0; d < 3 && 3 * j + d < w->cols; d++) x[d] = q[3 * j + d];
            __m512i e = _mm512_mullo_epi16(m0, _mm512_set1_epi16(x[0]));
            e = _mm512_add_epi16(e, _mm512_mullo_epi16(m1, _mm512_set1_epi16(x[1])));
            e = _mm512_add_epi16(e, _mm512_mullo_epi16(m2, _mm512_set1_epi16(x[2])));
            _mm512_store_si512(out + j, e);
        }
    }
}

/* int16 lanes -> two int32 halves (rows 0..15, 16..31) added into acc. */
EK_INLINE void widen_into(__m512i v, __m512i *lo, __m512i *hi) {
    *lo = _mm512_add_epi32(*lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(v)));
    *hi = _mm512_add_epi32(*hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(v, 1)));
}

/* One 32-row tile for NB tokens [t0, t0 + NB): exact int32 row sums, then the scale as in scalar.c. */
EK_INLINE void tile_tokens(const int NB, const ek_weight *w, const ek_act *a, const __m512i *tables, int64_t tile,
                           int64_t t0, float *y, int64_t ldy) {
    const int64_t pairs = lut_pairs(w->cols), triples = 2 * pairs;
    const uint8_t *src = w->data + tile * lut_tile_bytes(w->cols);
    const __m512i nib = _mm512_set1_epi16(15), sixteen = _mm512_set1_epi16(16);
    __m512i lo[4], hi[4], acc[4];
    for (int b = 0; b < NB; b++) lo[b] = hi[b] = acc[b] = _mm512_setzero_si512();
    for (int64_t p0 = 0; p0 < pairs; p0 += WIDEN_PAIRS) {
        int64_t p1 = p0 + WIDEN_PAIRS < pairs ? p0 + WIDEN_PAIRS : pairs;
        for (int64_t p = p0; p < p1; p++) {
            const uint8_t *pb = src + p * PAIR_BYTES;
            _mm_prefetch((const char *)(pb + EK_PREFETCH), _MM_HINT_T0);
            __m512i words = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)pb));
            uint32_t bits[2];
            memcpy(bits, pb + 32, 8);
            __mmask32 k0 = (__mmask32)bits[0], k1 = (__mmask32)bits[1];
            __m512i a0 = _mm512_and_si512(words, nib), a1 = _mm512_srli_epi16(words, 4);
            __m512i i0 = _mm512_mask_add_epi16(a0, k0, a0, sixteen), i1 = _mm512_mask_add_epi16(a1, k1, a1, sixteen);
            for (int b = 0; b < NB; b++) {
                const __m512i *tb = tables + (t0 + b) * triples + 2 * p;
                acc[b] = _mm512_add_epi16(acc[b], _mm512_permutexvar_epi16(i0, _mm512_load_si512(tb)));
                acc[b] = _mm512_add_epi16(acc[b], _mm512_permutexvar_epi16(i1, _mm512_load_si512(tb + 1)));
            }
        }
        for (int b = 0; b < NB; b++) { widen_into(acc[b], &lo[b], &hi[b]); acc[b] = _mm512_setzero_si512(); }
    }
    int64_t r0 = tile * LUT_TILE, n = w->rows - r0 < LUT_TILE ? w->rows - r0 : LUT_TILE;
    for (int b = 0; b < NB; b++) {
        int32_t sums[LUT_TILE];
        _mm512_storeu_si512(sums, lo[b]);
        _mm512_storeu_si512(sums + 16, hi[b]);
        int64_t t = t0 + b;
        float as = a->scale[t];
        for (int64_t i = 0; i < n; i++) {
            float s = (float)sums[i];
            y[t * ldy + r0 + i] = w->per_tensor ? (s * as) * w->scales[0] : (s * w->scales[r0 + i]) * as;
        }
    }
}

/* Decode (T < PREFILL_MIN): tile by tile, every token of the call per tile (tables of one token: 64 bytes per
 * triple, 55 KiB at K = 2560, L2-resident). */
static EK_AVX512 void rows_lut3_decode(const ek_weight *w, const ek_act *a, const __m512i *tables, float *y,
                                       int64_t ldy, int64_t r0, int64_t r1) {
    for (int64_t tile = r0 / LUT_TILE; tile < lut_tiles(r1); tile++) {
        int64_t t0 = 0;
        for (; t0 + 4 <= a->tokens; t0 += 4) tile_tokens(4, w, a, tables, tile, t0, y, ldy);
        for (; t0 < a->tokens; t0++) tile_tokens(1, w, a, tables, tile, t0, y, ldy);
    }
}

/* Prefill segment: pairs [p0, p1) (at most WIDEN_PAIRS) of every tile in [tile0, tile1) for PB tokens from t0.
 * The PB tokens' tables of one segment (PB * 84 * 64 B = 21 KiB) stay in L1 across the tiles; the int32 row
 * sums live in y itself between segments (y[t, r] as int32 bits, rows of this chunk only). */
#define PB 4
static EK_AVX512 void prefill_segment(const ek_weight *w, const __m512i *tables, int64_t triples, int64_t t0,
                                      int64_t p0, int64_t p1, int64_t tile0, int64_t tile1, int32_t *acc32,
                                      int64_t ldy) {
    const __m512i nib = _mm512_set1_epi16(15), sixteen = _mm512_set1_epi16(16);
    for (int64_t tile = tile0; tile < tile1; tile++) {
        const uint8_t *src = w->data + tile * lut_tile_bytes(w->cols);
        int64_t r0 = tile * LUT_TILE, n = w->rows - r0 < LUT_TILE ? w->rows - r0 : LUT_TILE;
        __mmask16 mlo = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
        __mmask16 mhi = (__mmask16)(n >= 32 ? 0xFFFF : n <= 16 ? 0 : (1u << (n - 16)) - 1u);
        __m512i acc[PB];
        for (int b = 0; b < PB; b++) acc[b] = _mm512_setzero_si512();
        for (int64_t p = p0; p < p1; p++) {
            const uint8_t *pb = src + p * PAIR_BYTES;
            __m512i words = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)pb));
            uint32_t bits[2];
            memcpy(bits, pb + 32, 8);
            __m512i a0 = _mm512_and_si512(words, nib), a1 = _mm512_srli_epi16(words, 4);
            __m512i i0 = _mm512_mask_add_epi16(a0, (__mmask32)bits[0], a0, sixteen);
            __m512i i1 = _mm512_mask_add_epi16(a1, (__mmask32)bits[1], a1, sixteen);
            for (int b = 0; b < PB; b++) {
                const __m512i *tb = tables + (t0 + b) * triples + 2 * p;
                acc[b] = _mm512_add_epi16(acc[b], _mm512_permutexvar_epi16(i0, _mm512_load_si512(tb)));
                acc[b] = _mm512_add_epi16(acc[b], _mm512_permutexvar_epi16(i1, _mm512_load_si512(tb + 1)));
            }
        }
        for (int b = 0; b < PB; b++) {
            int32_t *dst = acc32 + (t0 + b) * ldy + r0;
            __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc[b]));
            __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc[b], 1));
            if (p0 > 0) {
                lo = _mm512_add_epi32(lo, _mm512_maskz_loadu_epi32(mlo, dst));
                hi = _mm512_add_epi32(hi, _mm512_maskz_loadu_epi32(mhi, dst + 16));
            }
            _mm512_mask_storeu_epi32(dst, mlo, lo);
            _mm512_mask_storeu_epi32(dst + 16, mhi, hi);
        }
    }
}

/* Prefill: blocks of PB tokens, each over K segments of WIDEN_PAIRS pairs across all tiles of the chunk (tables
 * in L1, weights of the chunk from L2), then the int32 sums in y become floats, finished as in scalar.c. */
static EK_AVX512 void rows_lut3_prefill(const ek_weight *w, const ek_act *a, const __m512i *tables, float *y,
                                        int64_t ldy, int64_t r0, int64_t r1) {
    int64_t pairs = lut_pairs(w->cols), triples = 2 * pairs, t0 = 0;
    int32_t *acc32 = (int32_t *)(void *)y; /* float and int32 share size; each y[t, r] is int32 until finished */
    for (; t0 + PB <= a->tokens; t0 += PB) {
        for (int64_t p0 = 0; p0 < pairs; p0 += WIDEN_PAIRS)
            prefill_segment(w, tables, triples, t0, p0, p0 + WIDEN_PAIRS < pairs ? p0 + WIDEN_PAIRS : pairs,
                            r0 / LUT_TILE, lut_tiles(r1), acc32, ldy);
        for (int64_t t = t0; t < t0 + PB; t++) {
            float as = a->scale[t];
            for (int64_t r = r0; r < r1; r++) {
                float s = (float)acc32[t * ldy + r];
                y[t * ldy + r] = w->per_tensor ? (s * as) * w->scales[0] : (s * w->scales[r]) * as;
            }
        }
    }
    for (int64_t tile = r0 / LUT_TILE; t0 < a->tokens && tile < lut_tiles(r1); tile++)
        for (int64_t t = t0; t < a->tokens; t++) tile_tokens(1, w, a, tables, tile, t, y, ldy);
}

#define PREFILL_MIN 8 /* below this, the per-tile decode loop */

static EK_AVX512 void rows_lut3(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                                int64_t r0, int64_t r1) {
    const __m512i *tables = (const __m512i *)scratch;
    if (a->tokens < PREFILL_MIN) rows_lut3_decode(w, a, tables, y, ldy, r0, r1);
    else rows_lut3_prefill(w, a, tables, y, ldy, r0, r1);
}

static int supports_lut3(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    if (w->group != w->cols) { *reason = "LUT3 kernels take one scale per tensor or row"; return 0; }
    return 1;
}

static const ek_kernel lut3_kernels[2] = {
    {"t2_lut3_avx512", EK_FMT_T2, EK_ACT_I8, EK_LAYOUT_TERNARY_LUT3, LUT_TILE, supports_lut3, lut_scratch,
     build_tables, rows_lut3},
    {"t1_lut3_avx512", EK_FMT_T1, EK_ACT_I8, EK_LAYOUT_TERNARY_LUT3, LUT_TILE, supports_lut3, lut_scratch,
     build_tables, rows_lut3},
};

const ek_kernel *ek_avx512_lut_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (layout != EK_LAYOUT_TERNARY_LUT3 || act_kind != EK_ACT_I8 || !is_ternary(format)) return NULL;
    return &lut3_kernels[format == EK_FMT_T1];
}
#endif

/* Which layout pays on `isa`; NATIVE unless a LUT3 kernel exists there and wins. Measured on this Sapphire
 * Rapids (2 vCPUs shared with ~10 other runnable processes, so CPU-time per call, 1 thread, best of 15
 * interleaved rounds; a 640 x 2560 layer, L2-resident, i.e. the kernels' compute ceiling, which at these rates
 * is below DRAM speed, so decode here is compute-bound):
 *     python scripts/kernel_bench.py --ceiling --tokens 1 64
 *                       decode T=1 Gw/s   prefill T=64 Gw/s
 *     ek_t2 native vnni     46.8              127.3
 *     ek_t2 -> lut3         42.1               63.7
 *     ek_t1 native vnni     32.2              102.8
 *     ek_t1 -> lut3         41.2               67.5
 * and from DRAM (kernel_bench.py --shapes 2 --tokens 1 --threads 1, 6912 x 2560, > 256 MiB), t2 CPU-time
 * Gw/s: native 26-34, lut3 32-40 (load average 10: only indicative).
 * So ek_t2 stays native (the VNNI kernel ties LUT3 on decode and is 2x faster on prefill), and ek_t1 is
 * repacked to LUT3 (decode 1.28x faster than decoding base-3 digits with byte compares; prefill 0.66x, the
 * price of a 4% larger weight: 1.67 instead of 1.6 bits).
 * AVX2 (no vpermw) reads LUT3 with lut_avx2.c's sign-symmetric vpshufb kernel. Measured on this machine with
 * EDGEKIT_KERNEL=avx2 (1 thread; docs/bench/notes.md "LUT kernels"), Gw/s:
 *                         ceiling T=1 / T=64 (640 x 2560)    DRAM T=1 (6912 x 2560)
 *     ek_t2 native maddubs     52.6 / 82.0                      21.6
 *     ek_t2 -> lut3 avx2       37.4 / 56.7                      29.2
 *     ek_t1 native maddubs     28.6 / 59.4                      10.1
 *     ek_t1 -> lut3 avx2       38.8 / 66.5                      30.2
 * So on that CPU's AVX2 both ternary formats were repacked: ek_t1 wins everywhere (3x from DRAM), ek_t2 trades
 * a 0.69x cache-resident prefill for a 1.35x DRAM decode.
 *
 * On a real AVX2-only CPU (AMD EPYC, family 25 model 1, Zen 3: AVX2 + FMA + F16C, no AVX-512; 2 vCPUs, 32 MiB
 * L3; 2026-12-03, docs/bench/notes.md "AMD EPYC AVX2" section) ek_t2's answer flips. From DRAM, T=1, Gw/s wall,
 * best of 5 (probe 19.6 GB/s on 1 thread, 34.3 on 2):
 *     python scripts/kernel_bench.py --formats ek_t2 --shapes 0 2 3 --tokens 1 --threads 1 2  *         --layouts native lut3 --repeat 5
 *                         2560x2560 1t/2t   6912x2560 1t/2t   2560x6912 1t/2t
 *     ek_t2 native maddubs   34.9 / 35.1       33.0 / 43.1       35.8 / 49.4
 *     ek_t2 -> lut3 avx2     25.9 / 32.5       29.7 / 38.7       31.0 / 42.9
 * (both compute-bound here: CPU-time Gw/s within 3-20% of wall); prefill T=128 (--tokens 128 --repeat 2,
 * load average ~2.6): lut3 1.00-1.26x native. ek_t1 keeps LUT3 on this CPU too (T=1, 1 thread: 19.1-21.2 vs
 * 9.6-18.3 Gw/s native; T=128 1.2-2.2x). So ek_t2 takes LUT3 only where the AVX2 kernels run on an AVX-512 CPU
 * (the Sapphire Rapids numbers above), and stays native on AVX2-only CPUs, where decode (the bandwidth-bound
 * half of the ternary goals) is 1.08-1.35x faster native, the prefill loss is at most 0.8x and the repack's
 * copy (0.43 GB at BitNet 2B4T) is not made. */
int ek_lut_preferred_layout(const ek_weight *w, int act_kind, int isa) {
    if (act_kind != EK_ACT_I8 || w->group != w->cols) return EK_LAYOUT_NATIVE;
    if (isa == EK_ISA_AVX512 && w->format == EK_FMT_T1) return EK_LAYOUT_TERNARY_LUT3;
    if (isa == EK_ISA_AVX2 && w->format == EK_FMT_T1) return EK_LAYOUT_TERNARY_LUT3;
    /* an AVX-512 CPU as the dispatcher counts one (AVX-512 F/BW/VL/VNNI/VBMI), running the AVX2 kernels */
    if (isa == EK_ISA_AVX2 && w->format == EK_FMT_T2 && ek_isa_available(EK_ISA_AVX512))
        return EK_LAYOUT_TERNARY_LUT3;
    return EK_LAYOUT_NATIVE;
}
