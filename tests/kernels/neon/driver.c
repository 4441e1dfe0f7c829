/* Test driver for the NEON kernels, cross-compiled for aarch64 and run under qemu-user by
 * tests/kernels/test_neon.py, which writes golden cases from the numpy reference.
 *
 *   driver [--threads N] CASE...     check every case; one line per check, exit 1 if any failed
 *   driver --info                    what the dispatcher sees on this CPU
 *   driver --bench FMT ROWS COLS T REPS [ONLY]   indicative timing (qemu is not a phone) of the sdot (ONLY 0),
 *                                    LUT (1) and scalar (2) kernels on random ternary weights; ONLY -1 runs none
 *                                    (the set-up alone: count_instructions.py subtracts it)
 *
 * A case file (little endian): "EKNEON01", then int64 format, act_kind, rows, cols, row_bytes, group,
 * per_tensor, tokens, n_scales, has_zeros, x_cols; then data [rows * row_bytes] u8, scales [n_scales] f32,
 * zeros [rows * cols / group] u8 (if has_zeros); activations: act_kind 0 (int8): q [tokens * cols] i8 and
 * a_scale [tokens] f32; act_kind 1 (float): x [tokens * x_cols] f32; last the expected y [tokens * rows] f32.
 *
 * Weights, scales, zero points and activations are placed so that each ends at an inaccessible page: a read past
 * the end of any of them faults. Checks per case:
 *   decode   ek_neon_decode_row == ek_decode_row_values (scalar.c), row by row (integer formats);
 *   variant  every NEON variant that takes the case, run the way dispatch.c runs a kernel (supports, scratch,
 *            prepare, then rows() over row ranges that split the matrix at tile multiples), bit-exact;
 *   linear   ek_linear with the dispatcher forced to NEON (ek_set_isa) on N threads, bit-exact; the kernel that
 *            ran must be a NEON one, or the scalar fallback for a shape the NEON kernel declined with a reason
 *            (printed as "fallback"). Float activations on integer weights are quantized inside ek_linear.
 */
#include "ek_kernels.h"
#include "ek_neon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int64_t format, act_kind, rows, cols, row_bytes, group, per_tensor, tokens, n_scales, has_zeros, x_cols;
    uint8_t *data, *zeros;
    float *scales, *a_scale, *x, *want;
    int8_t *q;
} golden;

static void *read_block(FILE *f, size_t bytes, const char *path, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "%s: truncated at %s\n", path, what);
        exit(2);
    }
    return p;
}

/* A copy of `bytes` bytes that ends exactly where an inaccessible page begins: a kernel reading past the end of
 * the weights, scales or activations faults instead of reading garbage. (Never freed: the driver is short-lived.) */
static void *guarded_copy(const void *src, size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), span = (bytes + page - 1) / page * page;
    uint8_t *base = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + span, page, PROT_NONE) != 0) {
        fprintf(stderr, "guard page: mmap/mprotect failed\n");
        exit(2);
    }
    uint8_t *start = base + span - bytes;
    memcpy(start, src, bytes);
    return start;
}

static void *guard(void *p, size_t bytes) {
    if (!p) return NULL;
    void *g = guarded_copy(p, bytes);
    free(p);
    return g;
}

