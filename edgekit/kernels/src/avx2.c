/* AVX2 kernels (x86-64 with AVX2 + FMA + F16C, chosen at run time by dispatch.c; each function carries its
 * own target attribute, so the library still loads and runs its scalar path on older x86-64 CPUs).
 *
 * Direct int8 dot-product kernels ("maddubs" kernels) for every integer format on the native row layout:
 *   - a 32-byte load of a packed row holds `np` planes of 32 codes each (2-bit: 4 planes, plane p lane i is
 *     column 4i+p; 4-bit: 2 planes, low/high nibbles; base-3 ek_t1: 5 digit planes, column 5i+d; int8: 1);
 *   - instead of shuffling weights into column order, the activations are permuted once per call into the
 *     same plane order (prepare(): K bytes per token), so weights stream straight from memory, unrepacked;
 *   - _mm256_maddubs_epi16(code u8, x s8) multiplies codes (unsigned, value + offset) by activations; the
 *     offset (or zero point) is removed afterwards with the activation group sums: sum(v*x) = sum(c*x) - off*sum(x).
 *     int8 weights (code up to 255 would saturate maddubs) use values with the sign trick instead:
 *     maddubs(|v|, sign(x, v)), at most 2*128*127 = 32512 per int16 pair.
 * Sums are exact: int16 pairs stay below 2*15*127*2 planes = 7620, then widen to int32 each chunk.
 * Rows are processed one at a time (the pool splits rows), tokens in blocks of 4 so decoded planes are
 * reused: T = 1 is the decode GEMV, T > 1 the prefill GEMM.
 * One scale per row or tensor: integer accumulation over the whole row, finished exactly as scalar.c (bit-exact).
 * Per-group scales: each int32 lane covers cw/8 columns of one group, so lanes are scaled in float and summed
 * (FMA, lane order): equal to the reference up to float32 rounding of that sum.
 */
#include "ek_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define EK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TB 4 /* tokens per block */

EK_AVX2 uint64_t ek_avx2_read_sum(const uint8_t *p, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(const void *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(const void *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(const void *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)(void *)out, s);
    return out[0] + out[1] + out[2] + out[3];
}

/* Per-token absmax int8 of one row, bit-exact with the scalar version in dispatch.c (and numpy): the same
 * IEEE division (no reciprocal), floor(|v| + 0.5) with the sign put back, max|x| / 127. */
EK_AVX2 void ek_avx2_quantize_row(const float *x, int64_t k, int8_t *q, float *scale) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 mv = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) mv = _mm256_max_ps(mv, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
    float m8[8], m = 0.0f;
    _mm256_storeu_ps(m8, mv);
    for (int j = 0; j < 8; j++) m = m8[j] > m ? m8[j] : m;
    for (; i < k; i++) { float v = x[i] < 0 ? -x[i] : x[i]; m = v > m ? v : m; }
    float s = m / 127.0f, safe = s > 0.0f ? s : 1.0f;
    const __m256 vs = _mm256_set1_ps(safe), half = _mm256_set1_ps(0.5f);
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    for (i = 0; i + 32 <= k; i += 32) {
        __m256i r[4];
        for (int j = 0; j < 4; j++) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i + 8 * j), vs);
            __m256 a = _mm256_floor_ps(_mm256_add_ps(_mm256_and_ps(v, abs_mask), half));
            r[j] = _mm256_cvttps_epi32(_mm256_or_ps(a, _mm256_and_ps(v, sign_mask)));
        }
        __m256i p16a = _mm256_packs_epi32(r[0], r[1]), p16b = _mm256_packs_epi32(r[2], r[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b); /* lane-interleaved: dwords 0 4 1 5 2 6 3 7 */
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)(q + i), p8);
    }
    for (; i < k; i++) {
        float v = x[i] / safe, a = (float)(int)((v < 0 ? -v : v) + 0.5f);
        q[i] = (int8_t)(v < 0.0f ? -a : a);
    }
    *scale = s;
}

