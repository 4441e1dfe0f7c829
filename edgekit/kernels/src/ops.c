/* The native engine's element-wise steps and decode attention in C (edgekit/runtime/native_ops.py is the numpy
 * twin and the oracle; edgekit/kernels/ops.py binds these with ctypes, which releases the GIL).
 *
 * Why: on the BitNet b1.58 2B4T decode these steps took ~8 ms of a ~60 ms token in numpy (2 threads, Sapphire
 * Rapids, scripts/decode_profile.py --prompt-length 128 --breakdown: attend 140 us, rms_norm 20 us, apply_rope
 * 23 us, relu2_gate 18 us per call), almost all of it per-call overhead of small numpy operations.
 *
 * Exactness (tests/kernels/test_ops.py holds each to numpy):
 *   - ek_rms_norm is bit-identical to native_ops.rms_norm: the sum of squares is numpy's own pairwise summation
 *     (8 accumulators over blocks of at most 128, halves split at a multiple of 8; what np.add.reduce does on a
 *     contiguous float32 row), then the same float32 divide, add, sqrt, divide and multiply;
 *   - ek_rope and ek_relu2_gate perform numpy's float32 operations in numpy's order (bit-identical; setup.py
 *     builds with -ffp-contract=off, so no multiply-add is fused);
 *   - ek_attend_decode is not bit-identical: its dot products sum in another order than BLAS and expf is
 *     libm's, not numpy's SIMD exp; the engine's attention was already not the reference's float64 one
 *     (native.py's module doc), and results agree to float32 rounding (~1e-6 relative).
 * Functions carry target_clones where vectorization pays (x86-64: AVX-512 / AVX2 / baseline chosen at load).
 */
#include "ek_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { EK_KV_F32 = 0, EK_KV_F16 = 1 }; /* ek_attend_decode_kv's kv_type */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EK_CLONES
#endif

#define PW_BLOCK 128 /* numpy's PW_BLOCKSIZE */

