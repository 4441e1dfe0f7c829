/* AVX-512 kernels (F/BW/VL/VNNI/VBMI, chosen at run time by dispatch.c; every function carries its own target
 * attribute, so one build loads on any x86-64 and only runs this code where the CPU has it).
 *
 * Direct int8 dot-product kernels ("vnni" kernels) for every integer format with an AVX2 kernel, on the native
 * row layout of layouts.py:
 *   - a 64-byte load of a packed row holds `np` planes of 64 codes (2-bit: 4 planes, plane p lane i is column
 *     4i+p of the chunk; 4-bit: 2 planes, low/high nibbles; base-3 ek_t1: 5 digit planes, column 5i+d; int8: 1);
 *   - the activations are permuted once per call into that plane order (prepare(): K bytes per token), so the
 *     weights stream straight from memory, unrepacked (the same idea as avx2.c, with 64-byte chunks);
 *   - vpdpbusd(acc, code u8, x s8) adds 4 products into each int32 lane without intermediate int16 (no
 *     saturation, so int8 weights use their unsigned codes v + 128 too); the offset (or zero point) is removed
 *     with the activation group sums: sum(v * x) = sum(c * x) - off * sum(x). Sums are exact int32
 *     (|c * x| <= 255 * 127; a lane gathers cols / 16 products, far below 2^31 for any real K).
 *   - the last chunk of a row is loaded with a byte mask (masked loads never fault), its missing codes are 0
 *     and its permuted activations are 0, so there is no scalar tail: 64 - (row_bytes % 64) lanes add 0.
 * Tokens run in blocks of TB sharing each decoded chunk: T = 1 is the decode GEMV, T > 1 the prefill GEMM.
 * One scale per row or tensor: integer accumulation over the whole row, finished exactly as scalar.c
 * (bit-exact). Per-group scales: int32 lane j of a chunk covers cw / 16 consecutive columns of one group,
 * so lanes are scaled in float and summed (FMA, lane order): equal to the reference up to float32 rounding.
 *
 * Why these kernels are the AVX-512 choice (dispatch.c prefers AVX-512 over AVX2 wherever both run): compute
 * ceilings on this Sapphire Rapids, `python scripts/kernel_bench.py --ceiling --tokens 1 64 --isas avx2 avx512`
 * (640 x 2560, L2-resident, 1 thread, CPU time, best of 15 interleaved rounds; shared cores, so +-15%), Gw/s:
 *                     decode T=1           prefill T=64
 *                     avx2   avx512        avx2   avx512
 *     ek_t2           35.7   50.9          44.2   110.4
 *     ek_t1           17.2   32.3          32.7    96.3   (the auto layout for ek_t1 is LUT3: 38-41 / 63-69)
 *     ek_i4 g32       12.7   21.2          20.2    54.4
 *     ek_i4 per row   33.4   53.5          34.1    91.5
 *     ek_i8 per row   17.8   25.5          25.3    86.9
 * A direct kernel (not a bit-serial LUT) for intN: vpdpbusd consumes 64 int8 products per instruction from the
 * native codes after at most 2 ops of unpacking, while a bit-serial LUT needs one table lookup per bit plane
 * per 4-column group (T-MAC's scheme) plus the int16 table split: more work per weight than these rates.
 */
#include "ek_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define EK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
#define EK_INLINE static inline __attribute__((always_inline)) EK_AVX512
#ifndef EK_PREFETCH
#define EK_PREFETCH 4096 /* bytes ahead of the decode stream: 2048 -> 4096 took the int8 g32 LM head from ~40 to
                            ~46 GB/s at 2 threads on the EPYC (noisy; 8192 and 16384 no better) */
#endif
#define TB 8 /* tokens per block: 8 int32 accumulators + 5 planes + loads fit the 32 zmm registers */

/* ---- geometry of a 64-byte chunk per format ---------------------------------------------------------- */

static int planes_of(int format) {
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: return 4;
    case EK_FMT_I4: case EK_FMT_U4: return 2;
    case EK_FMT_T1: return 5;
    default: return 1; /* ek_i8 */
    }
}

