/* A persistent pthread pool: ek_linear runs ~210 times per decoded token, so threads are created once
 * (and again only when the thread count changes), never per call.
 *
 * A job is a range [0, total) cut into chunks handed out by an atomic counter, so a thread slowed by
 * another process on a shared core does not hold the others back. Idle workers spin for a short while
 * (calls arrive back to back during decode, and a condition-variable wake-up costs tens of microseconds),
 * then sleep on a condition variable so an idle runtime costs no CPU.
 *
 * Pinning (Linux): when the pool uses at most the CPUs the process may run on, the calling thread is pinned to
 * the first allowed CPU (on its first job) and worker i to the (i + 1)-th. Without it the kernel (6.18, 2 vCPUs,
 * niced jobs of other users on the second one) kept the caller and the spinning worker on the same CPU for
 * whole seconds: 2 threads ran a cache-resident 640 x 2560 ek_t2 GEMV in 38 us vs 11.6 us on 1 thread, and
 * 6912 x 2560 no faster than 1 thread. EDGEKIT_PIN_THREADS=0 turns pinning off (the caller's own mask is
 * restored when the pool shrinks to one thread).
 */
#ifdef __linux__
#define _GNU_SOURCE /* pthread_setaffinity_np, CPU_SET */
#include <sched.h>
#endif
#include "ek_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EK_MAX_THREADS 256
#define EK_SPIN_NS 200000 /* 200 us: longer than the Python gap between two linear layers */

typedef struct {
    ek_chunk_fn fn;
    void *ctx;
    int64_t total, chunk;
    atomic_llong next;
    atomic_int pending;
} pool_job;

static struct {
    pthread_mutex_t lock;      /* guards sleeping and the worker set */
    pthread_cond_t wake, done;
    pthread_mutex_t call_lock; /* one job at a time: ctypes releases the GIL, callers may race */
    pthread_t threads[EK_MAX_THREADS];
    int workers;               /* threads besides the caller */
    int shutdown;
    atomic_uint gen;
    pool_job *job;
    int caller_cpu;            /* CPU the calling thread is pinned to on its next job, -1: no pinning */
    unsigned pin_gen;          /* bumped whenever the pinning plan changes (under call_lock) */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, NULL, -1, 0};

/* ---- pinning ------------------------------------------------------------------------------------------ */

#ifdef __linux__
static cpu_set_t original_mask; /* the process's allowed CPUs, read before anything is pinned */
static int original_count = -1;
static __thread unsigned caller_pin_gen; /* pin_gen this thread last applied; 0 = never pinned */

static int pinning_wanted(void) {
    const char *env = getenv("EDGEKIT_PIN_THREADS");
    return !(env && env[0] == '0');
}

/* The n-th CPU (0-based) of the original mask, or -1. */
static int nth_allowed_cpu(int n) {
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &original_mask) && n-- == 0) return cpu;
    return -1;
}

static void pin_thread(pthread_t thread, int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(thread, sizeof one, &one); /* best effort: a refusal leaves the thread unpinned */
}

/* After the workers are (re)created: pin worker i to allowed CPU i + 1 and plan the caller's CPU 0; with one
 * thread (or pinning off, or more threads than CPUs) nothing is pinned and the caller gets its mask back. */
static void plan_pinning(void) {
    if (original_count < 0) {
        CPU_ZERO(&original_mask);
        if (sched_getaffinity(0, sizeof original_mask, &original_mask) != 0) CPU_ZERO(&original_mask);
        original_count = CPU_COUNT(&original_mask);
    }
    int threads = pool.workers + 1;
    int pin = pinning_wanted() && threads > 1 && threads <= original_count;
    if (pin)
        for (int i = 0; i < pool.workers; i++) pin_thread(pool.threads[i], nth_allowed_cpu(i + 1));
    pool.caller_cpu = pin ? nth_allowed_cpu(0) : -1;
    pool.pin_gen++;
    if (!pin && caller_pin_gen) { /* this thread was pinned by an earlier plan: give it its mask back */
        pthread_setaffinity_np(pthread_self(), sizeof original_mask, &original_mask);
        caller_pin_gen = 0;
    }
}

