/* AVX2 ternary lookup-table kernels (bitnet.cpp TL2 lineage) on EK_LAYOUT_TERNARY_LUT3, the layout lut.c's
 * AVX-512 vpermw kernels read (ek_kernels.h describes its bytes; repack and decoder live in lut.c).
 *
 * AVX2 has no 32-entry vpermw, only the 16-entry byte lookup vpshufb, so the 27 partial sums of a column
 * triple are halved by sign symmetry: index i = d0 + 3 d1 + 9 d2 and 26 - i are the negated trits, so
 * T[i] = -T[26 - i], and with m = |i - 13| (0..13) and s = (i < 13), T[i] = s ? -T[13 + m] : T[13 + m].
 * prepare() builds, once per activation vector, the 14 entries T[13 + m] of every triple (|T| <= 381, exact
 * int16), kept as 16 low bytes + 16 high bytes (vpshufb reads bytes; no int8 table quantization, so exact).
 * A row's index costs two vpshufb (low and high bytes, interleaved back into int16 with unpacklo/hi_epi8) and
 * the sign is applied to the bytes before the interleave: in two's complement -T = ~T + 1, and ~T of an int16
 * is ~ of both its bytes, so both looked-up bytes are XORed with the row's sign mask (0xFF where s) and the
 * "+ 1"s are counted once per tile for all tokens (the count of negative indices of each row: weights only).
 * Overflow bound: a row accumulates int16 over 42 pairs of triples, 84 * 382 = 32088, plus at most 84 for the
 * count, < 32767 (the same 42-pair widening segment as lut.c), then widens into int32.
 */
#include "ek_kernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define EK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define EK_INLINE static inline __attribute__((always_inline)) EK_AVX2
#define L2_TILE 32       /* rows per tile of the layout: 32 bytes of a ymm */
#define L2_PAIR_BYTES 40 /* 32 nibble-pair bytes + 2 x uint32 of bit 4 */
#define L2_WIDEN_PAIRS 42
#define L2_NB 4          /* tokens per pass over a tile */

static int64_t l2_pairs(int64_t cols) { return ((cols + 2) / 3 + 1) / 2; }
static int64_t l2_tiles(int64_t rows) { return (rows + L2_TILE - 1) / L2_TILE; }

/* Tables [T][2 * pairs][32 bytes]: triple j's T[13 + m] for m = 0..15 (0 for m > 13), low bytes then high. */
static size_t l2_scratch(const ek_weight *w, const ek_act *a) {
    return (size_t)(a->tokens * l2_pairs(w->cols) * 2 * 32);
}

static EK_AVX2 void l2_build_tables(const ek_weight *w, const ek_act *a, void *scratch) {
    int16_t m[3][16];
    for (int k = 0; k < 16; k++)
        for (int d = 0, v = 13 + k; d < 3; d++, v /= 3) m[d][k] = (int16_t)(k < 14 ? v % 3 - 1 : 0);
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(const void *)m[0]);
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(const void *)m[1]);
    __m256i m2 = _mm256_loadu_si256((const __m256i *)(const void *)m[2]);
    const __m256i even_odd = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                              0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    int64_t triples = l2_pairs(w->cols) * 2;
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        __m256i *out = (__m256i *)scratch + t * triples;
        for (int64_t j = 0; j < triples; j++) {
            int8_t x[3] = {0, 0, 0};
            for (int d = 0; d < 3 && 3 * j + d < w->cols; d++) x[d] = q[3 * j + d];
            __m256i e = _mm256_mullo_epi16(m0, _mm256_set1_epi16(x[0]));
            e = _mm256_add_epi16(e, _mm256_mullo_epi16(m1, _mm256_set1_epi16(x[1])));
            e = _mm256_add_epi16(e, _mm256_mullo_epi16(m2, _mm256_set1_epi16(x[2])));
            _mm256_store_si256(out + j, _mm256_permute4x64_epi64(_mm256_shuffle_epi8(e, even_odd), 0xD8));
        }
    }
}

/* Byte r (row r) = 0x10 if bit r of `bits` is set, else 0. */
EK_INLINE __m256i bit4_bytes(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread), select);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, select), _mm256_set1_epi8(16));
}

/* One triple's lookup for 32 rows: magnitude index m, sign mask s (bytes), table tb -> acc (unpack order:
 * acc[0] = rows 0-7 | 16-23, acc[1] = rows 8-15 | 24-31) += s ? ~T[13 + m] : T[13 + m]. */
EK_INLINE void lookup_signed(const uint8_t *tb, __m256i m, __m256i s, __m256i *acc) {
    __m256i lo = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(const void *)tb)), m);
    __m256i hi = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(const void *)(tb + 16))), m);
    lo = _mm256_xor_si256(lo, s);
    hi = _mm256_xor_si256(hi, s);
    acc[0] = _mm256_add_epi16(acc[0], _mm256_unpacklo_epi8(lo, hi));
    acc[1] = _mm256_add_epi16(acc[1], _mm256_unpackhi_epi8(lo, hi));
}

