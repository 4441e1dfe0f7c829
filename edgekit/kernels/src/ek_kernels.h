/* edgekit native weight kernels: the stable C ABI (version EK_ABI_VERSION).
 *
 * Two audiences read this header:
 *   - callers (edgekit/kernels/_native.py through ctypes, C test drivers): the "public ABI" section;
 *   - ISA back ends (scalar.c, avx2.c, avx512.c, lut.c, neon*.c): the "kernel table" section, one ek_kernel per
 *     (format, activation kind) that the dispatcher (dispatch.c) runs over row ranges on its thread pool.
 *
 * Meaning of a linear layer (edgekit.model.reference.ReferenceForward.linear without norm and bias):
 *   y[t, r] = sum_k W[r, k] * x[t, k]          W [rows, cols] (rows = N outputs, cols = K reduction)
 * With int8 activations (EK_ACT_I8: q [T, cols] int8 in [-127, 127], a_scale [T] float32, BitNet's per-token
 * absmax A8) and integer weights (value v = code - offset, or code - zero point), sums are exact int32:
 *   acc[t, r, g] = sum_{k in group g} v[r, k] * q[t, k]
 *   per tensor scale s:         y = ((float)acc * a_scale[t]) * s                (bit-exact with the reference)
 *   per row/group scales s_rg:  y = (sum_g (float)acc_g * s_rg) * a_scale[t]    (sum order may differ per ISA)
 * With float activations (EK_ACT_F32) float weights (f16/f32) are computed directly in float32; integer formats
 * first quantize them per token (ek_quantize_absmax_i8) inside ek_linear, which saves the caller a call.
 *
 * All pointers are plain C arrays, row-major, C-contiguous, owned by the caller. Nothing here allocates
 * except the thread pool, the per-call scratch buffer and ek_read_bandwidth's probe buffer.
 */
#ifndef EK_KERNELS_H
#define EK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EK_ABI_VERSION 1

/* Format ids: identical to edgekit/formats/layouts.py (ids are permanent). */
enum ek_format {
    EK_FMT_T2 = 1,  /* ternary, code = trit + 1, 2-bit little-endian bit stream                 */
    EK_FMT_T1 = 2,  /* ternary, 5 trits per byte, base 3, TQ1_0 fixed point ceil(n*256/243)     */
    EK_FMT_I2 = 3,  /* signed int2, code = v + 2, bit stream                                   */
    EK_FMT_I3 = 4,  /* signed int3, code = v + 4, bit stream (8 weights per 3 bytes)           */
    EK_FMT_I4 = 5,  /* signed int4, code = v + 8, weight 2k in the low nibble                  */
    EK_FMT_U2 = 6,  /* unsigned int2, v = code - zero[r, g]                                     */
    EK_FMT_U3 = 7,
    EK_FMT_U4 = 8,
    EK_FMT_I8 = 9,  /* signed int8, code = v + 128                                              */
    EK_FMT_F16 = 10, /* IEEE half weights                                                        */
    EK_FMT_F32 = 11  /* IEEE single weights                                                      */
};

/* Ids are permanent (Python mirrors them in _native.ISA_IDS). EK_ISA_AVX512 means AVX-512 F/BW/VL/VNNI/VBMI
 * (Ice Lake, Sapphire Rapids, Zen 4 and later); it implies AVX2. */
enum ek_isa { EK_ISA_SCALAR = 0, EK_ISA_AVX2 = 1, EK_ISA_NEON = 2, EK_ISA_AVX512 = 3, EK_ISA_COUNT = 4 };

enum ek_act_kind { EK_ACT_I8 = 0, EK_ACT_F32 = 1 };

/* Weight layouts: EK_LAYOUT_NATIVE is the row layout of layouts.py (every ISA must accept it); other
 * layouts are produced by ek_repack() for one kernel family (and decoded by the scalar fallback, so a call
 * after a change of ISA stays correct).
 *   EK_LAYOUT_TERNARY_LUT3 (ek_t2 and ek_t1, one scale per tensor or row): the trits re-encoded for the
 *     lookup-table kernels of lut.c. Rows in tiles of 32 (the last tile padded with zero rows), columns in
 *     triples (ceil(cols / 3), padded to an even count; missing columns are zero), each triple of a row one
 *     base-3 index i = d0 + 3 d1 + 9 d2 (d = trit + 1, i in 0..26). Tile-major; per tile, per pair of triples
 *     (2p, 2p + 1): 32 bytes (byte r = low nibble of row r's index of triple 2p | low nibble of triple 2p + 1
 *     << 4), then two little-endian uint32 of bit 4 of the indices (bit r = row r), triple 2p first:
 *     40 bytes per 192 weights, 1.67 bits per weight (ek_t2 reads 2, ek_t1 1.6).
 *   EK_LAYOUT_BITPLANE (ek_i2/i3/i4, ek_u2/u3/u4; groups of a multiple of 8 columns, or one group per row): the
 *     codes split into their bit planes for the bit-serial LUT kernels of bitplane.c (T-MAC's layout idea).
 *     Rows in tiles of 32 (last tile padded with zero codes), columns in octets (ceil(cols / 8), missing columns
 *     code 0, read against zero activations). Tile-major; per tile, per octet o, per plane b (0 = least
 *     significant bit of the code): 32 bytes, byte r = bit b of row r's codes of columns 8o..8o+3 (column 8o+j
 *     at bit j) | those of columns 8o+4..8o+7 << 4. Exactly `bits` bits per weight (2, 3 or 4) plus padding;
 *     numpy twin: edgekit.kernels.reference.pack_bitplanes. */