/* ---- geometry of a 32-byte chunk per format ---------------------------------------------------------- */

static int planes_of(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: return 4;
    case EK_FMT_I4: case EK_FMT_U4: return 2;
    case EK_FMT_T1: return 5;
    default: return 1; /* ek_i8 */
    }
}

/* Columns per 32-byte chunk, and whole chunks per row. */
static int64_t chunk_cols(int format) { return 32 * (int64_t)planes_of(format); }
static int64_t full_chunks(const ek_weight *w) {
    int64_t by_cols = w->cols / chunk_cols(w->format), by_bytes = w->row_bytes / 32;
    return by_cols < by_bytes ? by_cols : by_bytes;
}

/* ek_t1 digit plane: y = byte * 3^d mod 256 (repeated byte-wise *3), digit = (3y) >> 8 = (y >= 86) + (y >= 171). */
#define EK_INLINE static inline __attribute__((always_inline)) EK_AVX2

EK_INLINE __m256i base3_digit(__m256i y) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256i ys = _mm256_xor_si256(y, flip);
    __m256i m1 = _mm256_cmpgt_epi8(ys, _mm256_set1_epi8((char)(85 ^ 0x80)));
    __m256i m2 = _mm256_cmpgt_epi8(ys, _mm256_set1_epi8((char)(170 ^ 0x80)));
    return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(m1, m2));
}

EK_INLINE __m256i times3(__m256i y) { return _mm256_add_epi8(_mm256_add_epi8(y, y), y); }

/* Unsigned codes of one chunk, plane by plane (plane p, lane i = column i * np + p of the chunk). */
EK_INLINE int decode_planes(int format, const uint8_t *src, __m256i *pl) {
    __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)src);
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: {
        const __m256i m = _mm256_set1_epi8(3);
        pl[0] = _mm256_and_si256(w, m);
        pl[1] = _mm256_and_si256(_mm256_srli_epi16(w, 2), m);
        pl[2] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
        pl[3] = _mm256_and_si256(_mm256_srli_epi16(w, 6), m);
        return 4;
    }
    case EK_FMT_I4: case EK_FMT_U4: {
        const __m256i m = _mm256_set1_epi8(15);
        pl[0] = _mm256_and_si256(w, m);
        pl[1] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
        return 2;
    }
    case EK_FMT_T1: {
        __m256i y = w;
        pl[0] = base3_digit(y);
        for (int d = 1; d < 5; d++) { y = times3(y); pl[d] = base3_digit(y); }
        return 5;
    }
    default: /* ek_i8: signed values (code - 128), used with the sign trick */
        pl[0] = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
        return 1;
    }
}

/* int32 lanes of sum(code * x) over one chunk for one token; xp = permuted activations of that chunk. */
EK_INLINE __m256i chunk_dot(int format, int np, const __m256i *pl, const int8_t *xp) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (format == EK_FMT_I8) {
        __m256i x = _mm256_load_si256((const __m256i *)(const void *)xp);
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(pl[0], pl[0]), _mm256_sign_epi8(x, pl[0]));
        return _mm256_madd_epi16(p, ones);
    }
    __m256i s = _mm256_maddubs_epi16(pl[0], _mm256_load_si256((const __m256i *)(const void *)xp));
    for (int p = 1; p < np; p++)
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(pl[p], _mm256_load_si256((const __m256i *)(const void *)(xp + 32 * p))));
    return _mm256_madd_epi16(s, ones);
}

static inline EK_AVX2 int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

static inline EK_AVX2 float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- activation permutation (prepare) ----------------------------------------------------------------- */

typedef struct {
    int64_t chunks, xstride; /* full chunks per row; bytes per token in the permuted buffer */
} perm_info;

static perm_info perm_geometry(const ek_weight *w) {
    perm_info g = {full_chunks(w), full_chunks(w) * chunk_cols(w->format)};
    return g;
}

