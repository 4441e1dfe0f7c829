/* NEON direct int8 kernels ("sdot" kernels): every integer format x int8 activations, T = 1 and T > 1.
 *
 * Exact int32 sums of value x activation per group with vdotq_s32 (4 int8 products per int32 lane; |v| <= 128,
 * |q| <= 127), then the float epilogue of scalar.c's finish_output operation for operation (groups added in
 * order, no fused multiply-add: the build passes -ffp-contract=off), so results are bit-exact with the numpy
 * reference for every scale kind. Two modes, chosen per weight (plane_mode):
 *   - plane order (the fast path: ek_t2/t1/i2/u2/i4/u4/i8 with one scale per row or tensor, and every group
 *     that covers whole int32 lanes): the packed bytes are split into bit planes and dotted directly against
 *     activations that prepare() permuted once per call into the same plane order (see below);
 *   - column order (ek_i3/u3, ek_t1 with per-group scales, 2-bit groups of 32 in rows of partial chunks, rows
 *     shorter than one chunk): each
 *     row is decoded once into int8 values [cols], exactly what ek_decode_row_values writes (so scalar.c is the
 *     decoder's oracle too), and dotted group by group; every group is a run of whole 16-byte vectors.
 * Tokens go in blocks of 4, so one decoded chunk feeds 4 sdots per plane in the prefill GEMM.
 *
 * vdotq_s32 needs armv8.2-a+dotprod: this file is compiled for it (pragma below) and only ever runs when
 * ek_neon_supported() saw HWCAP_ASIMDDP.
 */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_DOTPROD) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#elif !defined(__ARM_FEATURE_DOTPROD) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#define EK_NEON_CLANG_PUSHED 1
#endif

#include "ek_neon.h"

#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>

#define TB 4 /* tokens per block */

/* ---- decoding one row into int8 values, column order ------------------------------------------------ */

/* 2-bit codes: 16 bytes = 64 columns, byte i holds columns 4i..4i+3 in bits 0-1, 2-3, 4-5, 6-7. The four
 * bit-pair planes are interleaved back into column order by two rounds of zips (8-bit, then 16-bit). */
static inline void decode_2bit(const uint8_t *src, uint8x16_t off, int8_t *out) {
    const uint8x16_t m = vdupq_n_u8(3);
    uint8x16_t b = vld1q_u8(src);
    uint8x16_t p0 = vandq_u8(b, m), p1 = vandq_u8(vshrq_n_u8(b, 2), m);
    uint8x16_t p2 = vandq_u8(vshrq_n_u8(b, 4), m), p3 = vshrq_n_u8(b, 6);
    uint16x8_t a_lo = vreinterpretq_u16_u8(vzip1q_u8(p0, p1)), a_hi = vreinterpretq_u16_u8(vzip2q_u8(p0, p1));
    uint16x8_t b_lo = vreinterpretq_u16_u8(vzip1q_u8(p2, p3)), b_hi = vreinterpretq_u16_u8(vzip2q_u8(p2, p3));
    vst1q_s8(out, vreinterpretq_s8_u8(vsubq_u8(vreinterpretq_u8_u16(vzip1q_u16(a_lo, b_lo)), off)));
    vst1q_s8(out + 16, vreinterpretq_s8_u8(vsubq_u8(vreinterpretq_u8_u16(vzip2q_u16(a_lo, b_lo)), off)));
    vst1q_s8(out + 32, vreinterpretq_s8_u8(vsubq_u8(vreinterpretq_u8_u16(vzip1q_u16(a_hi, b_hi)), off)));
    vst1q_s8(out + 48, vreinterpretq_s8_u8(vsubq_u8(vreinterpretq_u8_u16(vzip2q_u16(a_hi, b_hi)), off)));
}

/* 4-bit codes: 16 bytes = 32 columns, column 2i in the low nibble of byte i. */
static inline void decode_4bit(const uint8_t *src, uint8x16_t off, int8_t *out) {
    uint8x16_t b = vld1q_u8(src);
    uint8x16_t lo = vandq_u8(b, vdupq_n_u8(15)), hi = vshrq_n_u8(b, 4);
    vst1q_s8(out, vreinterpretq_s8_u8(vsubq_u8(vzip1q_u8(lo, hi), off)));
    vst1q_s8(out + 16, vreinterpretq_s8_u8(vsubq_u8(vzip2q_u8(lo, hi), off)));
}