enum ek_layout { EK_LAYOUT_NATIVE = 0, EK_LAYOUT_TERNARY_LUT3 = 1, EK_LAYOUT_BITPLANE = 2 };

enum ek_status {
    EK_OK = 0,
    EK_ERR_ARG = -1,         /* a size, pointer or id is invalid: nothing was computed */
    EK_ERR_NOMEM = -2,
    EK_ERR_UNSUPPORTED = -3, /* no kernel for this format / activation / ISA */
    EK_ERR_ISA = -4          /* the requested ISA is not compiled in or not supported by this CPU */
};

/* A weight matrix as the kernels see it. `cols` is the padded width (a multiple of the format's packing
 * unit and of `group`); padding codes decode to value 0, so callers pad activations with zeros. */
typedef struct ek_weight {
    int32_t format;         /* enum ek_format */
    int32_t layout;         /* enum ek_layout */
    int64_t rows;           /* N */
    int64_t cols;           /* K, padded */
    int64_t row_bytes;      /* bytes per row of `data` in the native layout */
    int64_t group;          /* weights per scale along a row; == cols for per-row and per-tensor scales */
    int32_t per_tensor;     /* 1: scales[0] applies to the whole matrix (y = acc * a_scale * s) */
    int32_t reserved;
    const uint8_t *data;    /* native: [rows, row_bytes]; other layouts: see ek_repack */
    const float *scales;    /* per_tensor: [1]; else [rows, cols / group]. Unused for f16/f32. */
    const uint8_t *zeros;   /* ek_u*: [rows, cols / group] zero points; else NULL */
} ek_weight;

/* Activations for one call: T tokens of `cols` values (the padded K of the weight). */
typedef struct ek_act {
    int32_t kind;           /* enum ek_act_kind */
    int32_t x_cols;         /* EK_ACT_F32 with integer weights: columns of x (<= cols; 0 means cols) */
    int64_t tokens;         /* T */
    int64_t cols;           /* K, padded, == ek_weight.cols */
    const int8_t *q;        /* EK_ACT_I8: [T, cols] */
    const float *scale;     /* EK_ACT_I8: [T] per-token scale */
    const float *x;         /* EK_ACT_F32: [T, cols] for float weights; [T, x_cols] for integer weights, which
                               ek_linear quantizes per token first (exactly ek_quantize_absmax_i8, zero padded) */
    const int32_t *gsum;    /* EK_ACT_I8: [T, cols / group] sums of q per weight group (filled by ek_linear) */
} ek_act;

/* ------------------------------------------------------------------------------------------------
 * Public ABI
 * ------------------------------------------------------------------------------------------------ */
int ek_abi_version(void);
/* 1 if `isa` is compiled in and supported by this CPU. */
int ek_isa_available(int isa);
/* The ISA the dispatcher uses now: the best available unless ek_set_isa forced one. */
int ek_get_isa(void);
/* Force an ISA (EK_ERR_ISA if unavailable) or pass -1 to return to automatic choice. */
int ek_set_isa(int isa);
const char *ek_isa_name(int isa);

/* Worker threads (including the caller) used by ek_linear; n < 1 means 1. The pool is persistent. */
int ek_set_num_threads(int n);
int ek_get_num_threads(void);

/* Per-token absmax int8, bit-exact with edgekit.model.reference.quantize_absmax_int8:
 *   s = max|x| / 127 (float32), q = sign(v) * floor(|v| + 0.5) with v = x / (s > 0 ? s : 1) (float32 ops).
 * x [T, k] (row stride ldx floats) -> q [T, ldq] int8 (columns k..ldq-1 set to 0), scale [T]. */
void ek_quantize_absmax_i8(const float *x, int64_t tokens, int64_t k, int64_t ldx, int8_t *q, int64_t ldq,
                           float *scale);

/* y [T, rows] (row stride ldy) = linear(w, a). `a->gsum` may be NULL: ek_linear computes it.
 * Returns EK_OK, or a negative ek_status (nothing written on argument errors). `kernel_name`, if not NULL,
 * receives the name of the kernel that ran (a static string). */
int ek_linear(const ek_weight *w, const ek_act *a, float *y, int64_t ldy, const char **kernel_name);

/* ek_linear for n <= 8 weights with the same cols over one activation (quantized once, one pool run): their
 * outputs side by side in y [T, sum rows_i] (row stride ldy), each equal to what ek_linear computes alone. */