static int64_t chunk_cols(int format) { return 64 * (int64_t)planes_of(format); }

/* Chunks per row, the last one possibly partial: the row's codes occupy cols / (columns per byte) bytes. */
static int64_t row_chunks(const ek_weight *w) {
    int64_t cw = chunk_cols(w->format);
    return (w->cols + cw - 1) / cw;
}

/* Run `body` for every chunk c of a row with n = its code bytes: full chunks with the constant n = 64 (no
 * mask, no branch in the hot loop: a per-chunk byte count cost 2x in the decode loop, seen with perf), then
 * the partial last chunk. `format` must be a compile-time constant at the call site. */
#define FOR_EACH_CHUNK(format, w, body)                                                        \
    do {                                                                                       \
        const int64_t cw_ = 64 * (int64_t)planes_of(format), full_ = (w)->cols / cw_;          \
        const int64_t last_ = ((w)->cols % cw_) / planes_of(format);                           \
        for (int64_t c = 0; c < full_; c++) { const int64_t n = 64; body; }                    \
        if (last_) { const int64_t c = full_, n = last_; body; }                               \
    } while (0)

/* ek_t1 digit: y = byte * 3^d mod 256 (repeated byte-wise * 3), digit = (3y) >> 8 = (y >= 86) + (y >= 171). */
EK_INLINE __m512i base3_digit(__m512i y) {
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
    __m512i d = _mm512_maskz_mov_epi8(_mm512_cmpge_epu8_mask(y, _mm512_set1_epi8(86)), one);
    return _mm512_mask_mov_epi8(d, _mm512_cmpge_epu8_mask(y, _mm512_set1_epi8((char)171)), two);
}

EK_INLINE __m512i times3(__m512i y) { return _mm512_add_epi8(_mm512_add_epi8(y, y), y); }

/* Unsigned codes of one chunk (bytes [0, n) of src; the rest read as 0), plane by plane. */
EK_INLINE int decode_planes(int format, const uint8_t *src, int64_t n, __m512i *pl) {
    __m512i w = n >= 64 ? _mm512_loadu_si512((const void *)src)
                        : _mm512_maskz_loadu_epi8((__mmask64)((1ULL << n) - 1ULL), (const void *)src);
    switch (format) {
    case EK_FMT_T2: case EK_FMT_I2: case EK_FMT_U2: {
        const __m512i m = _mm512_set1_epi8(3);
        pl[0] = _mm512_and_si512(w, m);
        pl[1] = _mm512_and_si512(_mm512_srli_epi16(w, 2), m);
        pl[2] = _mm512_and_si512(_mm512_srli_epi16(w, 4), m);
        pl[3] = _mm512_and_si512(_mm512_srli_epi16(w, 6), m);
        return 4;
    }
    case EK_FMT_I4: case EK_FMT_U4: {
        const __m512i m = _mm512_set1_epi8(15);
        pl[0] = _mm512_and_si512(w, m);
        pl[1] = _mm512_and_si512(_mm512_srli_epi16(w, 4), m);
        return 2;
    }
    case EK_FMT_T1: { /* a masked-out byte is 0: every digit 0, value -1, but its activation is 0 */
        __m512i y = w;
        pl[0] = base3_digit(y);
        for (int d = 1; d < 5; d++) { y = times3(y); pl[d] = base3_digit(y); }
        return 5;
    }
    default: /* ek_i8: the unsigned code v + 128 */
        pl[0] = w;
        return 1;
    }
}

/* int32 lanes += sum(code * x) over one chunk for one token; xp = permuted activations of that chunk. */
EK_INLINE __m512i chunk_dot(__m512i acc, int np, const __m512i *pl, const int8_t *xp) {
    for (int p = 0; p < np; p++) acc = _mm512_dpbusd_epi32(acc, pl[p], _mm512_load_si512((const void *)(xp + 64 * p)));
    return acc;
}

/* ---- activation permutation (prepare) ----------------------------------------------------------------- */

static int64_t xstride_of(const ek_weight *w) { return row_chunks(w) * chunk_cols(w->format); }