/* 3-bit codes: 6 bytes = 16 columns; code j sits in bits 3j..3j+2, i.e. in the 16-bit little-endian word
 * at byte (3j) >> 3, shifted right by (3j) & 7. vqtbl1q_u8 gathers that word per lane, vshlq_u16 with a
 * negative count shifts each lane by its own amount. Reads 16 bytes from src (callers check the row). */
static inline void decode_3bit(const uint8_t *src, uint8x16_t off, int8_t *out) {
    static const uint8_t word_bytes[32] = {0, 1, 0, 1, 0, 1, 1, 2, 1, 2, 1, 2, 2, 3, 2, 3,
                                           3, 4, 3, 4, 3, 4, 4, 5, 4, 5, 4, 5, 5, 6, 5, 6};
    static const int16_t shifts[8] = {0, -3, -6, -1, -4, -7, -2, -5}; /* the same for codes 0-7 and 8-15 */
    const int16x8_t sh = vld1q_s16(shifts);
    const uint16x8_t m = vdupq_n_u16(7);
    uint8x16_t b = vld1q_u8(src);
    uint16x8_t lo = vreinterpretq_u16_u8(vqtbl1q_u8(b, vld1q_u8(word_bytes)));
    uint16x8_t hi = vreinterpretq_u16_u8(vqtbl1q_u8(b, vld1q_u8(word_bytes + 16)));
    uint8x16_t codes = vcombine_u8(vmovn_u16(vandq_u16(vshlq_u16(lo, sh), m)),
                                   vmovn_u16(vandq_u16(vshlq_u16(hi, sh), m)));
    vst1q_s8(out, vreinterpretq_s8_u8(vsubq_u8(codes, off)));
}

/* Digit of a base-3 byte after multiplying by 3^d (mod 256): (3y) >> 8 (layouts.py, TQ1_0), computed as
 * ((y + (y >> 1)) >> 1) >> 6 without leaving 8 bits: that expression is monotone in y and crosses 64 at
 * y = 86 and 128 at y = 171, exactly where (3y) >> 8 steps to 1 and 2. */
static inline uint8x16_t base3_digit(uint8x16_t y) { return vshrq_n_u8(vhaddq_u8(y, vshrq_n_u8(y, 1)), 6); }

/* ek_t1: 16 bytes = 80 columns; byte i holds columns 5i..5i+4 as digits 0..4. Digit planes p_d (lane i =
 * column 5i+d) are gathered into column order with a 64-byte table lookup over p0..p3 and one tbx for p4
 * (index 255 = "keep"): output vector o lane l is column 16o+l = 5i+d. */
static inline void decode_base3(const uint8_t *src, int8_t *out) {
    static const uint8_t from_p0_3[5][16] = {
        {0, 16, 32, 48, 255, 1, 17, 33, 49, 255, 2, 18, 34, 50, 255, 3},
        {19, 35, 51, 255, 4, 20, 36, 52, 255, 5, 21, 37, 53, 255, 6, 22},
        {38, 54, 255, 7, 23, 39, 55, 255, 8, 24, 40, 56, 255, 9, 25, 41},
        {57, 255, 10, 26, 42, 58, 255, 11, 27, 43, 59, 255, 12, 28, 44, 60},
        {255, 13, 29, 45, 61, 255, 14, 30, 46, 62, 255, 15, 31, 47, 63, 255}};
    static const uint8_t from_p4[5][16] = {
        {255, 255, 255, 255, 0, 255, 255, 255, 255, 1, 255, 255, 255, 255, 2, 255},
        {255, 255, 255, 3, 255, 255, 255, 255, 4, 255, 255, 255, 255, 5, 255, 255},
        {255, 255, 6, 255, 255, 255, 255, 7, 255, 255, 255, 255, 8, 255, 255, 255},
        {255, 9, 255, 255, 255, 255, 10, 255, 255, 255, 255, 11, 255, 255, 255, 255},
        {12, 255, 255, 255, 255, 13, 255, 255, 255, 255, 14, 255, 255, 255, 255, 15}};
    const uint8x16_t three = vdupq_n_u8(3), one = vdupq_n_u8(1);
    uint8x16_t y = vld1q_u8(src);
    uint8x16x4_t p;
    p.val[0] = base3_digit(y);
    y = vmulq_u8(y, three), p.val[1] = base3_digit(y);
    y = vmulq_u8(y, three), p.val[2] = base3_digit(y);
    y = vmulq_u8(y, three), p.val[3] = base3_digit(y);
    y = vmulq_u8(y, three);
    uint8x16_t p4 = base3_digit(y);
    for (int o = 0; o < 5; o++) {
        uint8x16_t codes = vqtbx1q_u8(vqtbl4q_u8(p, vld1q_u8(from_p0_3[o])), p4, vld1q_u8(from_p4[o]));
        vst1q_s8(out + 16 * o, vreinterpretq_s8_u8(vsubq_u8(codes, one)));
    }
}