static golden read_case(const char *path) {
    golden c;
    FILE *f = fopen(path, "rb");
    char magic[8];
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "EKNEON01", 8) != 0) {
        fprintf(stderr, "%s: not a case file\n", path);
        exit(2);
    }
    int64_t *fields = read_block(f, 11 * sizeof(int64_t), path, "header");
    memcpy(&c, fields, 11 * sizeof(int64_t));
    free(fields);
    c.data = read_block(f, (size_t)(c.rows * c.row_bytes), path, "data");
    c.scales = read_block(f, sizeof(float) * (size_t)c.n_scales, path, "scales");
    c.zeros = c.has_zeros ? read_block(f, (size_t)(c.rows * (c.cols / c.group)), path, "zeros") : NULL;
    c.q = NULL, c.a_scale = NULL, c.x = NULL;
    if (c.act_kind == EK_ACT_I8) {
        c.q = read_block(f, (size_t)(c.tokens * c.cols), path, "q");
        c.a_scale = read_block(f, sizeof(float) * (size_t)c.tokens, path, "a_scale");
    } else {
        c.x = read_block(f, sizeof(float) * (size_t)(c.tokens * c.x_cols), path, "x");
    }
    c.want = read_block(f, sizeof(float) * (size_t)(c.tokens * c.rows), path, "expected");
    fclose(f);
    c.data = guard(c.data, (size_t)(c.rows * c.row_bytes));
    c.scales = guard(c.scales, sizeof(float) * (size_t)c.n_scales);
    c.zeros = guard(c.zeros, (size_t)(c.rows * (c.cols / c.group)));
    c.q = guard(c.q, (size_t)(c.tokens * c.cols));
    c.a_scale = guard(c.a_scale, sizeof(float) * (size_t)c.tokens);
    c.x = guard(c.x, sizeof(float) * (size_t)(c.tokens * c.x_cols));
    return c;
}

static ek_weight weight_of(const golden *c) {
    ek_weight w = {(int32_t)c->format, EK_LAYOUT_NATIVE, c->rows, c->cols, c->row_bytes, c->group,
                   (int32_t)c->per_tensor, 0, c->data, c->scales, c->zeros};
    return w;
}

static ek_act act_of(const golden *c) {
    ek_act a = {(int32_t)c->act_kind, (int32_t)(c->act_kind == EK_ACT_F32 && c->x_cols != c->cols ? c->x_cols : 0),
                c->tokens, c->cols, c->q, c->a_scale, c->x, NULL};
    return a;
}

/* Bitwise comparison (the reference and the kernels perform the same float operations in the same order). */
static int report(const char *path, const char *check, const char *name, const float *got, const float *want,
                  int64_t n) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            if (first < 0) first = i;
            bad++;
        }
    if (bad) {
        printf("FAIL %s %s %s: %lld of %lld differ, first [%lld] got %.9g want %.9g\n", path, check, name,
               (long long)bad, (long long)n, (long long)first, got[first], want[first]);
        return 1;
    }
    printf("ok %s %s %s\n", path, check, name);
    return 0;
}

static int32_t *group_sums(const ek_weight *w, const ek_act *a) {
    int64_t groups = w->cols / w->group;
    int32_t *gsum = calloc((size_t)(a->tokens * groups), sizeof(int32_t));
    for (int64_t t = 0; t < a->tokens; t++)
        for (int64_t k = 0; k < w->cols; k++) gsum[t * groups + k / w->group] += a->q[t * w->cols + k];
    return gsum;
}

static int check_decode(const char *path, const golden *c) {
    int8_t *want = malloc((size_t)c->cols), *got = malloc((size_t)c->cols);
    int bad = 0;
    for (int64_t r = 0; r < c->rows && !bad; r++) {
        const uint8_t *row = c->data + r * c->row_bytes;
        ek_decode_row_values((int)c->format, row, 0, c->cols, want);
        ek_neon_decode_row((int)c->format, row, c->row_bytes, c->cols, got);
        if (memcmp(want, got, (size_t)c->cols) != 0) {
            printf("FAIL %s decode row %lld\n", path, (long long)r);
            bad = 1;
        }
    }
    if (!bad) printf("ok %s decode neon\n", path);
    free(want), free(got);
    return bad;
}