int ek_linear_multi(const ek_weight *const *ws, int n, const ek_act *a, float *y, int64_t ldy,
                    const char **kernel_name);

/* The kernel ek_linear would choose for (w, act kind, T) on the current ISA (NULL if none), and why a
 * faster kernel was not taken (static string, "" when the best one applies). */
const char *ek_kernel_choice(const ek_weight *w, int act_kind, int64_t tokens, const char **reason);

/* The layout the current ISA's kernels want for this native weight (EK_LAYOUT_NATIVE if no repack pays off);
 * the caller repacks with ek_repack_size / ek_repack and then sets w.layout and w.data. */
int ek_preferred_layout(const ek_weight *w, int act_kind);

/* The name of `isa`'s own kernel for (format, act kind, layout, T), or NULL if that ISA has none (listing only:
 * ignores whether the ISA runs on this CPU and the kernel's shape limits). */
const char *ek_isa_kernel_name(int isa, int format, int act_kind, int layout, int64_t tokens);

/* Kernel-specific repacking. ek_repack_size returns the bytes needed for `layout` (0 if the layout does not
 * apply to this weight); ek_repack writes them (multithreaded, streaming) and returns EK_OK. The result is
 * used by setting w.layout = layout and w.data = dst. */
size_t ek_repack_size(const ek_weight *w, int layout);
int ek_repack(const ek_weight *w, int layout, uint8_t *dst);

/* Streaming read bandwidth in GB/s (1e9 bytes/s) over a buffer of `nbytes` read by `threads` threads,
 * best of `reps` passes (the roofline for memory-bound decode). Negative on allocation failure. */
double ek_read_bandwidth(size_t nbytes, int threads, int reps);

/* ------------------------------------------------------------------------------------------------
 * Kernel table (for ISA back ends)
 * ------------------------------------------------------------------------------------------------ */

/* One kernel for one (format, activation kind). The dispatcher:
 *   1. checks supports(w, T) (NULL = always); if 0 it falls back to the scalar kernel and logs `reason`;
 *   2. allocates scratch_bytes(w, a) bytes (64-byte aligned; NULL fn = 0) and calls prepare() once, on the
 *      calling thread (e.g. to build lookup tables or permute activations, once per activation vector);
 *   3. calls rows(..., r0, r1) from several threads on disjoint row ranges; r0 is a multiple of row_tile
 *      (r1 too, except at the end of the matrix).
 * rows() must write y[t * ldy + r] for every t < T and r0 <= r < r1 and nothing else. */
typedef struct ek_kernel {
    const char *name;     /* e.g. "t2_maddubs_avx2": kernel + ISA */
    int32_t format;
    int32_t act_kind;
    int32_t layout;       /* the weight layout it reads */
    int32_t row_tile;
    int (*supports)(const ek_weight *w, int64_t tokens, const char **reason);
    size_t (*scratch_bytes)(const ek_weight *w, const ek_act *a);
    void (*prepare)(const ek_weight *w, const ek_act *a, void *scratch);
    void (*rows)(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy,
                 int64_t r0, int64_t r1);
} ek_kernel;

/* Each back end returns its kernel for (format, act kind, layout, T), or NULL if it has none. The AVX2,
 * AVX-512 and NEON getters return NULL when compiled for another architecture. T lets a back end pick a GEMV or a GEMM
 * kernel per shape. */
const ek_kernel *ek_scalar_kernel(int format, int act_kind, int layout, int64_t tokens);
const ek_kernel *ek_avx2_kernel(int format, int act_kind, int layout, int64_t tokens);
const ek_kernel *ek_avx512_kernel(int format, int act_kind, int layout, int64_t tokens);
const ek_kernel *ek_neon_kernel(int format, int act_kind, int layout, int64_t tokens);
int ek_neon_supported(void); /* run-time check (HWCAP); defined in neon*.c on aarch64 */

/* Helpers shared by the back ends (defined in scalar.c). */
/* Decode codes [c0, c0 + n) of one native row into int8 values (code - offset; ek_u*: raw codes). */
void ek_decode_row_values(int format, const uint8_t *row, int64_t c0, int64_t n, int8_t *out);
/* Row r of an EK_LAYOUT_TERNARY_LUT3 weight as trits [cols] (lut.c). */
void ek_lut_decode_row(const ek_weight *w, int64_t r, int8_t *out);
/* Row r of an EK_LAYOUT_BITPLANE weight as values [cols] (code - offset; ek_u*: raw codes) (bitplane.c). */
void ek_bitplane_decode_row(const ek_weight *w, int64_t r, int8_t *out);
int ek_format_bits(int format); /* code bits: 2, 3, 4, or 8 (scalar.c) */
/* The value offset of a symmetric format: trits 1, int2 2, int3 4, int4 8, int8 128; 0 for ek_u*. */
int ek_format_offset(int format);
int ek_format_is_float(int format);
int ek_format_has_zeros(int format);
/* IEEE half -> float (portable). */
float ek_half_to_float(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* EK_KERNELS_H */