static inline void decode_int8(const uint8_t *src, int8_t *out) {
    vst1q_s8(out, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(src), vdupq_n_u8(0x80)))); /* code - 128 */
}

/* Whole SIMD chunks of a row: `bytes` packed bytes become `cols` columns; the rest goes to the scalar decoder. */
typedef struct { int64_t bytes, cols, read; } chunk_shape;

static chunk_shape shape_of(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: return (chunk_shape){16, 64, 16};
    case EK_FMT_I4: case EK_FMT_U4: return (chunk_shape){16, 32, 16};
    case EK_FMT_I3: case EK_FMT_U3: return (chunk_shape){6, 16, 16}; /* reads 16 bytes for 6 */
    case EK_FMT_T1: return (chunk_shape){16, 80, 16};
    default: return (chunk_shape){16, 16, 16};                        /* ek_i8 */
    }
}

void ek_neon_decode_row(int format, const uint8_t *row, int64_t row_bytes, int64_t cols, int8_t *out) {
    chunk_shape s = shape_of(format);
    const uint8x16_t off = vdupq_n_u8((uint8_t)ek_format_offset(format));
    int64_t c = 0;
    for (; (c + 1) * s.cols <= cols && c * s.bytes + s.read <= row_bytes; c++) {
        const uint8_t *src = row + c * s.bytes;
        int8_t *dst = out + c * s.cols;
        switch (format) {
        case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: decode_2bit(src, off, dst); break;
        case EK_FMT_I4: case EK_FMT_U4: decode_4bit(src, off, dst); break;
        case EK_FMT_I3: case EK_FMT_U3: decode_3bit(src, off, dst); break;
        case EK_FMT_T1: decode_base3(src, dst); break;
        default: decode_int8(src, dst); break;
        }
    }
    if (c * s.cols < cols) ek_decode_row_values(format, row, c * s.cols, cols - c * s.cols, out + c * s.cols);
}

/* ---- dot products ----------------------------------------------------------------------------------- */

/* Exact sums of v[k] * x_b[k] over k in [k0, k0 + n) for NB tokens (x_b = xs[b]); NB is a compile-time
 * constant in both instantiations, so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void dot_span(const int NB, const int8_t *v, const int8_t *const *xs,
                                                           int64_t k0, int64_t n, int32_t *out) {
    int32x4_t acc[TB], acc2[TB];
    for (int b = 0; b < NB; b++) acc[b] = vdupq_n_s32(0), acc2[b] = vdupq_n_s32(0);
    int64_t k = k0, end16 = k0 + n / 16 * 16;
    for (; k + 32 <= end16; k += 32) { /* two independent chains per token hide the sdot latency */
        int8x16_t w0 = vld1q_s8(v + k), w1 = vld1q_s8(v + k + 16);
        for (int b = 0; b < NB; b++) {
            acc[b] = vdotq_s32(acc[b], w0, vld1q_s8(xs[b] + k));
            acc2[b] = vdotq_s32(acc2[b], w1, vld1q_s8(xs[b] + k + 16));
        }
    }
    for (; k < end16; k += 16) {
        int8x16_t w0 = vld1q_s8(v + k);
        for (int b = 0; b < NB; b++) acc[b] = vdotq_s32(acc[b], w0, vld1q_s8(xs[b] + k));
    }
    for (int b = 0; b < NB; b++) {
        int32_t s = vaddvq_s32(vaddq_s32(acc[b], acc2[b]));
        for (int64_t j = end16; j < k0 + n; j++) s += (int32_t)v[j] * xs[b][j]; /* per-row scale, cols % 16 */
        out[b] = s;
    }
}

