/* Dispatch: run-time ISA choice, argument checks, the per-call scratch and the thread pool around the
 * kernels of scalar.c / avx2.c / avx512.c / lut.c / lut_avx2.c / bitplane.c / neon*.c; plus activation quantization, the repack entry
 * points and the bandwidth probe. */
#include "ek_kernels.h"
#include "ek_pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int forced_isa = -1; /* -1: automatic (best available) */

int ek_abi_version(void) { return EK_ABI_VERSION; }

#if defined(__x86_64__) || defined(__i386__)
static int cpu_has_avx2(void) {
    /* libgcc's check includes the OS (XGETBV) enabling YMM state. */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
static int cpu_has_avx512(void) {
    /* libgcc checks XCR0 for the opmask and ZMM state as well as the CPUID bits. */
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512vbmi");
}
#else
static int cpu_has_avx2(void) { return 0; }
static int cpu_has_avx512(void) { return 0; }
const ek_kernel *ek_avx2_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
#endif

#if !defined(__aarch64__)
/* NEON back end (neon*.c) only exists on aarch64 builds. */
int ek_neon_supported(void) { return 0; }
const ek_kernel *ek_neon_kernel(int format, int act_kind, int layout, int64_t tokens) {
    (void)format; (void)act_kind; (void)layout; (void)tokens;
    return NULL;
}
#endif

int ek_isa_available(int isa) {
    switch (isa) {
    case EK_ISA_SCALAR: return 1;
    case EK_ISA_AVX2: return cpu_has_avx2();
    case EK_ISA_NEON: return ek_neon_supported();
    case EK_ISA_AVX512: return cpu_has_avx512();
    default: return 0;
    }
}

const char *ek_isa_name(int isa) {
    static const char *names[EK_ISA_COUNT] = {"scalar", "avx2", "neon", "avx512"};
    return isa >= 0 && isa < EK_ISA_COUNT ? names[isa] : "unknown";
}

int ek_get_isa(void) {
    if (forced_isa >= 0) return forced_isa;
    /* AVX-512 beats AVX2 on every format it covers, decode and prefill (measured table: avx512.c) */
    if (ek_isa_available(EK_ISA_AVX512)) return EK_ISA_AVX512;
    if (ek_isa_available(EK_ISA_AVX2)) return EK_ISA_AVX2;
    if (ek_isa_available(EK_ISA_NEON)) return EK_ISA_NEON;
    return EK_ISA_SCALAR;
}

int ek_set_isa(int isa) {
    if (isa == -1) { forced_isa = -1; return EK_OK; }
    if (!ek_isa_available(isa)) return EK_ERR_ISA;
    forced_isa = isa;
    return EK_OK;
}

int ek_set_num_threads(int n) { return ek_pool_resize(n); }
int ek_get_num_threads(void) { return ek_pool_threads(); }

const ek_kernel *ek_avx2_lut_kernel(int format, int act_kind, int layout, int64_t tokens);      /* lut_avx2.c */
const ek_kernel *ek_avx2_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens); /* bitplane.c */
const ek_kernel *ek_avx512_bitplane_kernel(int format, int act_kind, int layout, int64_t tokens);

/* Repacked layouts whose kernels live in their own files (LUT3 on AVX-512: lut.c, through avx512.c). */
static const ek_kernel *layout_kernel(int isa, int format, int act_kind, int layout, int64_t tokens) {
    if (layout == EK_LAYOUT_BITPLANE && isa == EK_ISA_AVX2)
        return ek_avx2_bitplane_kernel(format, act_kind, layout, tokens);
    if (layout == EK_LAYOUT_BITPLANE && isa == EK_ISA_AVX512)
        return ek_avx512_bitplane_kernel(format, act_kind, layout, tokens);
    if (layout == EK_LAYOUT_TERNARY_LUT3 && isa == EK_ISA_AVX2)
        return ek_avx2_lut_kernel(format, act_kind, layout, tokens);
    return NULL;
}

static const ek_kernel *isa_kernel(int isa, int format, int act_kind, int layout, int64_t tokens) {
    const ek_kernel *k = layout_kernel(isa, format, act_kind, layout, tokens);
    if (k) return k;
    switch (isa) {
    case EK_ISA_AVX2: return ek_avx2_kernel(format, act_kind, layout, tokens);
    case EK_ISA_NEON: return ek_neon_kernel(format, act_kind, layout, tokens);
    case EK_ISA_AVX512: return ek_avx512_kernel(format, act_kind, layout, tokens);
    default: return ek_scalar_kernel(format, act_kind, layout, tokens);
    }
}

