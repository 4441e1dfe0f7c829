/* Bit-serial lookup-table kernels for int2/int3/int4 weights (T-MAC's idea) on EK_LAYOUT_BITPLANE
 * (ek_kernels.h describes the bytes), plus that layout's repack, its portable decoder and the measured rule
 * that says when the layout is chosen.
 *
 * Idea: a code c = sum_b 2^b c_b splits into bit planes c_b in {0, 1}. For one token, every quad of columns
 * (4k..4k+3) gets a 16-entry table of activation partial sums, T_k[i] = sum_{j: bit j of i} q[4k + j]
 * (|T| <= 4 * 127 = 508, exact in int16), built once per activation vector (prepare()). Four weights of one
 * plane are then one 4-bit index, and vpshufb looks up 32 rows' partial sums in one instruction. The table
 * is int16, vpshufb reads bytes: each table is kept as its 16 low bytes and its 16 high bytes, looked up with
 * the same indices and interleaved back into exact int16 (unpacklo/hi_epi8), so nothing is rounded (T-MAC
 * quantizes its tables to int8; that is not bit-exact). Per group of columns:
 *     sum_k c[r, k] q[k] = sum_b 2^b sum_quads T_quad[plane-b nibble]       (planes accumulated with shifts)
 *     acc[r, g] = that - offset * gsum[g]     (ek_i*: v = code - offset;  ek_u*: - zero[r, g] * gsum[g])
 * then the scales exactly as scalar.c (per tensor: (acc * a) * s; per group: sum_g acc_g * s_rg, then * a),
 * so the result is bit-identical to the numpy reference for every group size.
 * Overflow bound: one plane's int16 accumulator adds two lookups (<= 508 each) per octet and is widened to
 * int32 every 32 octets (or at each group's end, groups <= 128 columns): 32 * 2 * 508 = 32512 < 32767.
 *
 * The work is proportional to the bits (one lookup pair per plane and quad), not to the value range, so
 * int3, which has no VNNI/maddubs kernel on the native layout, gets its first SIMD path here.
 */
#include "ek_kernels.h"

#include <stdlib.h>
#include <string.h>

#define BP_TILE 32        /* rows per tile: the 32 bytes of a ymm */
#define BP_WIDEN_OCTETS 32 /* int16 plane sums widened to int32 every 32 octets: 64 * 508 = 32512 */

static int is_bitplane_format(int format) {
    return format == EK_FMT_I2 || format == EK_FMT_I3 || format == EK_FMT_I4 || format == EK_FMT_U2 ||
           format == EK_FMT_U3 || format == EK_FMT_U4;
}

static int64_t bp_octets(int64_t cols) { return (cols + 7) / 8; }
static int64_t bp_tiles(int64_t rows) { return (rows + BP_TILE - 1) / BP_TILE; }
static int64_t bp_tile_bytes(const ek_weight *w) { return bp_octets(w->cols) * ek_format_bits(w->format) * 32; }

/* Groups must be whole octets (every group size of layouts.py is), or one group per row. */
static int bp_applies(const ek_weight *w) {
    return is_bitplane_format(w->format) && (w->group == w->cols || w->group % 8 == 0);
}

size_t ek_bitplane_repack_size(const ek_weight *w, int layout) {
    if (layout != EK_LAYOUT_BITPLANE || !bp_applies(w)) return 0;
    return (size_t)(bp_tiles(w->rows) * bp_tile_bytes(w));
}

void ek_bitplane_decode_row(const ek_weight *w, int64_t r, int8_t *out) {
    int bits = ek_format_bits(w->format), offset = ek_format_offset(w->format);
    const uint8_t *tile = w->data + (r / BP_TILE) * bp_tile_bytes(w);
    int row = (int)(r % BP_TILE);
    for (int64_t c = 0; c < w->cols; c++) {
        int code = 0;
        for (int b = 0; b < bits; b++) {
            uint8_t byte = tile[((c / 8) * bits + b) * 32 + row];
            code |= ((byte >> (c % 8)) & 1) << b;
        }
        out[c] = (int8_t)(code - offset);
    }
}

