/* NEON lookup-table kernels for ternary weights (T-MAC / bitnet.cpp lineage), ek_t2 and ek_t1, int8 activations.
 *
 * Tables (prepare(), once per activation vector): every "slot" of two weight columns (a, b) gets the partial
 * sums of its two activations for all 16 code pairs, T[c_a + 4 c_b] = (c_a - 1) x_a + (c_b - 1) x_b, so the
 * packed codes themselves are the tbl indices:
 *   ek_t2: the low nibble of byte i is (code 4i) + 4 (code 4i+1), the high nibble the next two columns:
 *          slot 2i = columns (4i, 4i+1), slot 2i+1 = (4i+2, 4i+3) (layouts.py bit stream);
 *   ek_t1: byte i holds columns 5i..5i+4 as base-3 digits d0..d4 (TQ1_0's fixed point): slots 3i = (d0, d1),
 *          3i+1 = (d2, d3), 3i+2 = (d4, -), with the index d + 4 d' built by one shift-insert.
 * Exact integer accumulation with 8-bit tables: a pair sum needs 9 bits, so each activation is split into
 * x = 16 xh + xl (xh = x >> 4 in [-8, 7], xl = x & 15 in [0, 15]) and every slot has a low table (xl) and a
 * high table (xh) whose entries fit int8 (|2 * 15 + 2 * 15| = 60; code 3 of ek_t2 is invalid but decodes to
 * +2 as in the reference, so it is honoured). Per byte the 2 (t2) or 3 (t1) lookups are added in int8 (at most
 * 120), widened into int16 accumulators, and those are flushed into int32 as 16 * high + low at every group
 * boundary and at least every 256 bytes (256 * 120 < 32767), so nothing can overflow.
 *
 * Lookups are lane-parallel over 16 rows: vqtbl1q_u8 applies one table to 16 indices, so the 16 lanes must
 * be 16 rows at the same byte position. The native layout stores rows contiguously, so each 16 x 16 byte
 * block is transposed in registers (4 rounds of vtrn) before its lookups. Rows that do not fill a tile of
 * 16 run through the sdot kernel. The epilogue is scalar.c's finish_output, so results are bit-exact.
 *
 * Why this is not the default: measured instruction counts (neon.c's header, count_instructions.py) put it at
 * 1.8x (ek_t2) and 2.4x (ek_t1) the sdot kernel's instructions for decode. Per 16 rows x 64 columns of ek_t2
 * it runs 16 loads + 64 vtrn for the transpose, then per byte 2 index extractions, 4 table loads, 4 tbl,
 * 2 adds and 4 widening adds (~260 + flushes), where sdot needs ~16 per row; ek_t1 adds ~20 instructions of
 * digit extraction per byte vector. The tables are 16 bytes per column per token (4x the weight bytes of a
 * 16-row tile). ek_t1 with per-group scales is declined (5-column bytes straddle 32-column groups).
 */
#if defined(__aarch64__)
#include "ek_neon.h"

#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>

#define TILE 16         /* rows per tile = tbl lanes */
#define SLOT_BYTES 32   /* low table (16 int8) then high table (16 int8) */
#define FLUSH_BYTES 256 /* int16 budget: 256 bytes x at most 120 per byte */

static int slots_per_byte(int format) { return format == EK_FMT_T2 ? 2 : 3; }
static int cols_per_byte(int format) { return format == EK_FMT_T2 ? 4 : 5; }

/* Packed bytes per row rounded up to whole 16-byte blocks; tables exist (zero) for the padding. */
static int64_t padded_row_bytes(const ek_weight *w) { return (w->row_bytes + 15) / 16 * 16; }

static int64_t table_stride(const ek_weight *w) { /* bytes of tables per token */
    return padded_row_bytes(w) * slots_per_byte(w->format) * SLOT_BYTES;
}

static size_t lut_scratch(const ek_weight *w, const ek_act *a) { return (size_t)(table_stride(w) * a->tokens); }

/* The columns (a, b) of slot s; -1 where a slot has no column (ek_t1's single d4, or beyond the row). */
static void slot_columns(int format, int64_t s, int64_t cols, int64_t *ca, int64_t *cb) {
    int64_t a, b;
    if (format == EK_FMT_T2) a = 2 * s, b = 2 * s + 1;
    else {
        int64_t i = s / 3, k = s % 3;
        a = 5 * i + 2 * k, b = k == 2 ? -1 : a + 1;
    }
    *ca = a < cols ? a : -1;
    *cb = b >= 0 && b < cols ? b : -1;
}