static size_t int_scratch(const ek_weight *w, const ek_act *a) {
    return (size_t)(perm_geometry(w).xstride * a->tokens) + 64;
}

/* One 2-bit chunk (128 columns) into 4 planes: per 128-bit lane, bytes to plane order (pshufb), dwords to
 * plane-major qwords, then a 4 x 4 qword transpose. */
EK_INLINE void permute_chunk4(const int8_t *q, int8_t *out) {
    const __m256i bytes = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                           0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i dwords = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i u[4];
    for (int j = 0; j < 4; j++)
        u[j] = _mm256_permutevar8x32_epi32(
            _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * j)), bytes), dwords);
    __m256i t0 = _mm256_unpacklo_epi64(u[0], u[1]), t1 = _mm256_unpackhi_epi64(u[0], u[1]);
    __m256i t2 = _mm256_unpacklo_epi64(u[2], u[3]), t3 = _mm256_unpackhi_epi64(u[2], u[3]);
    _mm256_storeu_si256((__m256i *)(void *)out, _mm256_permute2x128_si256(t0, t2, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(out + 32), _mm256_permute2x128_si256(t1, t3, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(out + 64), _mm256_permute2x128_si256(t0, t2, 0x31));
    _mm256_storeu_si256((__m256i *)(void *)(out + 96), _mm256_permute2x128_si256(t1, t3, 0x31));
}

/* One 4-bit chunk (64 columns) into even / odd column planes. */
EK_INLINE void permute_chunk2(const int8_t *q, int8_t *out) {
    const __m256i bytes = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256i a = _mm256_permute4x64_epi64(
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)q), bytes), 0xD8);
    __m256i b = _mm256_permute4x64_epi64(
        _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(q + 32)), bytes), 0xD8);
    _mm256_storeu_si256((__m256i *)(void *)out, _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(out + 32), _mm256_permute2x128_si256(a, b, 0x31));
}

/* xperm[t][c * cw + p * 32 + i] = q[t][c * cw + i * np + p]: the plane order decode_planes produces. */
static EK_AVX2 void permute_activations(const ek_weight *w, const ek_act *a, void *scratch) {
    perm_info g = perm_geometry(w);
    int np = planes_of(w->format);
    int64_t cw = chunk_cols(w->format);
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        int8_t *out = (int8_t *)scratch + t * g.xstride;
        if (np == 4 || np == 2) {
            for (int64_t c = 0; c < g.chunks; c++) {
                if (np == 4) permute_chunk4(q + c * cw, out + c * cw);
                else permute_chunk2(q + c * cw, out + c * cw);
            }
            continue;
        }
        for (int64_t c = 0; c < g.chunks; c++)
            for (int p = 0; p < np; p++)
                for (int i = 0; i < 32; i++) out[c * cw + p * 32 + i] = q[c * cw + i * np + p];
    }
}

/* ---- row kernels -------------------------------------------------------------------------------------- */

/* Per-row constants: the code offset (or zero point) per group, removed with the activation group sums. */
EK_INLINE int32_t group_offset(const ek_weight *w, int64_t r, int64_t g, int64_t groups) {
    if (w->format == EK_FMT_I8) return 0; /* value-based: no offset */
    return w->zeros ? w->zeros[r * groups + g] : ek_format_offset(w->format);
}

/* Raw-code dot of the tail columns [c0, cols) of row r for token t, per group, added to acc_g (int). */
static void tail_dot(const ek_weight *w, const ek_act *a, int64_t r, int64_t c0, int64_t t, int32_t *acc) {
    int8_t vals[160];
    int64_t n = w->cols - c0;
    if (n <= 0) return;
    ek_decode_row_values(w->format, w->data + r * w->row_bytes, c0, n, vals);
    int bias = w->format == EK_FMT_I8 ? 0 : ek_format_offset(w->format); /* back to codes (ek_u*: 0) */
    const int8_t *q = a->q + t * a->cols;
    for (int64_t k = 0; k < n; k++) acc[(c0 + k) / w->group] += ((int32_t)vals[k] + bias) * q[c0 + k];
}