/* Re-encode native rows [r0, r1) (r0 a multiple of 32) into their tiles, one tile of decoded codes at a time. */
int ek_bitplane_repack_rows(const ek_weight *w, int layout, uint8_t *dst, int64_t r0, int64_t r1) {
    if (ek_bitplane_repack_size(w, layout) == 0) return EK_ERR_UNSUPPORTED;
    int bits = ek_format_bits(w->format), offset = ek_format_offset(w->format);
    int64_t octets = bp_octets(w->cols), width = octets * 8;
    int8_t *vals = malloc((size_t)(BP_TILE * width));
    if (!vals) return EK_ERR_NOMEM;
    for (int64_t t = r0 / BP_TILE; t < bp_tiles(r1); t++) {
        memset(vals, -offset, (size_t)(BP_TILE * width)); /* code 0 for padded rows and columns */
        for (int i = 0; i < BP_TILE && t * BP_TILE + i < w->rows; i++)
            ek_decode_row_values(w->format, w->data + (t * BP_TILE + i) * w->row_bytes, 0, w->cols, vals + i * width);
        uint8_t *tile = dst + t * bp_tile_bytes(w);
        for (int64_t o = 0; o < octets; o++)
            for (int b = 0; b < bits; b++)
                for (int i = 0; i < BP_TILE; i++) {
                    const int8_t *v = vals + i * width + 8 * o;
                    uint8_t byte = 0;
                    for (int j = 0; j < 8; j++) byte |= (uint8_t)((((v[j] + offset) >> b) & 1) << j);
                    tile[(o * bits + b) * 32 + i] = byte;
                }
    }
    free(vals);
    return EK_OK;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define EK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define EK_INLINE static inline __attribute__((always_inline)) EK_AVX2

/* Tables [T][2 * octets][32 bytes]: quad k's 16 low bytes, then its 16 high bytes, of T_k[i] (0 past cols). */
static size_t bp_scratch(const ek_weight *w, const ek_act *a) {
    return (size_t)(a->tokens * bp_octets(w->cols) * 2 * 32);
}

/* int16 [16] in one ymm -> its 16 low bytes then its 16 high bytes (32 bytes). */
EK_INLINE __m256i split_bytes(__m256i e) {
    const __m256i even_odd = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                              0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(e, even_odd), 0xD8); /* lanes: lo0 hi0 lo1 hi1 -> lo hi */
}

static EK_AVX2 void bp_build_tables(const ek_weight *w, const ek_act *a, void *scratch) {
    int16_t m[4][16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 4; j++) m[j][i] = (int16_t)((i >> j) & 1);
    __m256i m0 = _mm256_loadu_si256((const __m256i *)(const void *)m[0]);
    __m256i m1 = _mm256_loadu_si256((const __m256i *)(const void *)m[1]);
    __m256i m2 = _mm256_loadu_si256((const __m256i *)(const void *)m[2]);
    __m256i m3 = _mm256_loadu_si256((const __m256i *)(const void *)m[3]);
    int64_t quads = bp_octets(w->cols) * 2;
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        __m256i *out = (__m256i *)scratch + t * quads;
        for (int64_t k = 0; k < quads; k++) {
            int8_t x[4] = {0, 0, 0, 0};
            for (int j = 0; j < 4 && 4 * k + j < w->cols; j++) x[j] = q[4 * k + j];
            __m256i e = _mm256_mullo_epi16(m0, _mm256_set1_epi16(x[0]));
            e = _mm256_add_epi16(e, _mm256_mullo_epi16(m1, _mm256_set1_epi16(x[1])));
            e = _mm256_add_epi16(e, _mm256_mullo_epi16(m2, _mm256_set1_epi16(x[2])));
            e = _mm256_add_epi16(e, _mm256_mullo_epi16(m3, _mm256_set1_epi16(x[3])));
            _mm256_store_si256(out + k, split_bytes(e));
        }
    }
}

/* 32 rows' exact int16 T[idx] of one quad table (lo/hi bytes at tb), added into acc (rows in unpack order:
 * acc[0] = rows 0-7 | 16-23, acc[1] = rows 8-15 | 24-31). */
EK_INLINE void lookup_add(const uint8_t *tb, __m256i idx, __m256i *acc) {
    __m256i lo = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(const void *)tb)), idx);
    __m256i hi = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(const void *)(tb + 16))), idx);
    acc[0] = _mm256_add_epi16(acc[0], _mm256_unpacklo_epi8(lo, hi));
    acc[1] = _mm256_add_epi16(acc[1], _mm256_unpackhi_epi8(lo, hi));
}

/* Octets [o0, o1) of one tile for one token: sum_b 2^b (plane-b sums), exact int32, into acc32 (4 x 8 rows in
 * unpack order: rows 0-7, 16-23, 8-15, 24-31). */