/* numpy's pairwise_sum of x[i]^2 for a contiguous float32 row (loops_utils.h.src), operation for operation. */
static float pairwise_squares(const float *x, int64_t n) {
    if (n < 8) {
        float res = 0.0f;
        for (int64_t i = 0; i < n; i++) res += x[i] * x[i];
        return res;
    }
    if (n <= PW_BLOCK) {
        float r[8];
        for (int j = 0; j < 8; j++) r[j] = x[j] * x[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += x[i + j] * x[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += x[i] * x[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_squares(x, n2) + pairwise_squares(x + n2, n - n2);
}

EK_CLONES
void ek_rms_norm(const float *x, int64_t rows, int64_t n, int64_t ldx, const float *weight, float eps, float *out,
                 int64_t ldo) {
    for (int64_t t = 0; t < rows; t++) {
        const float *row = x + t * ldx;
        float *dst = out + t * ldo;
        float denom = pairwise_squares(row, n) / (float)n; /* mean_square: add.reduce, then /= n */
        denom = sqrtf(denom + eps);
        if (weight)
            for (int64_t i = 0; i < n; i++) dst[i] = (row[i] / denom) * weight[i];
        else
            for (int64_t i = 0; i < n; i++) dst[i] = row[i] / denom;
    }
}

/* np.maximum(gate, 0) keeps a NaN gate (NaN propagates); squared, times up. */
EK_CLONES
void ek_relu2_gate(const float *gate, const float *up, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        g = g > 0.0f || g != g ? g : 0.0f;
        out[i] = (g * g) * up[i];
    }
}

/* native_ops.apply_rope: x [T, heads, hd] (token stride ldx floats, heads contiguous), cos/sin [T, hd / 2]
 * -> out [T, heads, hd] contiguous: first half x1 cos - x2 sin, second half x2 cos + x1 sin. */
EK_CLONES
void ek_rope(const float *x, int64_t tokens, int64_t heads, int64_t hd, int64_t ldx, const float *cos_t,
             const float *sin_t, float *out) {
    int64_t half = hd / 2;
    for (int64_t t = 0; t < tokens; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int64_t h = 0; h < heads; h++) {
            const float *x1 = x + t * ldx + h * hd, *x2 = x1 + half;
            float *o1 = out + (t * heads + h) * hd, *o2 = o1 + half;
            for (int64_t i = 0; i < half; i++) {
                o1[i] = x1[i] * c[i] - x2[i] * s[i];
                o2[i] = x2[i] * c[i] + x1[i] * s[i];
            }
        }
    }
}

#define DOT_LANES 16

static inline float dot_row(const float *a, const float *b, int64_t n) {
    float acc[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int j = 0; j < DOT_LANES; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < DOT_LANES; j++) s += acc[j];
    return s;
}

/* Portable attention of one query head over S rows of k/v: scores in scratch, out [hd]. */
static void attend_head(const float *qh, const float *k, const float *v, int64_t hd, int64_t S, float scale,
                        float *out, float *scratch) {
    float m = -INFINITY;
    for (int64_t s = 0; s < S; s++) {
        float score = dot_row(qh, k + s * hd, hd) * scale;
        scratch[s] = score;
        if (score > m) m = score;
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < S; s++) {
        float e = expf(scratch[s] - m);
        scratch[s] = e;
        sum += e;
    }
    memset(out, 0, sizeof(float) * (size_t)hd);
    for (int64_t s = 0; s < S; s++) {
        float p = scratch[s] / sum;
        const float *vs = v + s * hd;
        for (int64_t d = 0; d < hd; d++) out[d] += p * vs[d];
    }
}

/* IEEE binary16 -> float32, exactly (subnormals, Inf and NaN included): the portable path's widening. */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1fu) bits = sign | 0x7f800000u | (man << 13);          /* Inf / NaN */
    else if (exp) bits = sign | ((exp + 112u) << 23) | (man << 13);     /* normal: rebias 15 -> 127 */
    else if (!man) bits = sign;                                          /* +-0 */
    else {                                                               /* subnormal: normalize */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* attend_head over float16 rows: each key and value row widened into `row` (hd floats) first. */
static void attend_head_f16(const float *qh, const uint16_t *k, const uint16_t *v, int64_t hd, int64_t S,
                            float scale, float *out, float *scratch, float *row) {
    float m = -INFINITY;
    for (int64_t s = 0; s < S; s++) {
        for (int64_t d = 0; d < hd; d++) row[d] = half_to_float(k[s * hd + d]);
        float score = dot_row(qh, row, hd) * scale;
        scratch[s] = score;
        if (score > m) m = score;
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < S; s++) {
        float e = expf(scratch[s] - m);
        scratch[s] = e;
        sum += e;
    }
    memset(out, 0, sizeof(float) * (size_t)hd);
    for (int64_t s = 0; s < S; s++) {
        float p = scratch[s] / sum;
        const uint16_t *vs = v + s * hd;
        for (int64_t d = 0; d < hd; d++) out[d] += p * half_to_float(vs[d]);
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define GMAX 8 /* query heads per kv head handled together (GQA group) */

/* exp(x) for x <= 0 (scores minus their max): 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], Cephes' degree-6
 * polynomial (relative error ~2e-7); x < -87.3 gives 0. */
static inline EK_AVX512 __m512 exp_nonpositive(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2_hi = _mm512_set1_ps(0.693359375f),
                 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 e = _mm512_scalef_ps(p, n);
    return _mm512_maskz_mov_ps((__mmask16)~tiny, e);
}

/* One kv head's group of g <= GMAX query heads (hd a multiple of 16): each key and value row is read once for
 * the whole group. scratch: g * S floats (scores, then probabilities). */
static EK_AVX512 void attend_group_avx512(const float *q, int g, const float *k, const float *v, int64_t hd,
                                          int64_t S, float scale, float *out, float *scratch) {
    float mx[GMAX], inv[GMAX];
    for (int j = 0; j < g; j++) mx[j] = -INFINITY;
    for (int64_t s = 0; s < S; s++) {
        const float *ks = k + s * hd;
        for (int j = 0; j < g; j++) {
            const float *qj = q + j * hd;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t d = 0; d < hd; d += 16)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(qj + d), _mm512_loadu_ps(ks + d), acc);
            float score = _mm512_reduce_add_ps(acc) * scale;
            scratch[j * S + s] = score;
            if (score > mx[j]) mx[j] = score;
        }
    }
    for (int j = 0; j < g; j++) {
        float *row = scratch + j * S;
        __m512 m = _mm512_set1_ps(mx[j]), sum = _mm512_setzero_ps();
        int64_t s = 0;
        for (; s + 16 <= S; s += 16) {
            __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + s), m));
            _mm512_storeu_ps(row + s, e);
            sum = _mm512_add_ps(sum, e);
        }
        if (s < S) {
            __mmask16 tail = (__mmask16)((1u << (S - s)) - 1u);
            __m512 e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, row + s), m)));
            _mm512_mask_storeu_ps(row + s, tail, e);
            sum = _mm512_add_ps(sum, e);
        }
        inv[j] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    for (int64_t d0 = 0; d0 < hd; d0 += 64) { /* 4 zmm of a value row per head: g * 4 accumulators */
        int nv = (int)((hd - d0) / 16 < 4 ? (hd - d0) / 16 : 4);
        __m512 acc[GMAX][4];
        for (int j = 0; j < g; j++)
            for (int c = 0; c < 4; c++) acc[j][c] = _mm512_setzero_ps();
        for (int64_t s = 0; s < S; s++) {
            const float *vs = v + s * hd + d0;
            __m512 vr[4];
            for (int c = 0; c < nv; c++) vr[c] = _mm512_loadu_ps(vs + 16 * c);
            for (int j = 0; j < g; j++) {
                __m512 p = _mm512_set1_ps(scratch[j * S + s]);
                for (int c = 0; c < nv; c++) acc[j][c] = _mm512_fmadd_ps(p, vr[c], acc[j][c]);
            }
        }
        for (int j = 0; j < g; j++)
            for (int c = 0; c < nv; c++)
                _mm512_storeu_ps(out + j * hd + d0 + 16 * c, _mm512_mul_ps(acc[j][c], _mm512_set1_ps(inv[j])));
    }
}