/* tables [T][slots][low 16 | high 16]: entry c_a + 4 c_b = (c_a - 1) x_a + (c_b - 1) x_b on x's nibbles. */
static void lut_prepare(const ek_weight *w, const ek_act *a, void *scratch) {
    static const int8_t w_first[16] = {-1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2, -1, 0, 1, 2};
    static const int8_t w_second[16] = {-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2};
    const int8x16_t w0 = vld1q_s8(w_first), w1 = vld1q_s8(w_second);
    int64_t slots = padded_row_bytes(w) * slots_per_byte(w->format);
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        int8_t *tab = (int8_t *)scratch + t * table_stride(w);
        for (int64_t s = 0; s < slots; s++, tab += SLOT_BYTES) {
            int64_t ca, cb;
            slot_columns(w->format, s, w->cols, &ca, &cb);
            int xa = ca >= 0 ? q[ca] : 0, xb = cb >= 0 ? q[cb] : 0;
            int8x16_t lo = vmlaq_s8(vmulq_s8(w0, vdupq_n_s8((int8_t)(xa & 15))), w1, vdupq_n_s8((int8_t)(xb & 15)));
            int8x16_t hi = vmlaq_s8(vmulq_s8(w0, vdupq_n_s8((int8_t)(xa >> 4))), w1, vdupq_n_s8((int8_t)(xb >> 4)));
            vst1q_s8(tab, lo);
            vst1q_s8(tab + 16, hi);
        }
    }
}

/* In-register transpose of 16 rows x 16 bytes: afterwards v[j] lane i = byte j of row i. Four rounds of vtrn
 * on 8-, 16-, 32- and 64-bit elements, pairing vectors 1, 2, 4 and 8 apart (fully unrolled: v stays in registers). */
static inline __attribute__((always_inline)) void transpose16(uint8x16_t *v) {
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        int i = 2 * k;
        uint8x16_t a = vtrn1q_u8(v[i], v[i + 1]), b = vtrn2q_u8(v[i], v[i + 1]);
        v[i] = a, v[i + 1] = b;
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) { /* i = 0 1 4 5 8 9 12 13 */
        int i = (k & 1) | (k >> 1) << 2;
        uint16x8_t a = vreinterpretq_u16_u8(v[i]), b = vreinterpretq_u16_u8(v[i + 2]);
        v[i] = vreinterpretq_u8_u16(vtrn1q_u16(a, b)), v[i + 2] = vreinterpretq_u8_u16(vtrn2q_u16(a, b));
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) { /* i = 0..3, 8..11 */
        int i = (k & 3) | (k >> 2) << 3;
        uint32x4_t a = vreinterpretq_u32_u8(v[i]), b = vreinterpretq_u32_u8(v[i + 4]);
        v[i] = vreinterpretq_u8_u32(vtrn1q_u32(a, b)), v[i + 4] = vreinterpretq_u8_u32(vtrn2q_u32(a, b));
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        uint64x2_t a = vreinterpretq_u64_u8(v[i]), b = vreinterpretq_u64_u8(v[i + 8]);
        v[i] = vreinterpretq_u8_u64(vtrn1q_u64(a, b)), v[i + 8] = vreinterpretq_u8_u64(vtrn2q_u64(a, b));
    }
}

/* Bytes [j0, j0 + 16) of rows r..r+15 into v, transposed; bytes past the row read as 0 (their tables are 0). */
static inline __attribute__((always_inline)) void load_block(const ek_weight *w, int64_t r, int64_t j0,
                                                              uint8x16_t *v) {
    const uint8_t *base = w->data + r * w->row_bytes + j0;
    if (j0 + 16 <= w->row_bytes) {
#pragma GCC unroll 16
        for (int i = 0; i < TILE; i++) v[i] = vld1q_u8(base + i * w->row_bytes);
    } else {
        uint8_t tail[16];
        memset(tail, 0, sizeof tail);
        for (int i = 0; i < TILE; i++) {
            memcpy(tail, base + i * w->row_bytes, (size_t)(w->row_bytes - j0));
            v[i] = vld1q_u8(tail);
        }
    }
    transpose16(v);
}

static inline int8x16_t lookup(const int8_t *table, uint8x16_t idx) { return vqtbl1q_s8(vld1q_s8(table), idx); }

/* Base-3 digit of y (see neon_int.c): ((y + (y >> 1)) >> 1) >> 6 == (3y) >> 8 for every byte y. */
static inline uint8x16_t base3_digit(uint8x16_t y) { return vshrq_n_u8(vhaddq_u8(y, vshrq_n_u8(y, 1)), 6); }

