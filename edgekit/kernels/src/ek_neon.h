/* Internal interface between the NEON back end's files (neon.c, neon_int.c, neon_lut.c) and its test driver
 * (tests/kernels/neon/driver.c). Not part of the public ABI in ek_kernels.h.
 *
 * Variants (every one bit-exact with edgekit/kernels/reference.py):
 *   EK_NEON_SDOT   direct int8 path: each row is decoded once into int8 values (ek_decode_row_values' exact
 *                  output) and dotted with vdotq_s32 (armv8.2-a dotprod), every integer format, any T;
 *   EK_NEON_LUT    lookup tables of activation partial sums (T-MAC / bitnet.cpp lineage) indexed by the packed
 *                  ternary codes with vqtbl1q_u8, ek_t2 and ek_t1 only;
 *   EK_NEON_FLOAT  f16 / f32 weights with float activations, in scalar.c's column order.
 */
#ifndef EK_NEON_H
#define EK_NEON_H

#include "ek_kernels.h"

enum ek_neon_variant { EK_NEON_SDOT = 0, EK_NEON_LUT = 1, EK_NEON_FLOAT = 2, EK_NEON_VARIANTS = 3 };

#if defined(__aarch64__)
/* The kernel of one variant for (format, act kind), or NULL if that variant does not cover it. */
const ek_kernel *ek_neon_variant_kernel(int variant, int format, int act_kind);
/* Rows [r0, r1) of the direct kernel (neon_int.c); the LUT kernel runs its leftover rows (< 16) through it. */
void ek_neon_rows_sdot(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                       int64_t r0, int64_t r1);
/* 1 if the sdot kernel takes `w` in plane-order mode (codes dotted straight from the packed bytes against
 * permuted activations), 0 for column-order mode (see neon_int.c). */
int ek_neon_sdot_plane_mode(const ek_weight *w);
/* Decode one native row into int8 values [cols]: byte for byte what ek_decode_row_values(format, row, 0, cols)
 * writes (code - offset; ek_u*: raw codes). */
void ek_neon_decode_row(int format, const uint8_t *row, int64_t row_bytes, int64_t cols, int8_t *out);

extern const ek_kernel ek_neon_sdot_kernels[];     /* ek_t2 .. ek_i8, indexed by format - EK_FMT_T2 */
extern const ek_kernel ek_neon_lut_kernels[2];     /* ek_t2, ek_t1 */
extern const ek_kernel ek_neon_float_kernels[2];   /* f16, f32 */
#endif

#endif /* EK_NEON_H */