static size_t vnni_scratch(const ek_weight *w, const ek_act *a) { return (size_t)(xstride_of(w) * a->tokens) + 64; }

/* xperm[t][c * cw + p * 64 + i] = q[t][c * cw + i * np + p] (0 past the row): the plane order of decode_planes.
 * 2-bit and 4-bit chunks use vpermb (VBMI) over the chunk's 256 / 128 bytes; the rest a scalar loop. */
static const uint8_t byte_iota[64] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};

/* Plane p, lane i = q[4i + p] of a 256-column chunk: lanes i < 32 come from bytes 0..127 (r0|r1), the rest
 * from bytes 128..255 (r2|r3), both with the 7-bit index 4 (i mod 32) + p of vpermt2b. */
EK_INLINE void permute_chunk4(const int8_t *q, int8_t *out) {
    __m512i r[4];
    for (int j = 0; j < 4; j++) r[j] = _mm512_loadu_si512((const void *)(q + 64 * j));
    __m512i base = _mm512_slli_epi16(_mm512_and_si512(_mm512_loadu_si512((const void *)byte_iota),
                                                      _mm512_set1_epi8(31)), 2); /* bytes <= 124: no carry */
    for (int p = 0; p < 4; p++) {
        __m512i idx = _mm512_add_epi8(base, _mm512_set1_epi8((char)p));
        __m512i lo = _mm512_permutex2var_epi8(r[0], idx, r[1]);
        __m512i hi = _mm512_permutex2var_epi8(r[2], idx, r[3]);
        _mm512_storeu_si512((void *)(out + 64 * p), _mm512_mask_blend_epi64(0xF0, lo, hi));
    }
}

/* Plane p, lane i = q[2i + p] of a 128-column chunk (index 2i + p <= 127). */
EK_INLINE void permute_chunk2(const int8_t *q, int8_t *out) {
    __m512i a = _mm512_loadu_si512((const void *)q), b = _mm512_loadu_si512((const void *)(q + 64));
    __m512i twice = _mm512_add_epi8(_mm512_loadu_si512((const void *)byte_iota), _mm512_loadu_si512((const void *)byte_iota));
    for (int p = 0; p < 2; p++)
        _mm512_storeu_si512((void *)(out + 64 * p),
                            _mm512_permutex2var_epi8(a, _mm512_add_epi8(twice, _mm512_set1_epi8((char)p)), b));
}

static void permute_generic(const int8_t *q, int64_t cols, int np, int64_t c0, int8_t *out) {
    for (int p = 0; p < np; p++)
        for (int i = 0; i < 64; i++) {
            int64_t col = c0 + (int64_t)i * np + p;
            out[p * 64 + i] = col < cols ? q[col] : 0;
        }
}

static EK_AVX512 void permute_activations(const ek_weight *w, const ek_act *a, void *scratch) {
    int64_t chunks = row_chunks(w), cw = chunk_cols(w->format), xs = xstride_of(w);
    int np = planes_of(w->format);
    for (int64_t t = 0; t < a->tokens; t++) {
        const int8_t *q = a->q + t * a->cols;
        int8_t *out = (int8_t *)scratch + t * xs;
        for (int64_t c = 0; c < chunks; c++) {
            int full = (c + 1) * cw <= w->cols;
            if (full && np == 4) permute_chunk4(q + c * cw, out + c * cw);
            else if (full && np == 2) permute_chunk2(q + c * cw, out + c * cw);
            else if (full && np == 1) memcpy(out + c * cw, q + c * cw, 64);
            else permute_generic(q, w->cols, np, c * cw, out + c * cw);
        }
    }
}

/* ---- row kernels -------------------------------------------------------------------------------------- */

EK_INLINE int32_t code_offset(const ek_weight *w, int64_t r, int64_t g, int64_t groups) {
    return w->zeros ? w->zeros[r * groups + g] : ek_format_offset(w->format);
}

/* One scale per row or tensor: exact int32 sums over the row for NB tokens [t0, t0 + NB), finished like
 * scalar.c. `format` and NB are compile-time constants in every instantiation. */