/* Low and high partial sums of one transposed byte vector (16 rows) from its slots' tables. */
static inline void lookup_byte(int format, uint8x16_t v, const int8_t *tab, int8x16_t *lo, int8x16_t *hi) {
    if (format == EK_FMT_T2) {
        uint8x16_t i0 = vandq_u8(v, vdupq_n_u8(15)), i1 = vshrq_n_u8(v, 4);
        *lo = vaddq_s8(lookup(tab, i0), lookup(tab + SLOT_BYTES, i1));
        *hi = vaddq_s8(lookup(tab + 16, i0), lookup(tab + SLOT_BYTES + 16, i1));
        return;
    }
    const uint8x16_t three = vdupq_n_u8(3);
    uint8x16_t d[5], y = v;
    d[0] = base3_digit(y);
    for (int k = 1; k < 5; k++) y = vmulq_u8(y, three), d[k] = base3_digit(y);
    uint8x16_t i0 = vsliq_n_u8(d[0], d[1], 2), i1 = vsliq_n_u8(d[2], d[3], 2);
    *lo = vaddq_s8(vaddq_s8(lookup(tab, i0), lookup(tab + SLOT_BYTES, i1)), lookup(tab + 2 * SLOT_BYTES, d[4]));
    *hi = vaddq_s8(vaddq_s8(lookup(tab + 16, i0), lookup(tab + SLOT_BYTES + 16, i1)),
                   lookup(tab + 2 * SLOT_BYTES + 16, d[4]));
}

/* int16 accumulators of one token for 16 rows: lo[0] rows 0-7, lo[1] rows 8-15, hi likewise. */
typedef struct { int16x8_t lo[2], hi[2]; } acc16;

/* acc32[0..15] += 16 * hi + lo (16 rows), then clear the int16 accumulators. */
static inline void flush(acc16 *s, int32_t *acc32) {
    for (int h = 0; h < 2; h++) {
        int32x4_t a = vaddq_s32(vshlq_n_s32(vmovl_s16(vget_low_s16(s->hi[h])), 4), vmovl_s16(vget_low_s16(s->lo[h])));
        int32x4_t b = vaddq_s32(vshlq_n_s32(vmovl_high_s16(s->hi[h]), 4), vmovl_high_s16(s->lo[h]));
        vst1q_s32(acc32 + 8 * h, vaddq_s32(vld1q_s32(acc32 + 8 * h), a));
        vst1q_s32(acc32 + 8 * h + 4, vaddq_s32(vld1q_s32(acc32 + 8 * h + 4), b));
        s->lo[h] = s->hi[h] = vdupq_n_s16(0);
    }
}

/* One block of 16 bytes for one token: lookups, int16 accumulation, flushes where `flush_at` has a bit.
 * The accumulators live in a local copy (registers) for the block, not behind `state`. */
static inline __attribute__((always_inline)) void block_token(const int format, const uint8x16_t *v,
                                                              const int8_t *tab, unsigned flush_at, int64_t j0,
                                                              int64_t bytes_per_group, acc16 *state, int32_t *acc32) {
    const int spb = slots_per_byte(format);
    acc16 s = *state;
#pragma GCC unroll 16
    for (int b = 0; b < 16; b++) {
        int8x16_t lo, hi;
        lookup_byte(format, v[b], tab + (j0 + b) * spb * SLOT_BYTES, &lo, &hi);
        s.lo[0] = vaddw_s8(s.lo[0], vget_low_s8(lo)), s.lo[1] = vaddw_high_s8(s.lo[1], lo);
        s.hi[0] = vaddw_s8(s.hi[0], vget_low_s8(hi)), s.hi[1] = vaddw_high_s8(s.hi[1], hi);
        if (flush_at >> b & 1) flush(&s, acc32 + (j0 + b) / bytes_per_group * TILE);
    }
    *state = s;
}

/* Bits b of the block at j0 where byte j0 + b ends a group or a 256-byte run (inside the row). */
static unsigned flush_mask(const ek_weight *w, int64_t j0, int64_t bytes_per_group) {
    unsigned m = 0;
    for (int b = 0; b < 16; b++) {
        int64_t end = j0 + b + 1;
        if (end <= w->row_bytes && (end % bytes_per_group == 0 || end % FLUSH_BYTES == 0)) m |= 1u << b;
    }
    return m;
}