const char *ek_isa_kernel_name(int isa, int format, int act_kind, int layout, int64_t tokens) {
    if (isa < 0 || isa >= EK_ISA_COUNT) return NULL;
    const ek_kernel *k = isa_kernel(isa, format, act_kind, layout, tokens);
    return k ? k->name : NULL;
}

const char *ek_kernel_choice(const ek_weight *w, int act_kind, int64_t tokens, const char **reason) {
    const char *why = "";
    int isa = ek_get_isa();
    const ek_kernel *k = isa_kernel(isa, w->format, act_kind, w->layout, tokens);
    if (k && k->supports && !k->supports(w, tokens, &why)) k = NULL;
    else if (!k && isa != EK_ISA_SCALAR) why = "no kernel for this format/activation on this ISA";
    if (!k) k = ek_scalar_kernel(w->format, act_kind, w->layout, tokens);
    if (reason) *reason = why;
    return k ? k->name : NULL;
}

static const ek_kernel *choose_kernel(const ek_weight *w, int act_kind, int64_t tokens) {
    const char *why = "";
    const ek_kernel *k = isa_kernel(ek_get_isa(), w->format, act_kind, w->layout, tokens);
    if (k && k->supports && !k->supports(w, tokens, &why)) k = NULL;
    return k ? k : ek_scalar_kernel(w->format, act_kind, w->layout, tokens);
}

static int check_args(const ek_weight *w, const ek_act *a, const float *y, int64_t ldy) {
    if (!w || !a || !y || !w->data || w->rows < 1 || w->cols < 1 || a->tokens < 1) return EK_ERR_ARG;
    if (w->format < EK_FMT_T2 || w->format > EK_FMT_F32 || a->cols != w->cols || ldy < w->rows)
        return EK_ERR_ARG;
    if (w->layout != EK_LAYOUT_NATIVE && w->layout != EK_LAYOUT_TERNARY_LUT3 && w->layout != EK_LAYOUT_BITPLANE)
        return EK_ERR_ARG;
    if (ek_format_is_float(w->format)) return a->kind == EK_ACT_F32 && a->x ? EK_OK : EK_ERR_UNSUPPORTED;
    if (a->kind == EK_ACT_F32 && (!a->x || a->x_cols < 0 || a->x_cols > a->cols)) return EK_ERR_ARG;
    if (a->kind == EK_ACT_I8 && (!a->q || !a->scale)) return EK_ERR_ARG;
    if ((a->kind != EK_ACT_I8 && a->kind != EK_ACT_F32) || !w->scales) return EK_ERR_UNSUPPORTED;
    if (w->group < 1 || w->cols % w->group != 0) return EK_ERR_ARG;
    if (ek_format_has_zeros(w->format) != (w->zeros != NULL)) return EK_ERR_ARG;
    return EK_OK;
}

/* Sums of q over each weight group [T, cols / group]: the zero-point and code-offset corrections. */
static int32_t *group_sums(const ek_weight *w, const ek_act *a) {
    int64_t groups = w->cols / w->group;
    int32_t *gsum = malloc(sizeof(int32_t) * (size_t)(a->tokens * groups));
    if (!gsum) return NULL;
    for (int64_t t = 0; t < a->tokens; t++)
        for (int64_t g = 0; g < groups; g++) {
            const int8_t *q = a->q + t * a->cols + g * w->group;
            int32_t s = 0;
            for (int64_t k = 0; k < w->group; k++) s += q[k];
            gsum[t * groups + g] = s;
        }
    return gsum;
}

typedef struct {
    const ek_kernel *k;
    const ek_weight *w;
    const ek_act *a;
    const void *scratch;
    float *y;
    int64_t ldy;
} linear_job;

static void linear_chunk(void *ctx, int64_t r0, int64_t r1) {
    linear_job *j = ctx;
    j->k->rows(j->w, j->a, j->scratch, j->y, j->ldy, r0, r1);
}

#ifndef EK_CHUNKS_PER_THREAD
#define EK_CHUNKS_PER_THREAD 2
#endif
/* Rows per chunk: several chunks per thread (load balance on shared cores), a multiple of the row tile. */
static int64_t chunk_rows(int64_t rows, int tile) {
    int64_t per = rows / ((int64_t)ek_pool_threads() * EK_CHUNKS_PER_THREAD);
    if (per < 16) per = 16;
    return (per + tile - 1) / tile * tile;
}