/* Run one kernel the way dispatch.c does, over row ranges of 2 tiles (so partial last tiles occur). */
static int check_variant(const char *path, const golden *c, const ek_kernel *k) {
    ek_weight w = weight_of(c);
    ek_act a = act_of(c);
    const char *why = "";
    if (k->supports && !k->supports(&w, a.tokens, &why)) {
        printf("declined %s variant %s: %s\n", path, k->name, why);
        return 0;
    }
    int32_t *gsum = a.kind == EK_ACT_I8 ? group_sums(&w, &a) : NULL;
    a.gsum = gsum;
    size_t bytes = k->scratch_bytes ? k->scratch_bytes(&w, &a) : 0;
    void *scratch = NULL;
    if (bytes && posix_memalign(&scratch, 64, (bytes + 63) / 64 * 64) != 0) return 1;
    if (k->prepare) k->prepare(&w, &a, scratch);
    float *y = malloc(sizeof(float) * (size_t)(c->tokens * c->rows));
    int64_t step = 2 * (int64_t)(k->row_tile > 0 ? k->row_tile : 1);
    for (int64_t r0 = 0; r0 < c->rows; r0 += step)
        k->rows(&w, &a, scratch, y, c->rows, r0, r0 + step < c->rows ? r0 + step : c->rows);
    char name[80];
    snprintf(name, sizeof name, "%s%s", k->name,
             strstr(k->name, "_sdot_") ? (ek_neon_sdot_plane_mode(&w) ? "/plane" : "/column") : "");
    int bad = report(path, "variant", name, y, c->want, c->tokens * c->rows);
    free(y), free(scratch), free(gsum);
    return bad;
}

/* ek_linear forced to NEON: the kernel that runs must be the one ek_kernel_choice names, a NEON one unless the
 * NEON kernel declined the shape with a reason (then the dispatcher's scalar fallback, reported as such). */
static int check_linear(const char *path, const golden *c) {
    ek_weight w = weight_of(c);
    ek_act a = act_of(c);
    const char *reason = "", *chosen = ek_kernel_choice(&w, EK_ACT_I8 + (ek_format_is_float((int)c->format) ? 1 : 0),
                                                        c->tokens, &reason);
    float *y = malloc(sizeof(float) * (size_t)(c->tokens * c->rows));
    const char *name = "";
    int status = ek_linear(&w, &a, y, c->rows, &name), bad = 0;
    if (status != EK_OK) {
        printf("FAIL %s linear: status %d\n", path, status);
        bad = 1;
    } else if (!chosen || strcmp(name, chosen) != 0 || (!strstr(name, "_neon") && !*reason)) {
        printf("FAIL %s linear: ran %s, chosen %s (%s)\n", path, name, chosen ? chosen : "none", reason);
        bad = 1;
    } else {
        if (!strstr(name, "_neon")) printf("fallback %s linear %s: %s\n", path, name, reason);
        bad = report(path, "linear", name, y, c->want, c->tokens * c->rows);
    }
    free(y);
    return bad;
}

static int check_case(const char *path) {
    golden c = read_case(path);
    int bad = 0, is_float = ek_format_is_float((int)c.format);
    if (!is_float) bad |= check_decode(path, &c);
    if (c.act_kind == EK_ACT_I8 || is_float)
        for (int v = 0; v < EK_NEON_VARIANTS; v++) {
            const ek_kernel *k = ek_neon_variant_kernel(v, (int)c.format, (int)c.act_kind);
            if (k) bad |= check_variant(path, &c, k);
        }
    bad |= check_linear(path, &c);
    free(c.want); /* the other buffers are guarded mappings (see guarded_copy) */
    return bad;
}

static int print_info(void) {
    printf("neon_available %d\nisa %s\n", ek_isa_available(EK_ISA_NEON), ek_isa_name(ek_get_isa()));
    printf("decode_kernel_t2 %s\nprefill_kernel_t2 %s\n", ek_isa_kernel_name(EK_ISA_NEON, EK_FMT_T2, EK_ACT_I8, 0, 1),
           ek_isa_kernel_name(EK_ISA_NEON, EK_FMT_T2, EK_ACT_I8, 0, 64));
    return ek_isa_available(EK_ISA_NEON) && ek_get_isa() == EK_ISA_NEON ? 0 : 1;
}