EK_INLINE void single_block(const int format, const int NB, const ek_weight *w, const ek_act *a,
                            const int8_t *xbase, int64_t xs, int64_t r, int64_t t0, float *y, int64_t ldy) {
    const int64_t cw = 64 * (int64_t)planes_of(format);
    const uint8_t *row = w->data + r * w->row_bytes;
    __m512i acc[TB];
    for (int b = 0; b < NB; b++) acc[b] = _mm512_setzero_si512();
    if (NB == 1) { /* decode: one accumulator per plane, or the 5-cycle vpdpbusd latency chain bounds a row */
        __m512i pacc[5] = {acc[0], acc[0], acc[0], acc[0], acc[0]};
        FOR_EACH_CHUNK(format, w, {
            __m512i pl[5];
            _mm_prefetch((const char *)(row + c * 64 + EK_PREFETCH), _MM_HINT_T0);
            int np = decode_planes(format, row + c * 64, n, pl);
            for (int p = 0; p < np; p++)
                pacc[p] = _mm512_dpbusd_epi32(pacc[p], pl[p], _mm512_load_si512((const void *)(xbase + c * cw + 64 * p)));
        });
        for (int p = 0; p < planes_of(format); p++) acc[0] = _mm512_add_epi32(acc[0], pacc[p]);
    } else {
        FOR_EACH_CHUNK(format, w, {
            __m512i pl[5];
            if (NB <= 2) _mm_prefetch((const char *)(row + c * 64 + EK_PREFETCH), _MM_HINT_T0); /* decode */
            int np = decode_planes(format, row + c * 64, n, pl);
            for (int b = 0; b < NB; b++) acc[b] = chunk_dot(acc[b], np, pl, xbase + b * xs + c * cw);
        });
    }
    int32_t off = code_offset(w, r, 0, 1);
    for (int b = 0; b < NB; b++) {
        int64_t t = t0 + b;
        int32_t s = _mm512_reduce_add_epi32(acc[b]) - off * a->gsum[t];
        float as = a->scale[t];
        y[t * ldy + r] = w->per_tensor ? ((float)s * as) * w->scales[0] : ((float)s * w->scales[r]) * as;
    }
}

/* Scales of the lanes of chunk c: lane j covers columns c * cw + j * cw / 16 ... of one group; the chunk spans
 * n_scales = cw / group groups (1 if group >= cw), loaded (masked to the groups the row has) and spread. */
EK_INLINE __m512 lane_scales(const float *srow, int64_t first, int n_scales, int64_t groups, __m512i spread) {
    if (n_scales <= 1) return _mm512_set1_ps(srow[first]);
    int64_t have = groups - first < n_scales ? groups - first : n_scales;
    __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << have) - 1u), srow + first);
    return _mm512_permutexvar_ps(spread, v);
}

/* sum_g (float)(c_g * gsum_g) * s_g: what the unsigned codes added to each group, removed in one pass. */
EK_INLINE float group_correction(const ek_weight *w, int64_t r, int64_t groups, const int32_t *gs, const float *srow) {
    const uint8_t *zeros = w->zeros ? w->zeros + r * groups : NULL;
    __m512i off = _mm512_set1_epi32(ek_format_offset(w->format));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g += 16) {
        int64_t n = groups - g < 16 ? groups - g : 16;
        __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512i c = zeros ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, zeros + g)) : off;
        __m512i prod = _mm512_mullo_epi32(c, _mm512_maskz_loadu_epi32(m, gs + g));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), _mm512_maskz_loadu_ps(m, srow + g), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* Decode with groups of 32 weights (the Q8_0 / Q4_0 class: the int8 output layer, ek_i4 g32), for NB = 1 or 2
 * tokens (2: a float-activation model's two int8 passes, x and its residual, which then share one read of the
 * weights): chunk c spans gpc = cw / 32 groups, 16 / gpc lanes per group. 16 / gpc chunks share one contiguous
 * load of 16 scales, spread to the lanes by a constant vpermps per position (the generic group_block computed
 * each chunk's first group with a 64-bit division, a masked load and a run-time mask: 29 GB/s for ek_i8 g32 in
 * L2 against 91 for one scale per row). Two float accumulators per token, so consecutive chunks' FMAs do not
 * wait on each other. sums[b] = sum over the row of (float)dot_lane * scale_lane for token b. */
