/* ARM NEON back end: run-time detection, the kernel table, and the float (f16 / f32) kernels.
 *
 * The integer kernels live in neon_int.c (vdotq_s32, compiled for armv8.2-a+dotprod) and neon_lut.c
 * (vqtbl1q_u8 lookup tables for ternary weights); see ek_neon.h for the variants. This file is compiled for
 * the baseline armv8-a (ASIMD), so ek_neon_supported() itself runs on any 64-bit ARM CPU.
 *
 * Which integer variant ek_neon_kernel() returns, and why: the direct sdot kernel for every format and every T,
 * because it executes fewer instructions than the LUT kernel at every shape measured. Guest instructions per
 * weight (per weight and token for T = 8) on 256 x 2560 ternary weights, counted under qemu-aarch64 with
 * `python tests/kernels/neon/count_instructions.py` (setup.py's -O3, prepare() included):
 *             T = 1: sdot   LUT    scalar.c    T = 8: sdot   LUT    scalar.c
 *     ek_t2         0.33   0.60   16.7               0.22   0.36   2.7
 *     ek_t1         0.52   1.25   16.7               0.28   0.49   2.7
 * On the native row layout the LUT kernel must transpose every 16 x 16 byte block in registers before its
 * lookups, needs two tables per slot (low and high activation nibbles, for exact 8-bit tables) and reads
 * 16 bytes of tables per column per 16-row tile, where the sdot kernel dots the packed bytes directly (1 load,
 * 7 bit operations and 4 sdots per 64 ternary weights). qemu counts instructions only (no caches, no
 * pipelines): EDGEKIT_NEON_LUT=1 selects the LUT kernel for ternary decode (T = 1) to measure it on a board.
 *
 * Float weights: y = sum_k w[k] * x[k] in column order, with the additions in exactly scalar.c's sequence:
 * 4 rows at a time, a 4 x 4 transpose turns 4 columns of 4 rows into 4 vectors whose lane i is row i, and
 * each lane adds w * x column after column (vmulq then vaddq, never a fused multiply-add; the build passes
 * -ffp-contract=off). So f16 / f32 results are bit-identical to scalar.c's.
 */
#if defined(__aarch64__)
#include "ek_neon.h"

#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)    /* <asm/hwcap.h> */
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#endif

int ek_neon_supported(void) {
#if defined(__linux__)
    unsigned long hwcap = getauxval(AT_HWCAP);
    return (hwcap & HWCAP_ASIMD) && (hwcap & HWCAP_ASIMDDP) ? 1 : 0;
#elif defined(__ARM_FEATURE_DOTPROD)
    return 1; /* compiled for a dotprod baseline (e.g. Apple silicon) */
#else
    return 0;
#endif
}

/* ---- float weights ------------------------------------------------------------------------------------ */

#define FLOAT_TB 4 /* tokens per block */