/* scalar.c's finish_output, operation for operation. */
static inline float finish_output(const ek_weight *w, int64_t r, const int32_t *acc, int64_t groups, float a_scale) {
    if (w->per_tensor) return ((float)acc[0] * a_scale) * w->scales[0];
    const float *s = w->scales + r * groups;
    float sum = 0.0f;
    for (int64_t g = 0; g < groups; g++) sum += (float)acc[g] * s[g];
    return sum * a_scale;
}

/* NB tokens [t0, t0 + NB) of one decoded row: per-group exact sums acc [NB][groups], then the epilogue. */
static inline __attribute__((always_inline)) void token_block(const int NB, const ek_weight *w, const ek_act *a,
                                                              const int8_t *vals, int64_t r, int64_t t0,
                                                              int32_t *acc, float *y, int64_t ldy) {
    int64_t cols = w->cols, group = w->group, groups = cols / group;
    const int8_t *xs[TB];
    for (int b = 0; b < NB; b++) xs[b] = a->q + (t0 + b) * cols;
    const uint8_t *zeros = w->zeros ? w->zeros + r * groups : NULL;
    for (int64_t g = 0; g < groups; g++) {
        int32_t s[TB];
        dot_span(NB, vals, xs, g * group, group, s);
        for (int b = 0; b < NB; b++)
            acc[b * groups + g] = zeros ? s[b] - (int32_t)zeros[g] * a->gsum[(t0 + b) * groups + g] : s[b];
    }
    for (int b = 0; b < NB; b++)
        y[(t0 + b) * ldy + r] = finish_output(w, r, acc + b * groups, groups, a->scale[t0 + b]);
}

/* Column-order mode, rows [r0, r1): decode a row once into int8 values, then every token. */
static void rows_column_order(const ek_weight *w, const ek_act *a, float *y, int64_t ldy, int64_t r0, int64_t r1) {
    int64_t cols = w->cols, groups = cols / w->group;
    int8_t *vals = malloc((size_t)cols);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(groups * TB));
    if (!vals || !acc) { /* out of memory: NaN rather than stale values, as scalar.c does */
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < a->tokens; t++) y[t * ldy + r] = __builtin_nanf("");
        free(vals), free(acc);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        ek_neon_decode_row(w->format, w->data + r * w->row_bytes, w->row_bytes, cols, vals);
        int64_t t0 = 0;
        for (; t0 + TB <= a->tokens; t0 += TB) token_block(TB, w, a, vals, r, t0, acc, y, ldy);
        for (; t0 < a->tokens; t0++) token_block(1, w, a, vals, r, t0, acc, y, ldy);
    }
    free(vals);
    free(acc);
}

/* ---- plane-order mode: codes dotted straight from the packed bytes ------------------------------------
 *
 * The decode GEMV's fast path. A 16-byte load of a packed row holds `np` planes of 16 codes (2-bit: plane p
 * lane i = column 4i+p of the 64-column chunk; 4-bit: 2 nibble planes, column 2i+p; ek_t1: 5 digit planes,
 * column 5i+d; ek_i8: 1 plane, values), so instead of interleaving codes back into column order, prepare()
 * permutes each token's activations once into the same plane order (K bytes per token) and every plane is
 * one vdotq_s32: per 64 columns of ek_t2 that is 1 load, 7 bit operations and 4 sdots (+4 activation loads),
 * against 36 instructions in column-order mode. The codes are unsigned (value + offset, or the raw code of
 * ek_u*); sum(v q) = sum(c q) - offset * sum(q) with the group sums of ek_linear. int32 lane j of an sdot sums
 * bytes 4j..4j+3 of every plane (2-bit: 16 columns), so a group must cover whole lanes: one scale per row or
 * tensor, groups that are multiples of the chunk (every 2-bit, 4-bit and int8 group of 64+; 4-bit and int8 of
 * 32), or 2-bit groups of 32 (two lanes each) in rows of whole chunks. ek_t1's 80-column chunks (20-column
 * lanes) only take one scale per row or tensor. Other shapes (ek_i3/u3, ek_t1 with groups, rows without one
 * full chunk) use column order. */