EK_INLINE void group32_rows(const int format, const int NB, const ek_weight *w, const int8_t *x, int64_t xs,
                            int64_t r, float *sums) {
    const int np = planes_of(format), gpc = 2 * np; /* cw / 32 (np is 1, 2 or 4: ek_t1 has no group kernel) */
    const int64_t cw = 64 * (int64_t)np, groups = w->cols / 32;
    const int spb = 16 / gpc;                    /* chunks per block of 16 scales */
    const uint8_t *row = w->data + r * w->row_bytes;
    const float *srow = w->scales + r * groups;
    const int64_t full = w->cols / cw, last = (w->cols % cw) / np;
    __m512 acc0[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, acc1[2] = {acc0[0], acc0[0]};
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i spread = _mm512_srli_epi32(lane, __builtin_ctz(16 / gpc)); /* lane -> group within chunk */
    int64_t c = 0;
    for (; c + spb <= full; c += spb) { /* whole blocks: 16 groups, one unmasked scale load */
        __m512 sv = _mm512_loadu_ps(srow + c * gpc);
        for (int j = 0; j < spb; j++) {
            const uint8_t *src = row + (c + j) * 64;
            _mm_prefetch((const char *)(src + EK_PREFETCH), _MM_HINT_T0);
            __m512i pl[5];
            decode_planes(format, src, 64, pl);
            __m512 s = _mm512_permutexvar_ps(_mm512_add_epi32(spread, _mm512_set1_epi32(j * gpc)), sv);
            for (int b = 0; b < NB; b++) {
                __m512 d = _mm512_cvtepi32_ps(chunk_dot(_mm512_setzero_si512(), np, pl, x + b * xs + (c + j) * cw));
                if (j & 1) acc1[b] = _mm512_fmadd_ps(d, s, acc1[b]);
                else acc0[b] = _mm512_fmadd_ps(d, s, acc0[b]);
            }
        }
    }
    for (; c < full + (last ? 1 : 0); c++) { /* the rest: masked scales, the last chunk possibly partial */
        int64_t first = c * gpc, have = groups - first < gpc ? groups - first : gpc;
        __m512 sv = _mm512_maskz_loadu_ps((__mmask16)((1u << have) - 1u), srow + first);
        __m512 s = _mm512_permutexvar_ps(spread, sv);
        __m512i pl[5];
        decode_planes(format, row + c * 64, c < full ? 64 : last, pl);
        for (int b = 0; b < NB; b++)
            acc0[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(chunk_dot(_mm512_setzero_si512(), np, pl, x + b * xs + c * cw)),
                                      s, acc0[b]);
    }
    for (int b = 0; b < NB; b++) sums[b] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[b], acc1[b]));
}

/* Per-group scales: lanes scaled in float (FMA) for NB tokens [t0, t0 + NB). */
EK_INLINE void group_block(const int format, const int NB, const ek_weight *w, const ek_act *a,
                           const int8_t *xbase, int64_t xs, int64_t r, int64_t t0, float *y, int64_t ldy) {
    const int64_t cw = 64 * (int64_t)planes_of(format), groups = w->cols / w->group;
    const uint8_t *row = w->data + r * w->row_bytes;
    const float *srow = w->scales + r * groups;
    int n_scales = w->group >= cw ? 1 : (int)(cw / w->group);
    int shift = __builtin_ctz(16 / (unsigned)(n_scales > 0 ? n_scales : 1)); /* lanes per group = 1 << shift */
    __m512i spread = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), shift);
    if (NB <= 2 && w->group == 32) {
        float sums[2];
        group32_rows(format, NB, w, xbase, xs, r, sums);
        for (int b = 0; b < NB; b++) {
            int64_t t = t0 + b;
            y[t * ldy + r] = (sums[b] - group_correction(w, r, groups, a->gsum + t * groups, srow)) * a->scale[t];
        }
        return;
    }
    __m512 acc[TB];
    for (int b = 0; b < NB; b++) acc[b] = _mm512_setzero_ps();
    FOR_EACH_CHUNK(format, w, {
        __m512i pl[5];
        if (NB <= 2) _mm_prefetch((const char *)(row + c * 64 + EK_PREFETCH), _MM_HINT_T0);
        int np = decode_planes(format, row + c * 64, n, pl);
        __m512 sv = lane_scales(srow, c * cw / w->group, n_scales, groups, spread);
        for (int b = 0; b < NB; b++) {
            __m512i d = chunk_dot(_mm512_setzero_si512(), np, pl, xbase + b * xs + c * cw);
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, acc[b]);
        }
    });
    for (int b = 0; b < NB; b++) {
        int64_t t = t0 + b;
        float sum = _mm512_reduce_add_ps(acc[b]) - group_correction(w, r, groups, a->gsum + t * groups, srow);
        y[t * ldy + r] = sum * a->scale[t];
    }
}