static int run_linear(const ek_weight *w, ek_act *a, float *y, int64_t ldy, const char **kernel_name);

int ek_linear(const ek_weight *w, const ek_act *a, float *y, int64_t ldy, const char **kernel_name) {
    int status = check_args(w, a, y, ldy);
    if (status != EK_OK) return status;
    ek_act act = *a;
    int8_t *qbuf = NULL;
    if (act.kind == EK_ACT_F32 && !ek_format_is_float(w->format)) { /* quantize per token here */
        int64_t xc = act.x_cols ? act.x_cols : act.cols;
        float *qscale = malloc(sizeof(float) * (size_t)act.tokens);
        if (!qscale || !(qbuf = malloc((size_t)(act.tokens * act.cols)))) { free(qscale); return EK_ERR_NOMEM; }
        ek_quantize_absmax_i8(act.x, act.tokens, xc, xc, qbuf, act.cols, qscale);
        act.kind = EK_ACT_I8, act.q = qbuf, act.scale = qscale, act.gsum = NULL;
    }
    status = run_linear(w, &act, y, ldy, kernel_name);
    if (qbuf) free((void *)act.scale);
    free(qbuf);
    return status;
}

static int run_linear(const ek_weight *w, ek_act *a, float *y, int64_t ldy, const char **kernel_name) {
    const ek_kernel *k = choose_kernel(w, a->kind, a->tokens);
    if (!k) return EK_ERR_UNSUPPORTED;
    ek_act act = *a;
    int32_t *gsum = NULL;
    if (act.kind == EK_ACT_I8 && !act.gsum) {
        if (!(gsum = group_sums(w, a))) return EK_ERR_NOMEM;
        act.gsum = gsum;
    }
    size_t bytes = k->scratch_bytes ? k->scratch_bytes(w, &act) : 0;
    void *scratch = NULL;
    if (bytes && posix_memalign(&scratch, 64, (bytes + 63) / 64 * 64) != 0) {
        free(gsum);
        return EK_ERR_NOMEM;
    }
    if (k->prepare) k->prepare(w, &act, scratch);
    linear_job job = {k, w, &act, scratch, y, ldy};
    int tile = k->row_tile > 0 ? k->row_tile : 1;
    ek_pool_run(linear_chunk, &job, w->rows, chunk_rows(w->rows, tile));
    free(scratch);
    free(gsum);
    if (kernel_name) *kernel_name = k->name;
    return EK_OK;
}

/* ---- several weights over one activation (gate/up, q/k/v unfused) ---------------------------------- */

#define EK_MULTI_MAX 8

typedef struct {
    int n;
    const ek_kernel *k[EK_MULTI_MAX];
    const ek_weight *w[EK_MULTI_MAX];
    ek_act act[EK_MULTI_MAX];
    void *scratch[EK_MULTI_MAX];
    float *y[EK_MULTI_MAX];
    int64_t offset[EK_MULTI_MAX + 1]; /* part i owns global rows [offset[i], offset[i] + rows_i); gaps pad tiles */
    int64_t ldy;
} multi_job;

static void multi_chunk(void *ctx, int64_t r0, int64_t r1) {
    multi_job *j = ctx;
    for (int i = 0; i < j->n; i++) {
        int64_t lo = r0 > j->offset[i] ? r0 : j->offset[i], end = j->offset[i] + j->w[i]->rows;
        int64_t hi = r1 < end ? r1 : end;
        if (lo < hi)
            j->k[i]->rows(j->w[i], &j->act[i], j->scratch[i], j->y[i], j->ldy, lo - j->offset[i], hi - j->offset[i]);
    }
}

/* ek_linear for n weights sharing one input: y [T, sum rows_i] (row stride ldy) holds their outputs side by side,
 * computed exactly as n ek_linear calls would (each part's own kernel, scratch and group sums), but the activation
 * is quantized once and every part's rows are shared among the threads in one pool run (one wake-up and one
 * barrier instead of n). The weights must have the same cols and all be float or all be integer formats. */