static int planes_of(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: return 4;
    case EK_FMT_I4: case EK_FMT_U4: return 2;
    case EK_FMT_T1: return 5;
    case EK_FMT_I8: return 1;
    default: return 0; /* 3-bit codes straddle bytes: column order only */
    }
}

static int64_t full_chunks(const ek_weight *w) {
    int64_t by_cols = w->cols / (16 * planes_of(w->format)), by_bytes = w->row_bytes / 16;
    return by_cols < by_bytes ? by_cols : by_bytes;
}

static int plane_mode(const ek_weight *w) {
    int np = planes_of(w->format);
    if (np == 0 || full_chunks(w) == 0) return 0;
    if (w->group == w->cols) return 1;
    if (np == 4 && w->group == 32) return w->cols % 64 == 0; /* half a chunk each: split by int32 lanes */
    return w->format != EK_FMT_T1 && w->group % (16 * np) == 0;
}

int ek_neon_sdot_plane_mode(const ek_weight *w) { return plane_mode(w); }

static size_t sdot_scratch(const ek_weight *w, const ek_act *a) {
    return plane_mode(w) ? (size_t)(full_chunks(w) * 16 * planes_of(w->format) * a->tokens) : 0;
}

/* xperm[t][c * cw + 16 p + i] = q[t][c * cw + np * i + p] over the full chunks (cw = 16 np columns). */
static void sdot_prepare(const ek_weight *w, const ek_act *a, void *scratch) {
    if (!plane_mode(w)) return;
    int np = planes_of(w->format);
    int64_t cw = 16 * np, n = full_chunks(w) * cw;
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        int8_t *out = (int8_t *)scratch + t * n;
        for (int64_t c = 0; c < n; c += cw) {
            if (np == 4) { /* vld4q de-interleaves 64 bytes exactly so: val[p] lane i = byte 4i + p */
                int8x16x4_t v = vld4q_s8(q + c);
                for (int p = 0; p < 4; p++) vst1q_s8(out + c + 16 * p, v.val[p]);
            } else if (np == 2) {
                int8x16x2_t v = vld2q_s8(q + c);
                vst1q_s8(out + c, v.val[0]), vst1q_s8(out + c + 16, v.val[1]);
            } else if (np == 1) {
                vst1q_s8(out + c, vld1q_s8(q + c));
            } else {
                for (int p = 0; p < np; p++)
                    for (int i = 0; i < 16; i++) out[c + 16 * p + i] = q[c + np * i + p];
            }
        }
    }
}

/* The planes of one 16-byte chunk: codes (value + offset; ek_u*: raw), ek_i8: values. */
static inline __attribute__((always_inline)) int decode_planes(const int format, const uint8_t *src, int8x16_t *pl) {
    uint8x16_t b = vld1q_u8(src);
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: {
        const uint8x16_t m = vdupq_n_u8(3);
        pl[0] = vreinterpretq_s8_u8(vandq_u8(b, m));
        pl[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 2), m));
        pl[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 4), m));
        pl[3] = vreinterpretq_s8_u8(vshrq_n_u8(b, 6));
        return 4;
    }
    case EK_FMT_I4: case EK_FMT_U4:
        pl[0] = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15)));
        pl[1] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
        return 2;
    case EK_FMT_T1: {
        const uint8x16_t three = vdupq_n_u8(3);
        pl[0] = vreinterpretq_s8_u8(base3_digit(b));
        for (int d = 1; d < 5; d++) b = vmulq_u8(b, three), pl[d] = vreinterpretq_s8_u8(base3_digit(b));
        return 5;
    }
    default:
        pl[0] = vreinterpretq_s8_u8(veorq_u8(b, vdupq_n_u8(0x80)));
        return 1;
    }
}