/* Columns [k, k + 4) of rows r..r+3 as four vectors: out[j] lane i = w[r + i][k + j]. */
static inline void load_columns4(int format, const uint8_t *rows, int64_t row_bytes, int64_t k, float32x4_t *out) {
    float32x4_t v[4];
    for (int i = 0; i < 4; i++) {
        const uint8_t *row = rows + i * row_bytes;
        const void *p = row;
        v[i] = format == EK_FMT_F32 ? vld1q_f32((const float *)p + k)
                                    : vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + k)));
    }
    float32x4_t t0 = vtrn1q_f32(v[0], v[1]), t1 = vtrn2q_f32(v[0], v[1]);
    float32x4_t t2 = vtrn1q_f32(v[2], v[3]), t3 = vtrn2q_f32(v[2], v[3]);
    out[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    out[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    out[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    out[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

static inline float weight_at(int format, const uint8_t *row, int64_t k) {
    return format == EK_FMT_F32 ? ((const float *)(const void *)row)[k]
                                : ek_half_to_float(((const uint16_t *)(const void *)row)[k]);
}

/* Rows r..r+3, tokens [t0, t0 + nb): lane i of acc[b] is row r + i's running sum for token t0 + b. */
static void float_tile4(const ek_weight *w, const ek_act *a, int64_t r, int64_t t0, int nb, float *y, int64_t ldy) {
    int64_t cols = w->cols, k4 = cols / 4 * 4;
    const uint8_t *rows = w->data + r * w->row_bytes;
    float32x4_t acc[FLOAT_TB];
    for (int b = 0; b < nb; b++) acc[b] = vdupq_n_f32(0.0f);
    for (int64_t k = 0; k < k4; k += 4) {
        float32x4_t c[4];
        load_columns4(w->format, rows, w->row_bytes, k, c);
        for (int b = 0; b < nb; b++) {
            const float *x = a->x + (t0 + b) * cols + k;
            for (int j = 0; j < 4; j++) acc[b] = vaddq_f32(acc[b], vmulq_f32(c[j], vdupq_n_f32(x[j])));
        }
    }
    for (int b = 0; b < nb; b++) {
        float s[4];
        vst1q_f32(s, acc[b]);
        const float *x = a->x + (t0 + b) * cols;
        for (int i = 0; i < 4; i++) {
            for (int64_t k = k4; k < cols; k++) s[i] += weight_at(w->format, rows + i * w->row_bytes, k) * x[k];
            y[(t0 + b) * ldy + r + i] = s[i];
        }
    }
}

static void rows_float(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                       int64_t r0, int64_t r1) {
    (void)scratch;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int64_t t0 = 0; t0 < a->tokens; t0 += FLOAT_TB)
            float_tile4(w, a, r, t0, a->tokens - t0 < FLOAT_TB ? (int)(a->tokens - t0) : FLOAT_TB, y, ldy);
    for (; r < r1; r++) { /* the last rows % 4: scalar.c's loop */
        const uint8_t *row = w->data + r * w->row_bytes;
        for (int64_t t = 0; t < a->tokens; t++) {
            const float *x = a->x + t * w->cols;
            float s = 0.0f;
            for (int64_t k = 0; k < w->cols; k++) s += weight_at(w->format, row, k) * x[k];
            y[t * ldy + r] = s;
        }
    }
}

const ek_kernel ek_neon_float_kernels[2] = {
    {"f16_colorder_neon", EK_FMT_F16, EK_ACT_F32, EK_LAYOUT_NATIVE, 4, NULL, NULL, NULL, rows_float},
    {"f32_colorder_neon", EK_FMT_F32, EK_ACT_F32, EK_LAYOUT_NATIVE, 4, NULL, NULL, NULL, rows_float},
};

/* ---- kernel table ------------------------------------------------------------------------------------- */

const ek_kernel *ek_neon_variant_kernel(int variant, int format, int act_kind) {
    if (ek_format_is_float(format))
        return variant == EK_NEON_FLOAT && act_kind == EK_ACT_F32 ? &ek_neon_float_kernels[format - EK_FMT_F16] : NULL;
    if (act_kind != EK_ACT_I8 || format < EK_FMT_T2 || format > EK_FMT_I8) return NULL;
    if (variant == EK_NEON_SDOT) return &ek_neon_sdot_kernels[format - EK_FMT_T2];
    if (variant == EK_NEON_LUT && (format == EK_FMT_T2 || format == EK_FMT_T1))
        return &ek_neon_lut_kernels[format == EK_FMT_T2 ? 0 : 1];
    return NULL;
}

static int lut_requested(void) {
    static int cached = -1; /* a benign race: every thread computes the same value */
    if (cached < 0) {
        const char *v = getenv("EDGEKIT_NEON_LUT");
        cached = v && strcmp(v, "1") == 0;
    }
    return cached;
}

const ek_kernel *ek_neon_kernel(int format, int act_kind, int layout, int64_t tokens) {
    if (layout != EK_LAYOUT_NATIVE) return NULL;
    if (ek_format_is_float(format)) return ek_neon_variant_kernel(EK_NEON_FLOAT, format, act_kind);
    if (tokens == 1 && lut_requested()) {
        const ek_kernel *k = ek_neon_variant_kernel(EK_NEON_LUT, format, act_kind);
        if (k) return k;
    }
    return ek_neon_variant_kernel(EK_NEON_SDOT, format, act_kind);
}

#endif /* __aarch64__: on other architectures this file compiles to nothing (dispatch.c stubs ek_neon_*) */