int ek_linear_multi(const ek_weight *const *ws, int n, const ek_act *a, float *y, int64_t ldy,
                    const char **kernel_name) {
    if (!ws || n < 1 || n > EK_MULTI_MAX || !a || !y) return EK_ERR_ARG;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!ws[i]) return EK_ERR_ARG;
        total += ws[i]->rows;
        if (ws[i]->cols != ws[0]->cols || ek_format_is_float(ws[i]->format) != ek_format_is_float(ws[0]->format))
            return EK_ERR_ARG;
    }
    for (int i = 0; i < n; i++) {
        int status = check_args(ws[i], a, y, ldy - (total - ws[i]->rows));
        if (status != EK_OK) return status;
    }
    ek_act act = *a;
    act.gsum = NULL; /* recomputed per part: a caller's sums are for one group size */
    int8_t *qbuf = NULL;
    float *qscale = NULL;
    if (act.kind == EK_ACT_F32 && !ek_format_is_float(ws[0]->format)) {
        int64_t xc = act.x_cols ? act.x_cols : act.cols;
        qscale = malloc(sizeof(float) * (size_t)act.tokens);
        if (!qscale || !(qbuf = malloc((size_t)(act.tokens * act.cols)))) { free(qscale); return EK_ERR_NOMEM; }
        ek_quantize_absmax_i8(act.x, act.tokens, xc, xc, qbuf, act.cols, qscale);
        act.kind = EK_ACT_I8, act.q = qbuf, act.scale = qscale, act.gsum = NULL;
    }
    multi_job job;
    memset(&job, 0, sizeof job);
    job.n = n, job.ldy = ldy;
    int status = EK_OK, tile_max = 1;
    int64_t col = 0;
    for (int i = 0; i < n && status == EK_OK; i++) {
        const ek_weight *w = ws[i];
        const ek_kernel *k = choose_kernel(w, act.kind, act.tokens);
        if (!k) { status = EK_ERR_UNSUPPORTED; break; }
        job.k[i] = k, job.w[i] = w, job.act[i] = act, job.y[i] = y + col;
        col += w->rows;
        if (act.kind == EK_ACT_I8) { /* group sums depend on the part's group size */
            if (!(job.act[i].gsum = group_sums(w, &act))) { status = EK_ERR_NOMEM; break; }
        }
        size_t bytes = k->scratch_bytes ? k->scratch_bytes(w, &job.act[i]) : 0;
        if (bytes && posix_memalign(&job.scratch[i], 64, (bytes + 63) / 64 * 64) != 0) {
            job.scratch[i] = NULL;
            status = EK_ERR_NOMEM;
            break;
        }
        if (k->prepare) k->prepare(w, &job.act[i], job.scratch[i]);
        int tile = k->row_tile > 0 ? k->row_tile : 1;
        if (tile > tile_max) tile_max = tile;
    }
    if (status == EK_OK) {
        /* part offsets rounded up to the largest row tile, so every chunk starts on a tile of its part */
        for (int i = 0; i < n; i++)
            job.offset[i + 1] = job.offset[i] + (ws[i]->rows + tile_max - 1) / tile_max * tile_max;
        ek_pool_run(multi_chunk, &job, job.offset[n], chunk_rows(total, tile_max));
        if (kernel_name) *kernel_name = job.k[0]->name;
    }
    for (int i = 0; i < n; i++) {
        free(job.scratch[i]);
        free((void *)job.act[i].gsum);
    }
    free(qbuf);
    free(qscale);
    return status;
}

void ek_avx2_quantize_row(const float *x, int64_t k, int8_t *q, float *scale); /* avx2.c */

void ek_quantize_absmax_i8(const float *x, int64_t tokens, int64_t k, int64_t ldx, int8_t *q, int64_t ldq,
                           float *scale) {
#if defined(__x86_64__) || defined(__i386__)
    if (ek_get_isa() == EK_ISA_AVX2 || ek_get_isa() == EK_ISA_AVX512) { /* AVX-512 CPUs run AVX2 */
        for (int64_t t = 0; t < tokens; t++) {
            ek_avx2_quantize_row(x + t * ldx, k, q + t * ldq, scale + t);
            memset(q + t * ldq + k, 0, (size_t)(ldq - k));
        }
        return;
    }
#endif
    for (int64_t t = 0; t < tokens; t++) {
        const float *row = x + t * ldx;
        float m = 0.0f;
        for (int64_t i = 0; i < k; i++) {
            float v = fabsf(row[i]);
            if (v > m) m = v;
        }
        float s = m / 127.0f, safe = s > 0.0f ? s : 1.0f;
        int8_t *out = q + t * ldq;
        for (int64_t i = 0; i < k; i++) {
            float v = row[i] / safe;               /* the reference divides; a reciprocal would round differently */
            float r = floorf(fabsf(v) + 0.5f);     /* np.sign(v) * np.floor(np.abs(v) + 0.5), not roundf */
            out[i] = (int8_t)(v < 0.0f ? -r : r);
        }
        memset(out + k, 0, (size_t)(ldq - k));
        scale[t] = s;
    }
}