/* One scale per row or per tensor: exact int32 sums over the row for NB tokens [t0, t0 + NB), finished like
 * scalar.c. `format` and NB are compile-time constants in every instantiation (the switch in decode_planes
 * and the token loop fold away; acc stays in registers). */
EK_INLINE void single_block(const int format, const int NB, const ek_weight *w, const ek_act *a,
                            const int8_t *xbase, int64_t xstride, int64_t chunks, int64_t r, int64_t t0,
                            float *y, int64_t ldy) {
    const int64_t cw = 32 * (int64_t)planes_of(format);
    const uint8_t *row = w->data + r * w->row_bytes;
    __m256i acc[TB];
    for (int b = 0; b < NB; b++) acc[b] = _mm256_setzero_si256();
    for (int64_t c = 0; c < chunks; c++) {
        __m256i pl[5];
        int np = decode_planes(format, row + c * 32, pl);
        for (int b = 0; b < NB; b++)
            acc[b] = _mm256_add_epi32(acc[b], chunk_dot(format, np, pl, xbase + b * xstride + c * cw));
    }
    int32_t off = group_offset(w, r, 0, 1);
    for (int b = 0; b < NB; b++) {
        int64_t t = t0 + b;
        int32_t s = hsum_epi32(acc[b]);
        tail_dot(w, a, r, chunks * cw, t, &s);
        s -= off * a->gsum[t];
        float as = a->scale[t];
        y[t * ldy + r] = w->per_tensor ? ((float)s * as) * w->scales[0] : ((float)s * w->scales[r]) * as;
    }
}

/* Lane scales of chunk c: lane j covers columns c*cw + j*cw/8 .. of group (c*cw + j*cw/8) / group; a chunk
 * spans cw/group (1, 2 or 4) groups, loaded and spread over the lanes by `spread`. */
EK_INLINE __m256 lane_scales(const float *srow, int64_t first_group, int n_scales, __m256i spread) {
    if (n_scales <= 1) return _mm256_broadcast_ss(srow + first_group);
    __m128 v = n_scales == 2 ? _mm_castpd_ps(_mm_load_sd((const double *)(const void *)(srow + first_group)))
                             : _mm_loadu_ps(srow + first_group);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v), spread);
}

/* sum_g (float)(c_g * gsum_g) * s_g with c_g the code offset or zero point of group g of row r: what the
 * unsigned codes added to every group, removed in one vectorized pass (8 groups per step). */
EK_INLINE float group_correction(const ek_weight *w, int64_t r, int64_t groups, const int32_t *gs,
                                 const float *srow) {
    const uint8_t *zeros = w->zeros ? w->zeros + r * groups : NULL;
    __m256i off = _mm256_set1_epi32(ek_format_offset(w->format));
    __m256 acc = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
        __m256i c = zeros ? _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(zeros + g))) : off;
        __m256i prod = _mm256_mullo_epi32(c, _mm256_loadu_si256((const __m256i *)(const void *)(gs + g)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(prod), _mm256_loadu_ps(srow + g), acc);
    }
    float sum = hsum_ps(acc);
    for (; g < groups; g++) sum += (float)((zeros ? zeros[g] : ek_format_offset(w->format)) * gs[g]) * srow[g];
    return sum;
}