#define EK_AVX2F16 __attribute__((target("avx2,fma,f16c")))

/* exp_nonpositive on 8 lanes: the same Cephes polynomial, 2^n built in the exponent bits (n >= -126 after the
 * clamp, so always a normal float). */
static inline EK_AVX2F16 __m256 exp_nonpositive8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

/* 8 floats of a key/value row: float32 as is, float16 widened with F16C (vcvtph2ps, exact). */
static inline EK_AVX2F16 __m256 load_kv8(const void *row, int64_t d, int f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + d)));
    return _mm256_loadu_ps((const float *)row + d);
}

/* The 8 lane sums of a[0..7] as one vector (lane j = sum of a[j]). */
static inline EK_AVX2F16 __m256 hsum8x8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* One kv head's group of g <= GMAX query heads over float32 or float16 rows (hd a multiple of 16), AVX2 + FMA
 * + F16C: each key row is read once for the group; scratch holds S x 8 floats, lane j of row s the score, then
 * the unnormalized probability, of head j at position s (max, exp and sum run on 8 heads at once). Values are
 * summed 16 floats x 4 heads at a time (11 ymm live), passes over the group's value rows come from L1/L2. */
static inline __attribute__((always_inline)) EK_AVX2F16 void attend_group_avx2(
        const float *q, int g, const void *k, const void *v, int f16, int64_t hd, int64_t S, float scale,
        float *out, float *scratch) {
    const size_t esize = f16 ? 2 : 4;
    __m256 mx = _mm256_set1_ps(-INFINITY), vscale = _mm256_set1_ps(scale);
    for (int64_t s = 0; s < S; s++) {
        const char *ks = (const char *)k + (size_t)(s * hd) * esize;
        __m256 acc[GMAX];
        for (int j = 0; j < GMAX; j++) acc[j] = _mm256_setzero_ps();
        for (int64_t d = 0; d < hd; d += 8) {
            __m256 kr = load_kv8(ks, d, f16);
            for (int j = 0; j < g; j++) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + j * hd + d), kr, acc[j]);
        }
        __m256 sc = _mm256_mul_ps(hsum8x8(acc), vscale);
        _mm256_storeu_ps(scratch + 8 * s, sc);
        mx = _mm256_max_ps(mx, sc);
    }
    __m256 sum = _mm256_setzero_ps();
    for (int64_t s = 0; s < S; s++) {
        __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(scratch + 8 * s), mx));
        _mm256_storeu_ps(scratch + 8 * s, e);
        sum = _mm256_add_ps(sum, e);
    }
    float inv[8];
    _mm256_storeu_ps(inv, _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
    for (int j0 = 0; j0 < g; j0 += 4) {
        int nj = g - j0 < 4 ? g - j0 : 4;
        for (int64_t d0 = 0; d0 < hd; d0 += 16) {
            __m256 acc[4][2];
            for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
            for (int64_t s = 0; s < S; s++) {
                const char *vs = (const char *)v + (size_t)(s * hd) * esize;
                __m256 v0 = load_kv8(vs, d0, f16), v1 = load_kv8(vs, d0 + 8, f16);
                for (int j = 0; j < nj; j++) {
                    __m256 p = _mm256_broadcast_ss(scratch + 8 * s + j0 + j);
                    acc[j][0] = _mm256_fmadd_ps(p, v0, acc[j][0]);
                    acc[j][1] = _mm256_fmadd_ps(p, v1, acc[j][1]);
                }
            }
            for (int j = 0; j < nj; j++) {
                __m256 iv = _mm256_set1_ps(inv[j0 + j]);
                _mm256_storeu_ps(out + (j0 + j) * hd + d0, _mm256_mul_ps(acc[j][0], iv));
                _mm256_storeu_ps(out + (j0 + j) * hd + d0 + 8, _mm256_mul_ps(acc[j][1], iv));
            }
        }
    }
}