/* Decode GEMV, one scale per row or tensor: 16 rows at a time, each row's int32 lanes reduced together with
 * the other 15 (a 16 x 16 transpose-add: 3 levels of unpack/shuffle instead of 16 horizontal sums) and
 * finished in one vector: perf showed the per-row horizontal sum and scalar epilogue at ~30% of decode. The
 * integer sums are exact in any order and the float steps are the scalar ones, lane by lane (bit-exact). */
EK_INLINE __m512i row_sum_vector(const int format, const ek_weight *w, const int8_t *x, int64_t r) {
    const int64_t cw = 64 * (int64_t)planes_of(format);
    const uint8_t *row = w->data + r * w->row_bytes;
    /* one vpdpbusd chain per plane (5-cycle latency). Alternating chunks over 4 chains for int8 / 4-bit rows
     * indexed the accumulators at run time, which put them on the stack: i4 decode fell from 56 to 35 Gw/s. */
    __m512i pacc[5];
    for (int p = 0; p < 5; p++) pacc[p] = _mm512_setzero_si512();
    /* 2-bit codes: plane p masked in place (its codes times 4^p) instead of shifted down and masked, and the factor
     * shifted out of the int32 sums once per row: 4 ops fewer per 64 bytes. Measured (kernel_bench.py, DRAM, 2
     * threads, Sapphire Rapids, same loaded VM): ek_t2 6912x2560 52.4 -> 58.7 Gw/s, 2560x2560 49.7 -> 58.3. */
    if (planes_of(format) == 4) {
        const __m512i m0 = _mm512_set1_epi8(3), m1 = _mm512_set1_epi8(12), m2 = _mm512_set1_epi8(48),
                      m3 = _mm512_set1_epi8((char)192);
        FOR_EACH_CHUNK(format, w, {
            _mm_prefetch((const char *)(row + c * 64 + EK_PREFETCH), _MM_HINT_T0);
            __m512i v = n >= 64 ? _mm512_loadu_si512((const void *)(row + c * 64))
                                : _mm512_maskz_loadu_epi8((__mmask64)(~0ULL >> (64 - n)), (const void *)(row + c * 64));
            const int8_t *xc = x + c * cw;
            pacc[0] = _mm512_dpbusd_epi32(pacc[0], _mm512_and_si512(v, m0), _mm512_load_si512((const void *)xc));
            pacc[1] = _mm512_dpbusd_epi32(pacc[1], _mm512_and_si512(v, m1), _mm512_load_si512((const void *)(xc + 64)));
            pacc[2] = _mm512_dpbusd_epi32(pacc[2], _mm512_and_si512(v, m2), _mm512_load_si512((const void *)(xc + 128)));
            pacc[3] = _mm512_dpbusd_epi32(pacc[3], _mm512_and_si512(v, m3), _mm512_load_si512((const void *)(xc + 192)));
        });
        /* pacc[p] = 4^p * sum(c_p * x) exactly (|4^p c x| <= 192 * 128 per product, K / 64 products per lane:
         * far below 2^31), so the arithmetic shifts are exact: the same int32 sums as decode_planes' shifts. */
        return _mm512_add_epi32(_mm512_add_epi32(pacc[0], _mm512_srai_epi32(pacc[1], 2)),
                                _mm512_add_epi32(_mm512_srai_epi32(pacc[2], 4), _mm512_srai_epi32(pacc[3], 6)));
    }
    FOR_EACH_CHUNK(format, w, {
        __m512i pl[5];
        _mm_prefetch((const char *)(row + c * 64 + EK_PREFETCH), _MM_HINT_T0);
        int np = decode_planes(format, row + c * 64, n, pl);
        for (int p = 0; p < np; p++)
            pacc[p] = _mm512_dpbusd_epi32(pacc[p], pl[p], _mm512_load_si512((const void *)(x + c * cw + 64 * p)));
    });
    __m512i acc = pacc[0];
    for (int p = 1; p < planes_of(format); p++) acc = _mm512_add_epi32(acc, pacc[p]);
    return acc;
}