EK_INLINE void octet_span(const int BITS, const uint8_t *tile, const uint8_t *tables, int64_t o0, int64_t o1,
                          __m256i acc32[4]) {
    const __m256i nib = _mm256_set1_epi8(15);
    __m256i p[4][2];
    for (int b = 0; b < BITS; b++) p[b][0] = p[b][1] = _mm256_setzero_si256();
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *t0 = tables + o * 64;
        for (int b = 0; b < BITS; b++) {
            __m256i v = _mm256_load_si256((const __m256i *)(const void *)(tile + (o * BITS + b) * 32));
            lookup_add(t0, _mm256_and_si256(v, nib), p[b]);
            lookup_add(t0 + 32, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib), p[b]);
        }
    }
    for (int b = 0; b < BITS; b++)
        for (int h = 0; h < 2; h++) {
            __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p[b][h]));
            __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p[b][h], 1));
            acc32[2 * h] = _mm256_add_epi32(acc32[2 * h], _mm256_slli_epi32(lo, b));
            acc32[2 * h + 1] = _mm256_add_epi32(acc32[2 * h + 1], _mm256_slli_epi32(hi, b));
        }
}

/* Group g's code sums of one tile (int32 [32] in row order) for one token. */
EK_INLINE void group_code_sums(const int BITS, const uint8_t *tile, const uint8_t *tables, int64_t o0, int64_t o1,
                               int32_t sums[BP_TILE]) {
    __m256i acc32[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                        _mm256_setzero_si256()};
    for (int64_t s = o0; s < o1; s += BP_WIDEN_OCTETS)
        octet_span(BITS, tile, tables, s, s + BP_WIDEN_OCTETS < o1 ? s + BP_WIDEN_OCTETS : o1, acc32);
    static const int row0[4] = {0, 16, 8, 24}; /* unpack order back to row order */
    for (int i = 0; i < 4; i++) _mm256_storeu_si256((__m256i *)(void *)(sums + row0[i]), acc32[i]);
}

/* The code sums of octets [o0, o1) of one tile for one token: the ISA-specific inner loop (AVX2 here, AVX-512
 * below); the tile epilogues around it are shared. */
typedef void (*bp_sums_fn)(const uint8_t *tile, const uint8_t *tables, int64_t o0, int64_t o1, int32_t *sums);
#define BP_SUMS_AVX2(BITS) \
    static EK_AVX2 void sums##BITS##_avx2(const uint8_t *tile, const uint8_t *tables, int64_t o0, int64_t o1, \
                                          int32_t *sums) { group_code_sums(BITS, tile, tables, o0, o1, sums); }
BP_SUMS_AVX2(2)
BP_SUMS_AVX2(3)
BP_SUMS_AVX2(4)

/* One tile, every token, decode epilogue (T < BP_VECTOR_EPILOGUE_MIN): per group, the code sums minus the offset /
 * zero-point term, scaled as scalar.c, 8 rows per vector; the strided per-row scales s[r, g] are gathered (masked
 * past the last row), so nothing is transposed per tile. */