static EK_AVX2F16 void attend_group_avx2_f32(const float *q, int g, const float *k, const float *v, int64_t hd,
                                             int64_t S, float scale, float *out, float *scratch) {
    attend_group_avx2(q, g, k, v, 0, hd, S, scale, out, scratch);
}

static EK_AVX2F16 void attend_group_avx2_f16(const float *q, int g, const uint16_t *k, const uint16_t *v,
                                             int64_t hd, int64_t S, float scale, float *out, float *scratch) {
    attend_group_avx2(q, g, k, v, 1, hd, S, scale, out, scratch);
}

static int avx512_ok(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}
#endif

/* Decode attention of one token: q [heads, hd]; keys/values [kv_heads, S, hd] float32 (kv_type EK_KV_F32) or
 * IEEE float16 (EK_KV_F16, widened exactly to float32 as they are read) with head stride `lds` elements (rows of
 * one head contiguous); head h reads kv head h / (heads / kv_heads). scores = (q . k) * scale, softmax over
 * the S positions (max subtracted), out [heads, hd] = sum_s p_s v_s. `scratch` holds max(8, heads / kv_heads) * S
 * floats. Paths (hd a multiple of 16, groups of <= 8 heads): AVX-512 for float32 rows on the AVX-512 ISA; AVX2 +
 * FMA + F16C for float16 rows on either x86 ISA and for float32 rows on the AVX2 ISA (a kv head's query heads
 * share each key/value row read, exp is a polynomial, relative error ~2e-7); elsewhere a portable loop with
 * libm's expf. Returns EK_ERR_ARG (nothing written) on an invalid size or kv_type. */
int ek_attend_decode_kv(const float *q, int64_t heads, int64_t kv_heads, int64_t hd, const void *keys,
                        const void *values, int kv_type, int64_t lds, int64_t S, float scale, float *out,
                        float *scratch) {
    if (!q || !keys || !values || !out || !scratch || heads < 1 || kv_heads < 1 || heads % kv_heads || hd < 1 ||
        S < 1 || (kv_heads > 1 && lds < S * hd) || (kv_type != EK_KV_F32 && kv_type != EK_KV_F16))
        return EK_ERR_ARG;
    int64_t group = heads / kv_heads;
    const float *kf = keys, *vf = values;
    const uint16_t *kh = keys, *vh = values;
#if defined(__x86_64__) || defined(__i386__)
    int isa = ek_get_isa();
    if (hd % 16 == 0 && group <= GMAX) {
        if (kv_type == EK_KV_F32 && isa == EK_ISA_AVX512 && avx512_ok()) {
            for (int64_t h = 0; h < kv_heads; h++)
                attend_group_avx512(q + h * group * hd, (int)group, kf + h * lds, vf + h * lds, hd, S, scale,
                                    out + h * group * hd, scratch);
            return EK_OK;
        }
        if (isa == EK_ISA_AVX2 || (isa == EK_ISA_AVX512 && kv_type == EK_KV_F16)) { /* the ISA implies F16C */
            for (int64_t h = 0; h < kv_heads; h++) {
                if (kv_type == EK_KV_F16)
                    attend_group_avx2_f16(q + h * group * hd, (int)group, kh + h * lds, vh + h * lds, hd, S,
                                          scale, out + h * group * hd, scratch);
                else
                    attend_group_avx2_f32(q + h * group * hd, (int)group, kf + h * lds, vf + h * lds, hd, S,
                                          scale, out + h * group * hd, scratch);
            }
            return EK_OK;
        }
    }
#endif
    if (kv_type == EK_KV_F16) {
        float *row = malloc(sizeof(float) * (size_t)hd); /* one widened key or value row */
        if (!row) return EK_ERR_NOMEM;
        for (int64_t h = 0; h < heads; h++)
            attend_head_f16(q + h * hd, kh + (h / group) * lds, vh + (h / group) * lds, hd, S, scale,
                            out + h * hd, scratch, row);
        free(row);
        return EK_OK;
    }
    for (int64_t h = 0; h < heads; h++)
        attend_head(q + h * hd, kf + (h / group) * lds, vf + (h / group) * lds, hd, S, scale, out + h * hd,
                    scratch);
    return EK_OK;
}

/* ek_attend_decode_kv over float32 rows (the first entry point, kept for its callers). */
int ek_attend_decode(const float *q, int64_t heads, int64_t kv_heads, int64_t hd, const float *keys,
                     const float *values, int64_t lds, int64_t S, float scale, float *out, float *scratch) {
    return ek_attend_decode_kv(q, heads, kv_heads, hd, keys, values, EK_KV_F32, lds, S, scale, out, scratch);
}