static void pin_caller(void) {
    if (caller_pin_gen == pool.pin_gen || pool.caller_cpu < 0) return;
    pin_thread(pthread_self(), pool.caller_cpu);
    caller_pin_gen = pool.pin_gen;
}
#else
static void plan_pinning(void) {}
static void pin_caller(void) {}
#endif

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void run_chunks(pool_job *job) {
    for (;;) {
        int64_t start = atomic_fetch_add(&job->next, job->chunk);
        if (start >= job->total) return;
        int64_t end = start + job->chunk < job->total ? start + job->chunk : job->total;
        job->fn(job->ctx, start, end);
    }
}

/* Wait until gen differs from `seen`: spin, then sleep. Returns the new generation. */
static unsigned wait_for_job(unsigned seen) {
    int64_t deadline = now_ns() + EK_SPIN_NS;
    for (int i = 0;; i++) {
        unsigned g = atomic_load_explicit(&pool.gen, memory_order_acquire);
        if (g != seen) return g;
        if ((i & 255) == 255 && now_ns() > deadline) break;
        cpu_relax();
    }
    pthread_mutex_lock(&pool.lock);
    unsigned g;
    while ((g = atomic_load(&pool.gen)) == seen && !pool.shutdown) pthread_cond_wait(&pool.wake, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    return g;
}

static void *worker_main(void *arg) {
    unsigned seen = (unsigned)(uintptr_t)arg;
    for (;;) {
        seen = wait_for_job(seen);
        if (pool.shutdown) return NULL;
        pool_job *job = pool.job;
        run_chunks(job);
        if (atomic_fetch_sub(&job->pending, 1) == 1) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
}

static void stop_workers(void) {
    pthread_mutex_lock(&pool.lock);
    pool.shutdown = 1;
    atomic_fetch_add(&pool.gen, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.workers; i++) pthread_join(pool.threads[i], NULL);
    pool.workers = 0;
    pool.shutdown = 0;
}

int ek_pool_threads(void) { return pool.workers + 1; }

int ek_pool_resize(int threads) {
    if (threads < 1) threads = 1;
    if (threads > EK_MAX_THREADS) threads = EK_MAX_THREADS;
    pthread_mutex_lock(&pool.call_lock);
    if (threads != pool.workers + 1) {
        stop_workers();
        unsigned gen = atomic_load(&pool.gen);
        for (int i = 0; i < threads - 1; i++) {
            if (pthread_create(&pool.threads[i], NULL, worker_main, (void *)(uintptr_t)gen) != 0) break;
            pool.workers++;
        }
        plan_pinning();
    }
    int n = pool.workers + 1;
    pthread_mutex_unlock(&pool.call_lock);
    return n;
}

void ek_pool_run(ek_chunk_fn fn, void *ctx, int64_t total, int64_t chunk) {
    if (chunk < 1) chunk = 1;
    pthread_mutex_lock(&pool.call_lock);
    if (pool.workers == 0 || total <= chunk) { /* too small to share: run on the caller */
        pthread_mutex_unlock(&pool.call_lock);
        fn(ctx, 0, total);
        return;
    }
    pin_caller();
    pool_job job = {fn, ctx, total, chunk, 0, pool.workers};
    pool.job = &job;
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_chunks(&job);
    /* Wait for every worker to leave the job (it lives on this stack): spin briefly, then sleep. */
    int64_t deadline = now_ns() + EK_SPIN_NS;
    for (int i = 0; atomic_load(&job.pending) > 0; i++) {
        if ((i & 255) == 255 && now_ns() > deadline) {
            pthread_mutex_lock(&pool.lock);
            while (atomic_load(&job.pending) > 0) pthread_cond_wait(&pool.done, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
            break;
        }
        cpu_relax();
    }
    pthread_mutex_unlock(&pool.call_lock);
}