EK_INLINE void bp_tile_decode(bp_sums_fn code_sums, const ek_weight *w, const ek_act *a, const uint8_t *tables,
                              int64_t tile, float *y, int64_t ldy) {
    const uint8_t *src = w->data + tile * bp_tile_bytes(w);
    int64_t r0 = tile * BP_TILE, n = w->rows - r0 < BP_TILE ? w->rows - r0 : BP_TILE;
    int64_t groups = w->cols / w->group, octets = bp_octets(w->cols), quads = 2 * octets;
    int64_t group_octets = w->group == w->cols ? octets : w->group / 8;
    const float *scales = w->per_tensor ? w->scales : w->scales + r0 * groups;
    const uint8_t *zeros = w->zeros ? w->zeros + r0 * groups : NULL;
    __m256i idx[4], valid[4];
    for (int h = 0; h < 4; h++) {
        __m256i rows = _mm256_add_epi32(_mm256_set1_epi32(8 * h), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        idx[h] = _mm256_mullo_epi32(rows, _mm256_set1_epi32((int)groups));
        valid[h] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), rows);
    }
    for (int64_t t = 0; t < a->tokens; t++) {
        const uint8_t *tb = tables + t * quads * 32;
        float total[BP_TILE] __attribute__((aligned(32))) = {0};
        int32_t sums[BP_TILE] __attribute__((aligned(32))), zterm[BP_TILE] __attribute__((aligned(32)));
        for (int64_t g = 0; g < groups; g++) {
            int64_t o0 = g * group_octets, o1 = g + 1 == groups ? octets : o0 + group_octets;
            code_sums(src, tb, o0, o1, sums);
            int32_t gs = a->gsum[t * groups + g];
            if (zeros)
                for (int64_t i = 0; i < n; i++) zterm[i] = (int32_t)zeros[i * groups + g] * gs;
            __m256i offset_term = _mm256_set1_epi32(ek_format_offset(w->format) * gs);
            for (int h = 0; h < 4; h++) {
                __m256i z = zeros ? _mm256_load_si256((const __m256i *)(const void *)(zterm + 8 * h)) : offset_term;
                __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_load_si256((const __m256i *)(const void *)(sums + 8 * h)), z));
                __m256 sum;
                if (w->per_tensor)
                    sum = _mm256_mul_ps(_mm256_mul_ps(f, _mm256_set1_ps(a->scale[t])), _mm256_set1_ps(scales[0]));
                else
                    sum = _mm256_add_ps(_mm256_load_ps(total + 8 * h),
                                        _mm256_mul_ps(f, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), scales + g, idx[h],
                                                                                  _mm256_castsi256_ps(valid[h]), 4)));
                _mm256_store_ps(total + 8 * h, sum);
            }
        }
        if (!w->per_tensor)
            for (int h = 0; h < 4; h++)
                _mm256_store_ps(total + 8 * h, _mm256_mul_ps(_mm256_load_ps(total + 8 * h), _mm256_set1_ps(a->scale[t])));
        memcpy(y + t * ldy + r0, total, sizeof(float) * (size_t)n);
    }
}

/* The tile's zero points (or the code offset) and scales transposed to [groups][32] (rows in row order, padded
 * rows 0), so the per-group epilogue runs on vectors of 8 rows. */
static void tile_group_params(const ek_weight *w, int64_t r0, int64_t n, int32_t *zeros, float *scales) {
    int64_t groups = w->cols / w->group;
    int offset = ek_format_offset(w->format);
    if (n < BP_TILE || w->per_tensor) { /* the rows past the matrix (and unused per-row scales) are 0 */
        memset(zeros, 0, sizeof(int32_t) * (size_t)(groups * BP_TILE));
        memset(scales, 0, sizeof(float) * (size_t)(groups * BP_TILE));
    }
    for (int64_t i = 0; i < n; i++) { /* row by row: sequential reads of scales and zero points */
        const float *s = w->scales + (r0 + i) * groups;
        const uint8_t *z = w->zeros ? w->zeros + (r0 + i) * groups : NULL;
        for (int64_t g = 0; g < groups; g++) {
            zeros[g * BP_TILE + i] = z ? z[g] : offset;
            if (!w->per_tensor) scales[g * BP_TILE + i] = s[g];
        }
    }
}

/* One tile, every token: per group, the code sums minus the offset / zero-point term, scaled as scalar.c
 * (per group: total += (float)acc_g * s_rg in group order, then * a_scale; per tensor: (acc * a) * s). */