/* int16 acc[2] (unpack order) widened into int32 sums[32] (row order). */
EK_INLINE void widen_add(const __m256i *acc, int32_t *sums) {
    static const int row0[4] = {0, 16, 8, 24};
    for (int h = 0; h < 2; h++) {
        __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[h]));
        __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[h], 1));
        __m256i *d0 = (__m256i *)(void *)(sums + row0[2 * h]), *d1 = (__m256i *)(void *)(sums + row0[2 * h + 1]);
        _mm256_storeu_si256(d0, _mm256_add_epi32(_mm256_loadu_si256(d0), lo));
        _mm256_storeu_si256(d1, _mm256_add_epi32(_mm256_loadu_si256(d1), hi));
    }
}

/* One 32-row tile for NB tokens from t0: exact int32 row sums, then the scale as in scalar.c. */
EK_INLINE void l2_tile_tokens(const int NB, const ek_weight *w, const ek_act *a, const uint8_t *tables, int64_t tile,
                              int64_t t0, float *y, int64_t ldy) {
    const int64_t pairs = l2_pairs(w->cols), triples = 2 * pairs;
    const uint8_t *src = w->data + tile * pairs * L2_PAIR_BYTES;
    const __m256i nib = _mm256_set1_epi8(15), thirteen = _mm256_set1_epi8(13), zero = _mm256_setzero_si256();
    int32_t sums[L2_NB][L2_TILE];
    memset(sums, 0, sizeof sums);
    for (int64_t p0 = 0; p0 < pairs; p0 += L2_WIDEN_PAIRS) {
        int64_t p1 = p0 + L2_WIDEN_PAIRS < pairs ? p0 + L2_WIDEN_PAIRS : pairs;
        __m256i acc[L2_NB][2], negs = zero;
        for (int b = 0; b < NB; b++) acc[b][0] = acc[b][1] = zero;
        for (int64_t p = p0; p < p1; p++) {
            const uint8_t *pb = src + p * L2_PAIR_BYTES;
            _mm_prefetch((const char *)(pb + 1024), _MM_HINT_T0);
            __m256i words = _mm256_loadu_si256((const __m256i *)(const void *)pb);
            uint32_t bits[2];
            memcpy(bits, pb + 32, 8);
            __m256i d0 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(words, nib), bit4_bytes(bits[0])), thirteen);
            __m256i d1 = _mm256_sub_epi8(
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(words, 4), nib), bit4_bytes(bits[1])), thirteen);
            __m256i s0 = _mm256_cmpgt_epi8(zero, d0), s1 = _mm256_cmpgt_epi8(zero, d1);
            __m256i m0 = _mm256_abs_epi8(d0), m1 = _mm256_abs_epi8(d1);
            negs = _mm256_sub_epi8(_mm256_sub_epi8(negs, s0), s1); /* +1 per negative index, <= 84 */
            for (int b = 0; b < NB; b++) {
                const uint8_t *tb = tables + ((t0 + b) * triples + 2 * p) * 32;
                lookup_signed(tb, m0, s0, acc[b]);
                lookup_signed(tb + 32, m1, s1, acc[b]);
            }
        }
        __m256i n0 = _mm256_unpacklo_epi8(negs, zero), n1 = _mm256_unpackhi_epi8(negs, zero);
        for (int b = 0; b < NB; b++) {
            acc[b][0] = _mm256_add_epi16(acc[b][0], n0);
            acc[b][1] = _mm256_add_epi16(acc[b][1], n1);
            widen_add(acc[b], sums[b]);
        }
    }
    int64_t r0 = tile * L2_TILE, n = w->rows - r0 < L2_TILE ? w->rows - r0 : L2_TILE;
    for (int b = 0; b < NB; b++) {
        int64_t t = t0 + b;
        float as = a->scale[t];
        for (int64_t i = 0; i < n; i++) {
            float s = (float)sums[b][i];
            y[t * ldy + r0 + i] = w->per_tensor ? (s * as) * w->scales[0] : (s * w->scales[r0 + i]) * as;
        }
    }
}

static EK_AVX2 void l2_rows(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                            int64_t r0, int64_t r1) {
    const uint8_t *tables = (const uint8_t *)scratch;
    for (int64_t tile = r0 / L2_TILE; tile < l2_tiles(r1); tile++) {
        int64_t t0 = 0;
        for (; t0 + L2_NB <= a->tokens; t0 += L2_NB) l2_tile_tokens(L2_NB, w, a, tables, tile, t0, y, ldy);
        for (; t0 < a->tokens; t0++) l2_tile_tokens(1, w, a, tables, tile, t0, y, ldy);
    }
}

static int supports_l2(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    if (w->group != w->cols) { *reason = "LUT3 kernels take one scale per tensor or row"; return 0; }
    return 1;
}

static const ek_kernel lut3_avx2_kernels[2] = {
    {"t2_lut3_avx2", EK_FMT_T2, EK_ACT_I8, EK_LAYOUT_TERNARY_LUT3, L2_TILE, supports_l2, l2_scratch,
     l2_build_tables, l2_rows},
    {"t1_lut3_avx2", EK_FMT_T1, EK_ACT_I8, EK_LAYOUT_TERNARY_LUT3, L2_TILE, supports_l2, l2_scratch,
     l2_build_tables, l2_rows},
};

const ek_kernel *ek_avx2_lut_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (layout != EK_LAYOUT_TERNARY_LUT3 || act_kind != EK_ACT_I8) return NULL;
    if (format != EK_FMT_T2 && format != EK_FMT_T1) return NULL;
    return &lut3_avx2_kernels[format == EK_FMT_T1];
}
#else
const ek_kernel *ek_avx2_lut_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
#endif