/* ---- read bandwidth probe -------------------------------------------------------------------------- */

uint64_t ek_avx2_read_sum(const uint8_t *p, int64_t n); /* avx2.c (x86 only) */

typedef struct {
    const uint8_t *buf;
    int use_avx2;
    uint64_t sink[64];
} read_job;

static void read_chunk(void *ctx, int64_t start, int64_t end) {
    read_job *j = ctx;
    uint64_t s = 0;
#if defined(__x86_64__) || defined(__i386__)
    if (j->use_avx2) s = ek_avx2_read_sum(j->buf + start, end - start);
    else
#endif
    {
        const uint64_t *p = (const uint64_t *)(const void *)(j->buf + start);
        uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int64_t i = 0; i + 4 <= (end - start) / 8; i += 4) { a0 += p[i]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3]; }
        s = a0 + a1 + a2 + a3;
    }
    j->sink[(start >> 20) & 63] += s; /* keep the reads observable; races here only perturb the sink */
}

double ek_read_bandwidth(size_t nbytes, int threads, int reps) {
    nbytes = nbytes / 4096 * 4096;
    if (nbytes < 4096 || reps < 1) return -1.0;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, nbytes) != 0) return -1.0;
    memset(buf, 1, nbytes); /* fault every page in before timing */
    int old = ek_pool_threads();
    ek_pool_resize(threads);
    read_job job = {buf, cpu_has_avx2(), {0}};
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ek_pool_run(read_chunk, &job, (int64_t)nbytes, 1 << 20);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (sec > 0 && nbytes / sec / 1e9 > best) best = (double)nbytes / sec / 1e9;
    }
    ek_pool_resize(old);
    free(buf);
    return best;
}

/* ---- repacking ------------------------------------------------------------------------------------- */

/* Repacked layouts live in lut.c (the only kernels that read one). ek_preferred_layout asks the current ISA:
 * a layout is only worth its repack if a kernel of this ISA reads it for every T (see lut.c for the numbers). */
int ek_lut_preferred_layout(const ek_weight *w, int act_kind, int isa);
size_t ek_lut_repack_size(const ek_weight *w, int layout);
int ek_bitplane_preferred_layout(const ek_weight *w, int act_kind, int isa); /* bitplane.c */
size_t ek_bitplane_repack_size(const ek_weight *w, int layout);
int ek_bitplane_repack_rows(const ek_weight *w, int layout, uint8_t *dst, int64_t r0, int64_t r1);

int ek_preferred_layout(const ek_weight *w, int act_kind) {
    if (!w || w->layout != EK_LAYOUT_NATIVE || w->rows < 1 || w->cols < 1) return EK_LAYOUT_NATIVE;
    int layout = ek_lut_preferred_layout(w, act_kind, ek_get_isa());
    return layout != EK_LAYOUT_NATIVE ? layout : ek_bitplane_preferred_layout(w, act_kind, ek_get_isa());
}

size_t ek_repack_size(const ek_weight *w, int layout) {
    if (!w || !w->data || w->layout != EK_LAYOUT_NATIVE || w->rows < 1 || w->cols < 1) return 0;
    return layout == EK_LAYOUT_BITPLANE ? ek_bitplane_repack_size(w, layout) : ek_lut_repack_size(w, layout);
}

typedef struct {
    const ek_weight *w;
    int layout;
    uint8_t *dst;
} repack_job;

int ek_lut_repack_rows(const ek_weight *w, int layout, uint8_t *dst, int64_t r0, int64_t r1);

static void repack_chunk(void *ctx, int64_t r0, int64_t r1) {
    repack_job *j = ctx;
    if (j->layout == EK_LAYOUT_BITPLANE) ek_bitplane_repack_rows(j->w, j->layout, j->dst, r0, r1);
    else ek_lut_repack_rows(j->w, j->layout, j->dst, r0, r1);
}

/* Streaming and multithreaded: each pool chunk re-encodes whole 32-row tiles of the layout (both repacked
 * layouts tile rows by 32). */
int ek_repack(const ek_weight *w, int layout, uint8_t *dst) {
    if (!dst || ek_repack_size(w, layout) == 0) return EK_ERR_UNSUPPORTED;
    repack_job job = {w, layout, dst};
    ek_pool_run(repack_chunk, &job, w->rows, chunk_rows(w->rows, 32));
    return EK_OK;
}