EK_INLINE void bp_tile(bp_sums_fn code_sums, const ek_weight *w, const ek_act *a, const uint8_t *tables, int64_t tile,
                       int32_t *zeros, float *scales, float *y, int64_t ldy) {
    const uint8_t *src = w->data + tile * bp_tile_bytes(w);
    int64_t r0 = tile * BP_TILE, n = w->rows - r0 < BP_TILE ? w->rows - r0 : BP_TILE;
    int64_t groups = w->cols / w->group, octets = bp_octets(w->cols), quads = 2 * octets;
    int64_t group_octets = w->group == w->cols ? octets : w->group / 8;
    tile_group_params(w, r0, n, zeros, scales);
    for (int64_t t = 0; t < a->tokens; t++) {
        const uint8_t *tb = tables + t * quads * 32;
        float total[BP_TILE] __attribute__((aligned(32))) = {0}; /* in memory: the octet loop needs the ymm registers */
        int32_t sums[BP_TILE];
        for (int64_t g = 0; g < groups; g++) {
            int64_t o0 = g * group_octets, o1 = g + 1 == groups ? octets : o0 + group_octets;
            code_sums(src, tb, o0, o1, sums);
            __m256i gs = _mm256_set1_epi32(a->gsum[t * groups + g]);
            for (int h = 0; h < 4; h++) {
                __m256i z = _mm256_loadu_si256((const __m256i *)(const void *)(zeros + g * BP_TILE + 8 * h));
                __m256i acc = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(sums + 8 * h)),
                                               _mm256_mullo_epi32(z, gs));
                __m256 f = _mm256_cvtepi32_ps(acc), sum;
                if (w->per_tensor) sum = _mm256_mul_ps(_mm256_mul_ps(f, _mm256_set1_ps(a->scale[t])),
                                                       _mm256_set1_ps(w->scales[0]));
                else sum = _mm256_add_ps(_mm256_load_ps(total + 8 * h),
                                         _mm256_mul_ps(f, _mm256_loadu_ps(scales + g * BP_TILE + 8 * h)));
                _mm256_store_ps(total + 8 * h, sum);
            }
        }
        if (!w->per_tensor)
            for (int h = 0; h < 4; h++)
                _mm256_store_ps(total + 8 * h, _mm256_mul_ps(_mm256_load_ps(total + 8 * h), _mm256_set1_ps(a->scale[t])));
        memcpy(y + t * ldy + r0, total, sizeof(float) * (size_t)n);
    }
}

/* From this many tokens the per-tile transposition of scales and zero points pays for the vector epilogue
 * (ceiling, 640 x 2560 g32, 1 thread: T=64 ek_u4 16.8 -> 29.1 Gw/s, ek_i4 24.8 -> 29.3; at T=1 it cost
 * ek_i4 22.3 -> 15.4, ek_i2 36.3 -> 22.8, so decode keeps the scalar epilogue). */
#define BP_VECTOR_EPILOGUE_MIN 4
#define BP_ROWS_FN(name, SUMS)                                                                               \
    static EK_AVX2 void name(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy, \
                             int64_t r0, int64_t r1) {                                                       \
        int64_t groups = w->cols / w->group;                                                                 \
        int32_t *zeros = malloc(sizeof(int32_t) * (size_t)(groups * BP_TILE));                               \
        float *scales = malloc(sizeof(float) * (size_t)(groups * BP_TILE));                                  \
        if (!zeros || !scales) { /* out of memory: visible as NaN, as scalar.c does */                      \
            for (int64_t t = 0; t < a->tokens; t++)                                                          \
                for (int64_t r = r0; r < r1; r++) y[t * ldy + r] = __builtin_nanf("");                       \
        } else {                                                                                             \
            for (int64_t tile = r0 / BP_TILE; tile < bp_tiles(r1); tile++)                                   \
                if (a->tokens < BP_VECTOR_EPILOGUE_MIN)                                                      \
                    bp_tile_decode(SUMS, w, a, (const uint8_t *)scratch, tile, y, ldy);                      \
                else bp_tile(SUMS, w, a, (const uint8_t *)scratch, tile, zeros, scales, y, ldy);             \
        }                                                                                                    \
        free(zeros);                                                                                         \
        free(scales);                                                                                        \
    }
BP_ROWS_FN(bp_rows2, sums2_avx2)
BP_ROWS_FN(bp_rows3, sums3_avx2)
BP_ROWS_FN(bp_rows4, sums4_avx2)

/* ---- AVX-512 inner loop: vpermw ------------------------------------------------------------------------
 * One zmm of 32 int16 holds both quad tables of an octet (lanes 0-15: quad 8o..8o+3, 16-31: quad 8o+4..8o+7),
 * so one vpermw looks up 32 rows' exact int16 partial sums of one quad: no low/high byte split and no
 * interleave (vpshufb on ymm needs 2 lookups + 2 unpacks per quad). Per plane and octet: one zero-extension of
 * the 32 index bytes to words, and two vpermw (low nibble; high nibble + 16). Same tables bytes per token
 * (64 per octet), same layout, same int16 bound as the AVX2 loop. */
#define EK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define EK_INLINE512 static inline __attribute__((always_inline)) EK_AVX512
#ifndef EK_BP_PREFETCH
#define EK_BP_PREFETCH 1024 /* bytes ahead in the weight tile */
#endif