/* What the codes add to every group: the code offset or the zero point (ek_i8 planes are values: 0). */
static inline int32_t code_bias(const ek_weight *w, int64_t r, int64_t g, int64_t groups) {
    if (w->format == EK_FMT_I8) return 0;
    return w->zeros ? w->zeros[r * groups + g] : ek_format_offset(w->format);
}

/* Codes x q over the columns [c0, cols) past the full chunks (one scale per row only; < 80 columns). */
static int32_t tail_codes_dot(const ek_weight *w, const uint8_t *row, int64_t c0, const int8_t *q) {
    int8_t vals[80];
    int64_t n = w->cols - c0;
    if (n <= 0) return 0;
    ek_decode_row_values(w->format, row, c0, n, vals);
    int32_t bias = w->format == EK_FMT_I8 ? 0 : ek_format_offset(w->format), s = 0; /* back to codes */
    for (int64_t k = 0; k < n; k++) s += ((int32_t)vals[k] + bias) * q[c0 + k];
    return s;
}

/* Raw code sums of NB tokens over chunks [c0, c1) of one row (one group, or the whole row). */
static inline __attribute__((always_inline)) int32x4_t *chunk_sums(const int format, const int NB, const uint8_t *row,
                                                                    const int8_t *xperm, int64_t xstride, int64_t t0,
                                                                    int64_t c0, int64_t c1, int32x4_t *sum) {
    const int64_t cw = 16 * (int64_t)planes_of(format);
    int32x4_t odd[TB]; /* two chains per token hide the sdot latency */
    for (int b = 0; b < NB; b++) sum[b] = odd[b] = vdupq_n_s32(0);
    for (int64_t c = c0; c < c1; c++) {
        int8x16_t pl[5];
        int np = decode_planes(format, row + 16 * c, pl);
        for (int b = 0; b < NB; b++) {
            const int8_t *x = xperm + (t0 + b) * xstride + c * cw;
            for (int p = 0; p < np; p++) {
                if (p & 1) odd[b] = vdotq_s32(odd[b], pl[p], vld1q_s8(x + 16 * p));
                else sum[b] = vdotq_s32(sum[b], pl[p], vld1q_s8(x + 16 * p));
            }
        }
    }
    for (int b = 0; b < NB; b++) sum[b] = vaddq_s32(sum[b], odd[b]);
    return sum;
}

/* NB tokens [t0, t0 + NB) of row r: exact group sums from the planes, then scalar.c's epilogue.
 * acc [NB][groups]. Groups of whole chunks sum their chunks' lanes; 2-bit groups of 32 are half a chunk:
 * int32 lanes 0-1 of a chunk hold its first 32 columns (bytes 0-7), lanes 2-3 the next 32 (vpaddq). */
static inline __attribute__((always_inline)) void plane_block(const int format, const int NB, const ek_weight *w,
                                                              const ek_act *a, const int8_t *xperm, int64_t xstride,
                                                              int64_t r, int64_t t0, int32_t *acc, float *y,
                                                              int64_t ldy) {
    const int64_t cw = 16 * (int64_t)planes_of(format), groups = w->cols / w->group, chunks = full_chunks(w);
    const uint8_t *row = w->data + r * w->row_bytes;
    int32x4_t sum[TB];
    if (w->group < cw) { /* 2-bit, groups of 32: two groups per chunk */
        for (int64_t c = 0; c < chunks; c++) {
            chunk_sums(format, NB, row, xperm, xstride, t0, c, c + 1, sum);
            for (int b = 0; b < NB; b++) vst1_s32(acc + b * groups + 2 * c, vget_low_s32(vpaddq_s32(sum[b], sum[b])));
        }
    } else {
        const int64_t per_group = groups == 1 ? chunks : w->group / cw;
        for (int64_t g = 0; g < groups; g++) {
            chunk_sums(format, NB, row, xperm, xstride, t0, g * per_group, (g + 1) * per_group, sum);
            for (int b = 0; b < NB; b++) acc[b * groups + g] = vaddvq_s32(sum[b]);
        }
        if (groups == 1) /* one scale per row: the columns past the full chunks */
            for (int b = 0; b < NB; b++) acc[b] += tail_codes_dot(w, row, chunks * cw, a->q + (t0 + b) * w->cols);
    }
    for (int b = 0; b < NB; b++) {
        const int32_t *gsum = a->gsum + (t0 + b) * groups;
        for (int64_t g = 0; g < groups; g++) acc[b * groups + g] -= code_bias(w, r, g, groups) * gsum[g];
        y[(t0 + b) * ldy + r] = finish_output(w, r, acc + b * groups, groups, a->scale[t0 + b]);
    }
}

