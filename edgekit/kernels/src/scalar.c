/* Portable scalar C kernels: the baseline every ISA falls back to, and the shared decode helpers.
 *
 * One generic kernel serves every integer format: each row is decoded once into int8 values [cols]
 * (ek_decode_row_values, or ek_lut_decode_row / ek_bitplane_decode_row for a repacked weight), then dotted with every token's int8 activations group by group in int32, which
 * is exact (|v| <= 128, |q| <= 127, so a group of up to 2^17 columns cannot overflow). Float weights use a
 * float32 dot product in column order.
 */
#include "ek_kernels.h"

#include <stdlib.h>
#include <string.h>

int ek_format_offset(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_T1: return 1;
    case EK_FMT_I2: return 2;
    case EK_FMT_I3: return 4;
    case EK_FMT_I4: return 8;
    case EK_FMT_I8: return 128;
    default: return 0;
    }
}

int ek_format_is_float(int format) { return format == EK_FMT_F16 || format == EK_FMT_F32; }

int ek_format_has_zeros(int format) {
    return format == EK_FMT_U2 || format == EK_FMT_U3 || format == EK_FMT_U4;
}

int ek_format_bits(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: return 2;
    case EK_FMT_I3: case EK_FMT_U3: return 3;
    case EK_FMT_I4: case EK_FMT_U4: return 4;
    default: return 8;
    }
}

/* Code j of a little-endian bit stream of `bits`-bit codes (layouts.py: code j in bits [j*bits, (j+1)*bits)).
 * A 3-bit code may straddle two bytes; the second byte is only read when the code needs it, so the read
 * never passes the end of the row. */
static inline int bitstream_code(const uint8_t *row, int64_t j, int bits) {
    int64_t bit = j * bits;
    unsigned v = row[bit >> 3] >> (bit & 7);
    if ((bit & 7) + bits > 8) v |= (unsigned)row[(bit >> 3) + 1] << (8 - (bit & 7));
    return (int)(v & ((1u << bits) - 1u));
}

/* ek_t1: digit i of a byte is ((byte * 3^i) mod 256) * 3 >> 8 (TQ1_0's fixed point, see layouts.py). */
static inline int base3_code(const uint8_t *row, int64_t j) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    unsigned shifted = (unsigned)(uint8_t)(row[j / 5] * pow3[j % 5]);
    return (int)((shifted * 3u) >> 8);
}

void ek_decode_row_values(int format, const uint8_t *row, int64_t c0, int64_t n, int8_t *out) {
    int offset = ek_format_offset(format), bits = ek_format_bits(format);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = c0 + i;
        int code;
        if (format == EK_FMT_T1) code = base3_code(row, j);
        else if (format == EK_FMT_I8) code = row[j];
        else code = bitstream_code(row, j, bits);
        out[i] = (int8_t)(code - offset);
    }
}

float ek_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);              /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);     /* normal: rebias 15 -> 127 */
    } else if (mant == 0) {
        bits = sign;                                           /* signed zero */
    } else {                                                   /* subnormal: normalise */
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Finish one output from its per-group integer sums: the order fixed in ek_kernels.h. */
static float finish_output(const ek_weight *w, int64_t r, const int32_t *acc, int64_t groups, float a_scale) {
    if (w->per_tensor) return ((float)acc[0] * a_scale) * w->scales[0];
    const float *s = w->scales + r * groups;
    float sum = 0.0f;
    for (int64_t g = 0; g < groups; g++) sum += (float)acc[g] * s[g];
    return sum * a_scale;
}

/* Integer weights x int8 activations, rows [r0, r1): decode a row once, then every token. */
static void rows_int_a8(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                        int64_t r0, int64_t r1) {
    (void)scratch;
    int64_t cols = w->cols, group = w->group, groups = cols / group;
    int8_t *vals = malloc((size_t)cols);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)groups);
    if (!vals || !acc) { /* out of memory: make the failure visible as NaN rather than stale values */
        for (int64_t r = r0; r < r1; r++)
            for (int64_t t = 0; t < a->tokens; t++) y[t * ldy + r] = __builtin_nanf("");
        free(vals); free(acc); return;
    }
    for (int64_t r = r0; r < r1; r++) {
        if (w->layout == EK_LAYOUT_TERNARY_LUT3) ek_lut_decode_row(w, r, vals);
        else if (w->layout == EK_LAYOUT_BITPLANE) ek_bitplane_decode_row(w, r, vals);
        else ek_decode_row_values(w->format, w->data + r * w->row_bytes, 0, cols, vals);
        const uint8_t *zeros = w->zeros ? w->zeros + r * groups : NULL;
        for (int64_t t = 0; t < a->tokens; t++) {
            const int8_t *q = a->q + t * cols;
            for (int64_t g = 0; g < groups; g++) {
                int32_t s = 0;
                for (int64_t k = g * group; k < (g + 1) * group; k++) s += (int32_t)vals[k] * q[k];
                if (zeros) s -= (int32_t)zeros[g] * a->gsum[t * groups + g];
                acc[g] = s;
            }
            y[t * ldy + r] = finish_output(w, r, acc, groups, a->scale[t]);
        }
    }
    free(vals);
    free(acc);
}

/* Float weights x float activations: a float32 dot product in column order. */
static void rows_float_f32(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                           int64_t r0, int64_t r1) {
    (void)scratch;
    int64_t cols = w->cols;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < a->tokens; t++) {
            const float *x = a->x + t * cols;
            float s = 0.0f;
            if (w->format == EK_FMT_F32) {
                const float *row = (const float *)(const void *)(w->data + r * w->row_bytes);
                for (int64_t k = 0; k < cols; k++) s += row[k] * x[k];
            } else {
                const uint16_t *row = (const uint16_t *)(const void *)(w->data + r * w->row_bytes);
                for (int64_t k = 0; k < cols; k++) s += ek_half_to_float(row[k]) * x[k];
            }
            y[t * ldy + r] = s;
        }
    }
}

static const ek_kernel scalar_int = {"int_dot_scalar", 0, EK_ACT_I8, EK_LAYOUT_NATIVE, 1, NULL, NULL, NULL,
                                     rows_int_a8};
static const ek_kernel scalar_float = {"float_dot_scalar", 0, EK_ACT_F32, EK_LAYOUT_NATIVE, 1, NULL, NULL, NULL,
                                       rows_float_f32};

const ek_kernel *ek_scalar_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)tokens;
    if (format < EK_FMT_T2 || format > EK_FMT_F32) return NULL;
    if (layout == EK_LAYOUT_TERNARY_LUT3) /* the fallback for a repacked weight after a change of ISA */
        return (format == EK_FMT_T2 || format == EK_FMT_T1) && act_kind == EK_ACT_I8 ? &scalar_int : NULL;
    if (layout == EK_LAYOUT_BITPLANE) /* likewise for the bit-plane layout of the intN formats */
        return ek_format_bits(format) <= 4 && !ek_format_is_float(format) && format != EK_FMT_T2 &&
               act_kind == EK_ACT_I8 ? &scalar_int : NULL;
    if (layout != EK_LAYOUT_NATIVE) return NULL;
    if (ek_format_is_float(format)) return act_kind == EK_ACT_F32 ? &scalar_float : NULL;
    return act_kind == EK_ACT_I8 ? &scalar_int : NULL;
}