/* Rows r..r+15 for every token; acc32 [T][groups][16], state [T]. */
static inline __attribute__((always_inline)) void lut_tile(const int format, const ek_weight *w, const ek_act *a,
                                                           const int8_t *tables, const uint16_t *masks, int64_t r,
                                                           int32_t *acc32, acc16 *state, float *y, int64_t ldy) {
    int64_t groups = w->cols / w->group, bytes_per_group = w->row_bytes / groups, stride = table_stride(w);
    memset(acc32, 0, sizeof(int32_t) * (size_t)(a->tokens * groups * TILE));
    for (int64_t t = 0; t < a->tokens; t++)
        for (int h = 0; h < 2; h++) state[t].lo[h] = state[t].hi[h] = vdupq_n_s16(0);
    for (int64_t j0 = 0; j0 < padded_row_bytes(w); j0 += 16) {
        uint8x16_t v[TILE];
        load_block(w, r, j0, v);
        unsigned mask = masks[j0 / 16];
        for (int64_t t = 0; t < a->tokens; t++)
            block_token(format, v, tables + t * stride, mask, j0, bytes_per_group, &state[t],
                        acc32 + t * groups * TILE);
    }
    for (int64_t t = 0; t < a->tokens; t++) /* scalar.c's finish_output, row by row */
        for (int i = 0; i < TILE; i++) {
            const int32_t *acc = acc32 + t * groups * TILE + i;
            float out;
            if (w->per_tensor) out = ((float)acc[0] * a->scale[t]) * w->scales[0];
            else {
                const float *s = w->scales + (r + i) * groups;
                float sum = 0.0f;
                for (int64_t g = 0; g < groups; g++) sum += (float)acc[g * TILE] * s[g];
                out = sum * a->scale[t];
            }
            y[t * ldy + r + i] = out;
        }
}

/* Rows [r0, r1) in tiles of 16; `format` is a compile-time constant in both instantiations below. */
static inline __attribute__((always_inline)) void lut_rows_body(const int format, const ek_weight *w, const ek_act *a,
                                                                const void *scratch, float *y, int64_t ldy,
                                                                int64_t r0, int64_t r1) {
    int64_t groups = w->cols / w->group, r = r0;
    int32_t *acc32 = malloc(sizeof(int32_t) * (size_t)(a->tokens * groups * TILE));
    acc16 *state = malloc(sizeof(acc16) * (size_t)a->tokens);
    int64_t blocks = padded_row_bytes(w) / 16;
    uint16_t *masks = malloc(sizeof(uint16_t) * (size_t)blocks); /* the same for every tile */
    if (acc32 && state && masks) {
        for (int64_t b = 0; b < blocks; b++) masks[b] = (uint16_t)flush_mask(w, 16 * b, w->row_bytes / groups);
        for (; r + TILE <= r1; r += TILE) lut_tile(format, w, a, scratch, masks, r, acc32, state, y, ldy);
    }
    free(acc32);
    free(state);
    free(masks);
    if (r < r1) ek_neon_rows_sdot(w, a, NULL, y, ldy, r, r1); /* the last rows % 16 (or out of memory) */
}

static void lut_rows_t2(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                        int64_t r0, int64_t r1) {
    lut_rows_body(EK_FMT_T2, w, a, scratch, y, ldy, r0, r1);
}

static void lut_rows_t1(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                        int64_t r0, int64_t r1) {
    lut_rows_body(EK_FMT_T1, w, a, scratch, y, ldy, r0, r1);
}

/* Every group layout of ek_t2 (a byte never straddles a group); ek_t1 only with one scale per row or tensor. */
static int lut_supports(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    if (w->row_bytes * cols_per_byte(w->format) != w->cols) {
        *reason = "row bytes do not match the columns";
        return 0;
    }
    if (w->format == EK_FMT_T1 && w->group != w->cols) {
        *reason = "ek_t1 LUT: 5-column bytes straddle groups; per-group scales run on the sdot kernel";
        return 0;
    }
    return 1;
}

const ek_kernel ek_neon_lut_kernels[2] = {
    {"t2_lut_neon", EK_FMT_T2, EK_ACT_I8, EK_LAYOUT_NATIVE, TILE, lut_supports, lut_scratch, lut_prepare, lut_rows_t2},
    {"t1_lut_neon", EK_FMT_T1, EK_ACT_I8, EK_LAYOUT_NATIVE, TILE, lut_supports, lut_scratch, lut_prepare, lut_rows_t1},
};
#endif /* __aarch64__ */