static EK_AVX512 void bp_build_tables512(const ek_weight *w, const ek_act *a, void *scratch) {
    int16_t m[4][32];
    for (int l = 0; l < 32; l++)
        for (int j = 0; j < 4; j++) m[j][l] = (int16_t)(((l & 15) >> j) & 1);
    __m512i mj[4];
    for (int j = 0; j < 4; j++) mj[j] = _mm512_loadu_si512(m[j]);
    int64_t octets = bp_octets(w->cols);
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        __m512i *out = (__m512i *)scratch + t * octets;
        for (int64_t o = 0; o < octets; o++) {
            int8_t x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int j = 0; j < 8 && 8 * o + j < w->cols; j++) x[j] = q[8 * o + j];
            __m512i e = _mm512_setzero_si512();
            for (int j = 0; j < 4; j++) {
                __m512i xv = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(x[j]), _mm512_set1_epi16(x[4 + j]));
                e = _mm512_add_epi16(e, _mm512_mullo_epi16(mj[j], xv));
            }
            _mm512_store_si512(out + o, e);
        }
    }
}

EK_INLINE512 void group_code_sums512(const int BITS, const uint8_t *tile, const uint8_t *tables, int64_t o0,
                                     int64_t o1, int32_t sums[BP_TILE]) {
    const __m512i nib = _mm512_set1_epi16(15), sixteen = _mm512_set1_epi16(16);
    __m512i lo32 = _mm512_setzero_si512(), hi32 = _mm512_setzero_si512();
    for (int64_t s0 = o0; s0 < o1; s0 += BP_WIDEN_OCTETS) {
        int64_t s1 = s0 + BP_WIDEN_OCTETS < o1 ? s0 + BP_WIDEN_OCTETS : o1;
        __m512i p[4];
        for (int b = 0; b < BITS; b++) p[b] = _mm512_setzero_si512();
        for (int64_t o = s0; o < s1; o++) {
            __m512i tab = _mm512_load_si512(tables + o * 64);
            const uint8_t *ob = tile + o * BITS * 32;
            _mm_prefetch((const char *)(ob + EK_BP_PREFETCH), _MM_HINT_T0);
            for (int b = 0; b < BITS; b++) {
                __m512i words = _mm512_cvtepu8_epi16(_mm256_load_si256((const __m256i *)(const void *)(ob + 32 * b)));
                __m512i ia = _mm512_and_si512(words, nib);
                __m512i ib = _mm512_or_si512(_mm512_srli_epi16(words, 4), sixteen);
                p[b] = _mm512_add_epi16(p[b], _mm512_add_epi16(_mm512_permutexvar_epi16(ia, tab),
                                                               _mm512_permutexvar_epi16(ib, tab)));
            }
        }
        for (int b = 0; b < BITS; b++) {
            lo32 = _mm512_add_epi32(lo32, _mm512_slli_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(p[b])), b));
            hi32 = _mm512_add_epi32(hi32, _mm512_slli_epi32(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p[b], 1)), b));
        }
    }
    _mm512_storeu_si512(sums, lo32);
    _mm512_storeu_si512(sums + 16, hi32);
}

#define BP_SUMS_AVX512(BITS) \
    static EK_AVX512 void sums##BITS##_avx512(const uint8_t *tile, const uint8_t *tables, int64_t o0, int64_t o1, \
                                              int32_t *sums) { group_code_sums512(BITS, tile, tables, o0, o1, sums); }
BP_SUMS_AVX512(2)
BP_SUMS_AVX512(3)
BP_SUMS_AVX512(4)
BP_ROWS_FN(bp_rows2_512, sums2_avx512)
BP_ROWS_FN(bp_rows3_512, sums3_avx512)
BP_ROWS_FN(bp_rows4_512, sums4_avx512)

static int supports_bitplane(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    if (!bp_applies(w)) { *reason = "bit-plane kernels take groups of a multiple of 8 columns"; return 0; }
    return 1;
}