/* Per-group scales: lanes scaled in float (FMA) for NB tokens [t0, t0 + NB). */
EK_INLINE void group_block(const int format, const int NB, const ek_weight *w, const ek_act *a,
                           const int8_t *xbase, int64_t xstride, int64_t chunks, int64_t r, int64_t t0,
                           float *y, int64_t ldy) {
    const int64_t cw = 32 * (int64_t)planes_of(format), groups = w->cols / w->group;
    const uint8_t *row = w->data + r * w->row_bytes;
    const float *srow = w->scales + r * groups;
    int n_scales = w->group >= cw ? 1 : (int)(cw / w->group);
    int lanes_per_group = 8 / (n_scales > 0 ? n_scales : 1);
    __m256i spread = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    spread = lanes_per_group == 4 ? _mm256_srli_epi32(spread, 2)
           : lanes_per_group == 2 ? _mm256_srli_epi32(spread, 1) : spread;
    __m256 acc[TB];
    for (int b = 0; b < NB; b++) acc[b] = _mm256_setzero_ps();
    for (int64_t c = 0; c < chunks; c++) {
        __m256i pl[5];
        int np = decode_planes(format, row + c * 32, pl);
        __m256 sv = lane_scales(srow, c * cw / w->group, n_scales, spread);
        for (int b = 0; b < NB; b++) {
            __m256i d = chunk_dot(format, np, pl, xbase + b * xstride + c * cw);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sv, acc[b]);
        }
    }
    int32_t tail[8]; /* groups touched by a tail of < 160 columns, groups >= 32 */
    int64_t first = chunks * cw / w->group;
    for (int b = 0; b < NB; b++) {
        int64_t t = t0 + b;
        float sum = hsum_ps(acc[b]);
        for (int64_t k = first; k < groups; k++) tail[k - first] = 0;
        tail_dot(w, a, r, chunks * cw, t, tail - first);
        for (int64_t k = first; k < groups; k++) sum += (float)tail[k - first] * srow[k];
        if (format != EK_FMT_I8) sum -= group_correction(w, r, groups, a->gsum + t * groups, srow);
        y[t * ldy + r] = sum * a->scale[t];
    }
}

/* Rows [r0, r1) for all tokens: blocks of TB tokens, then single tokens (T = 1 decode is the NB = 1 path). */
EK_INLINE void rows_int_body(const int format, const ek_weight *w, const ek_act *a, const void *scratch,
                             float *y, int64_t ldy, int64_t r0, int64_t r1) {
    perm_info g = perm_geometry(w);
    const int8_t *x = (const int8_t *)scratch;
    int single = w->group == w->cols;
    for (int64_t r = r0; r < r1; r++) {
        int64_t t0 = 0;
        for (; t0 + TB <= a->tokens; t0 += TB) {
            if (single) single_block(format, TB, w, a, x + t0 * g.xstride, g.xstride, g.chunks, r, t0, y, ldy);
            else group_block(format, TB, w, a, x + t0 * g.xstride, g.xstride, g.chunks, r, t0, y, ldy);
        }
        for (; t0 < a->tokens; t0++) {
            if (single) single_block(format, 1, w, a, x + t0 * g.xstride, g.xstride, g.chunks, r, t0, y, ldy);
            else group_block(format, 1, w, a, x + t0 * g.xstride, g.xstride, g.chunks, r, t0, y, ldy);
        }
    }
}

#define ROWS_FN(name, fmt)                                                                                     \
    static EK_AVX2 void name(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy, \
                             int64_t r0, int64_t r1) {                                                         \
        rows_int_body(fmt, w, a, scratch, y, ldy, r0, r1);                                                     \
    }
ROWS_FN(rows_t2, EK_FMT_T2)
ROWS_FN(rows_t1, EK_FMT_T1)
ROWS_FN(rows_i2, EK_FMT_I2)
ROWS_FN(rows_i4, EK_FMT_I4)
ROWS_FN(rows_u2, EK_FMT_U2)
ROWS_FN(rows_u4, EK_FMT_U4)
ROWS_FN(rows_i8, EK_FMT_I8)

/* One scale per row/tensor: the exact single-sum kernel; per-group scales: the lane-scaled kernel, if the
 * groups line up with the SIMD lanes (a power of two of at least cw / 8 columns). */