/* Lane i of the result = sum of the 16 lanes of v[i]. */
EK_INLINE __m512i transpose_add16(const __m512i *v) {
    __m512i u[8], z[4];
    for (int k = 0; k < 8; k++) /* per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 */
        u[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
    for (int m = 0; m < 4; m++) /* per 128-bit lane: rows 4m..4m+3, each over that lane's 4 elements */
        z[m] = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2 * m], u[2 * m + 1]), _mm512_unpackhi_epi64(u[2 * m], u[2 * m + 1]));
    __m512i s01 = _mm512_add_epi32(_mm512_shuffle_i32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512i s23 = _mm512_add_epi32(_mm512_shuffle_i32x4(z[2], z[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_i32x4(z[2], z[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

EK_INLINE void decode_rows16(const int format, const ek_weight *w, const ek_act *a, const int8_t *x, int64_t r0,
                             int64_t n, float *y) {
    __m512i v[16];
    for (int i = 0; i < 16; i++) v[i] = i < n ? row_sum_vector(format, w, x, r0 + i) : _mm512_setzero_si512();
    __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
    __m512i off = w->zeros ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, w->zeros + r0))
                           : _mm512_set1_epi32(ek_format_offset(format));
    __m512i sum = _mm512_sub_epi32(transpose_add16(v), _mm512_mullo_epi32(off, _mm512_set1_epi32(a->gsum[0])));
    __m512 f = _mm512_cvtepi32_ps(sum), as = _mm512_set1_ps(a->scale[0]);
    f = w->per_tensor ? _mm512_mul_ps(_mm512_mul_ps(f, as), _mm512_set1_ps(w->scales[0]))
                      : _mm512_mul_ps(_mm512_mul_ps(f, _mm512_maskz_loadu_ps(m, w->scales + r0)), as);
    _mm512_mask_storeu_ps(y + r0, m, f);
}

EK_INLINE void row_tokens(const int format, const int NB, const ek_weight *w, const ek_act *a, const int8_t *x,
                          int64_t xs, int64_t r, int64_t t0, float *y, int64_t ldy) {
    if (w->group == w->cols) single_block(format, NB, w, a, x + t0 * xs, xs, r, t0, y, ldy);
    else group_block(format, NB, w, a, x + t0 * xs, xs, r, t0, y, ldy);
}

/* Rows [r0, r1) for all tokens. Decode (T = 1): row by row. Prefill: token blocks outermost, so one block's
 * permuted activations (TB * K bytes, 20 KiB at K = 2560) stay in L1 while the row chunk's weights stream
 * from L2 once per block; rows outermost re-read all T * K activation bytes from L2 per row and ran at half
 * the speed (t2 6912 x 2560, T = 128: 37 -> see the commit log / lut.c table for the measured numbers). */
EK_INLINE void rows_int_body(const int format, const ek_weight *w, const ek_act *a, const void *scratch,
                             float *y, int64_t ldy, int64_t r0, int64_t r1) {
    int64_t xs = xstride_of(w), t0 = 0;
    const int8_t *x = (const int8_t *)scratch;
    if (a->tokens == 1 && w->group == w->cols) {
        for (int64_t r = r0; r < r1; r += 16) decode_rows16(format, w, a, x, r, r1 - r < 16 ? r1 - r : 16, y);
        return;
    }
    for (; t0 + TB <= a->tokens; t0 += TB)
        for (int64_t r = r0; r < r1; r++) row_tokens(format, TB, w, a, x, xs, r, t0, y, ldy);
    for (; t0 + 4 <= a->tokens; t0 += 4)
        for (int64_t r = r0; r < r1; r++) row_tokens(format, 4, w, a, x, xs, r, t0, y, ldy);
    /* T = 2 (a float-activation model's decode: x and its int8 residual) reads each row once for both */
    for (; t0 + 2 <= a->tokens; t0 += 2)
        for (int64_t r = r0; r < r1; r++) row_tokens(format, 2, w, a, x, xs, r, t0, y, ldy);
    for (; t0 < a->tokens; t0++)
        for (int64_t r = r0; r < r1; r++) row_tokens(format, 1, w, a, x, xs, r, t0, y, ldy);
}

#define ROWS_FN(name, fmt)                                                                                      \
    static EK_AVX512 void name(const ek_weight *w, const ek_act *a, const void *scratch, float *y, int64_t ldy, \
                               int64_t r0, int64_t r1) {                                                        \
        rows_int_body(fmt, w, a, scratch, y, ldy, r0, r1);                                                      \
    }
ROWS_FN(rows_t2, EK_FMT_T2)
ROWS_FN(rows_t1, EK_FMT_T1)
ROWS_FN(rows_i2, EK_FMT_I2)
ROWS_FN(rows_i4, EK_FMT_I4)
ROWS_FN(rows_u2, EK_FMT_U2)
ROWS_FN(rows_u4, EK_FMT_U4)
ROWS_FN(rows_i8, EK_FMT_I8)

/* One scale per row/tensor: the exact single-sum kernel; per-group scales: the lane-scaled kernel, if groups
 * line up with the int32 lanes (a power of two of at least cw / 16 columns). */
static int supports_vnni(const ek_weight *w, int64_t tokens, const char **reason) {
    (void)tokens;
    int64_t cw = chunk_cols(w->format), gsz = w->group;
    if (gsz == w->cols) return 1;
    if (gsz & (gsz - 1)) { *reason = "group size is not a power of two"; return 0; }
    if (gsz < cw / 16) { *reason = "group smaller than the columns of one int32 lane"; return 0; }
    if (w->format == EK_FMT_T1) {
        *reason = "ek_t1 with per-group scales: its 320-column base-3 chunks (20 columns per lane) straddle groups";
        return 0;
    }
    return 1;
}

/* ---- kernel table ------------------------------------------------------------------------------------- */

#define VNNI_KERNEL(fmt, tag) \
    {#tag "_vnni_avx512", fmt, EK_ACT_I8, EK_LAYOUT_NATIVE, 1, supports_vnni, vnni_scratch, permute_activations, rows_##tag}

static const ek_kernel vnni_kernels[] = {
    VNNI_KERNEL(EK_FMT_T2, t2), VNNI_KERNEL(EK_FMT_T1, t1), VNNI_KERNEL(EK_FMT_I2, i2), VNNI_KERNEL(EK_FMT_I4, i4),
    VNNI_KERNEL(EK_FMT_U2, u2), VNNI_KERNEL(EK_FMT_U4, u4), VNNI_KERNEL(EK_FMT_I8, i8),
};

const ek_kernel *ek_avx512_lut_kernel(int format, int act_kind, int layout, int64_t tokens); /* lut.c */

const ek_kernel *ek_avx512_kernel(int format, int act_kind, int layout, int64_t tokens) {
    if (layout != EK_LAYOUT_NATIVE) return ek_avx512_lut_kernel(format, act_kind, layout, tokens);
    if (ek_format_is_float(format)) return ek_avx2_kernel(format, act_kind, layout, tokens); /* FMA: AVX2's */
    if (act_kind != EK_ACT_I8) return NULL;
    for (size_t i = 0; i < sizeof vnni_kernels / sizeof vnni_kernels[0]; i++)
        if (vnni_kernels[i].format == format) return &vnni_kernels[i];
    return NULL;
}
#else
const ek_kernel *ek_avx512_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
#endif