#define BP_KERNEL(fmt, tag, bits) \
    {#tag "_bitplane_avx2", fmt, EK_ACT_I8, EK_LAYOUT_BITPLANE, BP_TILE, supports_bitplane, bp_scratch, \
     bp_build_tables, bp_rows##bits}

static const ek_kernel bitplane_kernels[] = {
    BP_KERNEL(EK_FMT_I2, i2, 2), BP_KERNEL(EK_FMT_I3, i3, 3), BP_KERNEL(EK_FMT_I4, i4, 4),
    BP_KERNEL(EK_FMT_U2, u2, 2), BP_KERNEL(EK_FMT_U3, u3, 3), BP_KERNEL(EK_FMT_U4, u4, 4),
};

#define BP_KERNEL512(fmt, tag, bits) \
    {#tag "_bitplane_avx512", fmt, EK_ACT_I8, EK_LAYOUT_BITPLANE, BP_TILE, supports_bitplane, bp_scratch, \
     bp_build_tables512, bp_rows##bits##_512}

static const ek_kernel bitplane_kernels512[] = {
    BP_KERNEL512(EK_FMT_I2, i2, 2), BP_KERNEL512(EK_FMT_I3, i3, 3), BP_KERNEL512(EK_FMT_I4, i4, 4),
    BP_KERNEL512(EK_FMT_U2, u2, 2), BP_KERNEL512(EK_FMT_U3, u3, 3), BP_KERNEL512(EK_FMT_U4, u4, 4),
};

const ek_kernel *ek_avx512_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (layout != EK_LAYOUT_BITPLANE || act_kind != EK_ACT_I8) return NULL;
    for (size_t i = 0; i < sizeof bitplane_kernels512 / sizeof bitplane_kernels512[0]; i++)
        if (bitplane_kernels512[i].format == format) return &bitplane_kernels512[i];
    return NULL;
}

const ek_kernel *ek_avx2_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (layout != EK_LAYOUT_BITPLANE || act_kind != EK_ACT_I8) return NULL;
    for (size_t i = 0; i < sizeof bitplane_kernels / sizeof bitplane_kernels[0]; i++)
        if (bitplane_kernels[i].format == format) return &bitplane_kernels[i];
    return NULL;
}
#else
const ek_kernel *ek_avx2_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
const ek_kernel *ek_avx512_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
#endif

/* Which formats take the bit-plane layout on which ISA: measured on this Sapphire Rapids, 1 thread (docs/bench/
 * notes.md "LUT kernels" has the full tables, both DRAM runs and the commands).
 *   cache-resident ceiling, 640 x 2560 g32, CPU time, best of 7 rounds, Gw/s T=1 / T=64:
 *       python scripts/kernel_bench.py --ceiling --isas avx512 avx2 --tokens 1 64 --rounds 7
 *                 avx512 vnni      bitplane_avx512   avx2 maddubs     bitplane_avx2
 *       ek_i2     44.3 / 87.3      34.8 / 47.2       30.0 / 53.9      30.3 / 41.4
 *       ek_i3      1.0 / 6.3 (scalar) 29.1 / 34.4     1.0 / 5.8 (scalar) 25.1 / 30.8
 *       ek_i4     42.1 / 68.7      23.8 / 29.5       18.6 / 42.3      19.5 / 24.9
 *       ek_u4     40.6 / 66.6      20.2 / 29.0       18.0 / 43.8      17.6 / 24.9
 *   from DRAM, 6912 x 2560 g32 (> 256 MiB cycled), T=1, Gw/s (loaded machine: indicative):
 *       python scripts/kernel_bench.py --formats ek_i2 ek_i3 ek_i4 ek_u4 --shapes 2 --tokens 1 --threads 1 \
 *           --isas avx512 avx2 --layouts native bitplane --repeat 3
 *       ek_i3 scalar 0.5-0.9, bitplane 10.3-13.9;  ek_i2 vnni 17.6-31.9, bitplane 16.4-18.9;
 *       ek_i4 vnni 11.2-20.7, bitplane 8.4-11.1;  maddubs vs bitplane_avx2 within +-15% at decode.
 * So ek_i3/ek_u3 take the bit-plane layout wherever its kernels run (AVX2 and AVX-512: 15-30x the scalar path that
 * was their only kernel), and ek_i2/i4/u2/u4 stay native: VNNI wins on AVX-512, maddubs ties at decode and wins
 * at prefill (1.3-1.8x) on AVX2. */
int ek_bitplane_preferred_layout(const ek_weight *w, int act_kind, int isa) {
    if (act_kind != EK_ACT_I8 || (isa != EK_ISA_AVX2 && isa != EK_ISA_AVX512) || !bp_applies(w))
        return EK_LAYOUT_NATIVE;
    if (w->format != EK_FMT_I3 && w->format != EK_FMT_U3) return EK_LAYOUT_NATIVE;
#if defined(__x86_64__) || defined(__i386__)
    return EK_LAYOUT_BITPLANE;
#else
    return EK_LAYOUT_NATIVE;
#endif
}