static int supports_int(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    int64_t cw = chunk_cols(w->format), gsz = w->group;
    if (gsz == w->cols) return 1;
    if (gsz & (gsz - 1)) { *reason = "group size is not a power of two"; return 0; }
    if (gsz < cw / 8) { *reason = "group smaller than the columns of one SIMD lane"; return 0; }
    if (w->format == EK_FMT_T1) {
        *reason = "ek_t1 with per-group scales: its 160-column base-3 chunks (20 columns per lane) straddle groups";
        return 0;
    }
    return 1;
}

/* ---- float weights ------------------------------------------------------------------------------------ */

static inline EK_AVX2 __m256 load_w8(int format, const uint8_t *row, int64_t k) {
    if (format == EK_FMT_F32) return _mm256_loadu_ps((const float *)(const void *)row + k);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)(const void *)row + k)));
}

static EK_AVX2 void rows_float(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                               int64_t r0, int64_t r1) {
    (void)scratch;
    int64_t cols = w->cols, main_cols = cols / 8 * 8;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + r * w->row_bytes;
        for (int64_t t0 = 0; t0 < a->tokens; t0 += TB) {
            int nb = a->tokens - t0 < TB ? (int)(a->tokens - t0) : TB;
            __m256 acc[TB];
            for (int b = 0; b < TB; b++) acc[b] = _mm256_setzero_ps();
            for (int64_t k = 0; k < main_cols; k += 8) {
                __m256 wv = load_w8(w->format, row, k);
                for (int b = 0; b < nb; b++)
                    acc[b] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a->x + (t0 + b) * cols + k), acc[b]);
            }
            for (int b = 0; b < nb; b++) {
                float s = hsum_ps(acc[b]);
                const float *x = a->x + (t0 + b) * cols;
                for (int64_t k = main_cols; k < cols; k++)
                    s += (w->format == EK_FMT_F32 ? ((const float *)(const void *)row)[k]
                                                  : ek_half_to_float(((const uint16_t *)(const void *)row)[k])) * x[k];
                y[(t0 + b) * ldy + r] = s;
            }
        }
    }
}

/* ---- kernel table ------------------------------------------------------------------------------------- */

#define INT_KERNEL(fmt, tag) \
    {#tag "_maddubs_avx2", fmt, EK_ACT_I8, EK_LAYOUT_NATIVE, 1, supports_int, int_scratch, permute_activations, rows_##tag}

static const ek_kernel int_kernels[] = {
    INT_KERNEL(EK_FMT_T2, t2), INT_KERNEL(EK_FMT_T1, t1), INT_KERNEL(EK_FMT_I2, i2), INT_KERNEL(EK_FMT_I4, i4),
    INT_KERNEL(EK_FMT_U2, u2), INT_KERNEL(EK_FMT_U4, u4), INT_KERNEL(EK_FMT_I8, i8),
};

static const ek_kernel float_kernels[2] = {
    {"f16_fma_avx2", EK_FMT_F16, EK_ACT_F32, EK_LAYOUT_NATIVE, 1, NULL, NULL, NULL, rows_float},
    {"f32_fma_avx2", EK_FMT_F32, EK_ACT_F32, EK_LAYOUT_NATIVE, 1, NULL, NULL, NULL, rows_float},
};

const ek_kernel *ek_avx2_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (layout != EK_LAYOUT_NATIVE) return NULL;
    if (format == EK_FMT_F16 || format == EK_FMT_F32)
        return act_kind == EK_ACT_F32 ? &float_kernels[format - EK_FMT_F16] : NULL;
    if (act_kind != EK_ACT_I8) return NULL;
    for (size_t i = 0; i < sizeof int_kernels / sizeof int_kernels[0]; i++)
        if (int_kernels[i].format == format) return &int_kernels[i];
    return NULL;
}
#endif