static inline __attribute__((always_inline)) void rows_plane_body(const int format, const ek_weight *w,
                                                                  const ek_act *a, const void *scratch, float *y,
                                                                  int64_t ldy, int64_t r0, int64_t r1) {
    int64_t groups = w->cols / w->group, xstride = full_chunks(w) * 16 * planes_of(format);
    int32_t acc[TB * 256], *heap = NULL, *buf = acc; /* on the stack up to 256 groups (8192 columns in groups of 32) */
    if (groups * TB > (int64_t)(sizeof acc / sizeof acc[0])) {
        if (!(heap = malloc(sizeof(int32_t) * (size_t)(groups * TB)))) {
            rows_column_order(w, a, y, ldy, r0, r1);
            return;
        }
        buf = heap;
    }
    for (int64_t r = r0; r < r1; r++) {
        int64_t t0 = 0;
        for (; t0 + TB <= a->tokens; t0 += TB) plane_block(format, TB, w, a, scratch, xstride, r, t0, buf, y, ldy);
        for (; t0 < a->tokens; t0++) plane_block(format, 1, w, a, scratch, xstride, r, t0, buf, y, ldy);
    }
    free(heap);
}

#define PLANE_ROWS(name, fmt)                                                                                  \
    static void name(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy, int64_t r0, \
                     int64_t r1) {                                                                             \
        rows_plane_body(fmt, w, a, scratch, y, ldy, r0, r1);                                                   \
    }
PLANE_ROWS(plane_rows_2bit, EK_FMT_T2) /* the decode is the same for t2 / i2 / u2: only the bias differs */
PLANE_ROWS(plane_rows_4bit, EK_FMT_I4)
PLANE_ROWS(plane_rows_base3, EK_FMT_T1)
PLANE_ROWS(plane_rows_int8, EK_FMT_I8)

void ek_neon_rows_sdot(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                       int64_t r0, int64_t r1) {
    if (!scratch || !plane_mode(w)) { rows_column_order(w, a, y, ldy, r0, r1); return; }
    switch (planes_of(w->format)) {
    case 4: plane_rows_2bit(w, a, scratch, y, ldy, r0, r1); break;
    case 2: plane_rows_4bit(w, a, scratch, y, ldy, r0, r1); break;
    case 5: plane_rows_base3(w, a, scratch, y, ldy, r0, r1); break;
    default: plane_rows_int8(w, a, scratch, y, ldy, r0, r1); break;
    }
}

#define SDOT_KERNEL(fmt, tag) \
    {#tag "_sdot_neon", fmt, EK_ACT_I8, EK_LAYOUT_NATIVE, 1, NULL, sdot_scratch, sdot_prepare, ek_neon_rows_sdot}

const ek_kernel ek_neon_sdot_kernels[] = {
    SDOT_KERNEL(EK_FMT_T2, t2), SDOT_KERNEL(EK_FMT_T1, t1), SDOT_KERNEL(EK_FMT_I2, i2), SDOT_KERNEL(EK_FMT_I3, i3),
    SDOT_KERNEL(EK_FMT_I4, i4), SDOT_KERNEL(EK_FMT_U2, u2), SDOT_KERNEL(EK_FMT_U3, u3), SDOT_KERNEL(EK_FMT_U4, u4),
    SDOT_KERNEL(EK_FMT_I8, i8),
};

#if defined(EK_NEON_CLANG_PUSHED)
#pragma clang attribute pop
#endif
#endif /* __aarch64__ */