/* ---- indicative timing --------------------------------------------------------------------------------- */

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench(const char *fmt_name, int64_t rows, int64_t cols, int64_t tokens, int reps, int only) {
    int format = strcmp(fmt_name, "t1") == 0 ? EK_FMT_T1 : EK_FMT_T2;
    int64_t row_bytes = format == EK_FMT_T2 ? cols / 4 : cols / 5;
    uint8_t *data = malloc((size_t)(rows * row_bytes));
    int8_t *q = malloc((size_t)(tokens * cols));
    float scale = 0.5f, *a_scale = malloc(sizeof(float) * (size_t)tokens);
    float *y = malloc(sizeof(float) * (size_t)(tokens * rows));
    uint32_t s = 12345;
    for (int64_t i = 0; i < rows * row_bytes; i++) {
        s = s * 1664525u + 1013904223u;
        unsigned byte = 0;
        for (int j = 0; j < 4; j++) byte |= ((s >> (8 + 4 * j)) % 3) << (2 * j); /* four trit codes */
        data[i] = (uint8_t)(format == EK_FMT_T2 ? byte : (s >> 8) % 256);  /* any byte is 5 valid base-3 digits */
    }
    for (int64_t i = 0; i < tokens * cols; i++) {
        s = s * 1664525u + 1013904223u;
        q[i] = (int8_t)((int)((s >> 8) % 255) - 127);
    }
    for (int64_t t = 0; t < tokens; t++) a_scale[t] = 0.01f;
    ek_weight w = {format, EK_LAYOUT_NATIVE, rows, cols, row_bytes, cols, 1, 0, data, &scale, NULL};
    ek_act a = {EK_ACT_I8, 0, tokens, cols, q, a_scale, NULL, NULL};
    int32_t *gsum = group_sums(&w, &a);
    a.gsum = gsum;
    const ek_kernel *ks[3] = {ek_neon_variant_kernel(EK_NEON_SDOT, format, EK_ACT_I8),
                              ek_neon_variant_kernel(EK_NEON_LUT, format, EK_ACT_I8),
                              ek_scalar_kernel(format, EK_ACT_I8, EK_LAYOUT_NATIVE, tokens)};
    for (int i = 0; i < 3; i++) {
        const ek_kernel *k = ks[i];
        if (only != -2 && only != i) continue; /* -2: all; -1: none (the set-up alone, for instruction counts) */
        size_t bytes = k->scratch_bytes ? k->scratch_bytes(&w, &a) : 0;
        void *scratch = NULL;
        if (bytes && posix_memalign(&scratch, 64, (bytes + 63) / 64 * 64) != 0) return 1;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = seconds();
            if (k->prepare) k->prepare(&w, &a, scratch);
            k->rows(&w, &a, scratch, y, rows, 0, rows);
            double dt = seconds() - t0;
            best = dt < best ? dt : best;
        }
        printf("bench %s %lldx%lld T=%lld %s %.3f ms\n", fmt_name, (long long)rows, (long long)cols, (long long)tokens,
               k->name, best * 1e3);
        free(scratch);
    }
    free(data), free(q), free(a_scale), free(y), free(gsum);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 1, first = 1, bad = 0;
    if (argc > 1 && strcmp(argv[1], "--info") == 0) return print_info();
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "--bench") == 0)
        return bench(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), atoi(argv[6]),
                     argc == 8 ? atoi(argv[7]) : -2);
    if (argc > 2 && strcmp(argv[1], "--threads") == 0) threads = atoi(argv[2]), first = 3;
    ek_set_num_threads(threads);
    if (ek_set_isa(EK_ISA_NEON) != EK_OK) {
        printf("FAIL ek_set_isa(EK_ISA_NEON): NEON with dotprod not available on this CPU\n");
        return 1;
    }
    for (int i = first; i < argc; i++) bad |= check_case(argv[i]);
    printf("threads %d cases %d %s\n", ek_get_num_threads(), argc - first, bad ? "FAILED" : "passed");
    return bad;
}
