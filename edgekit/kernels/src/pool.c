/* A persistent pthread pool: ek_linear runs ~210 times per decoded token, so threads are created once
 * (and again only when the thread count changes), never per call.
 *
 * A job is a range [0, total) cut into chunks handed out by an atomic counter, so a thread slowed by
 * another process on a shared core does not hold the others back. Idle workers spin for a short while
 * (calls arrive back to back during decode, and a condition-variable wake-up costs tens of microseconds),
 * then sleep on a condition variable so an idle runtime costs no CPU.
 *
 * Pinning (Linux): when the pool uses at most the CPUs the process may run on, each worker is pinned to one of
 * the allowed CPUs other than the caller's current one (re-pinned if the caller moves; the caller itself stays
 * free, so threads it creates later keep the process's mask). Without it the kernel (6.18, 2 vCPUs, niced jobs
 * of other users on the second one) kept the caller and the spinning worker on the same CPU for whole seconds:
 * 2 threads ran a cache-resident 640 x 2560 ek_t2 GEMV in 38 us vs 11.6 us on 1 thread, and 6912 x 2560 no
 * faster than 1 thread. EDGEKIT_PIN_THREADS=0 turns pinning off.
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
#ifndef EK_SPIN_NS
#define EK_SPIN_NS 2000000 /* 2 ms: longer than the gap between two linear layers, attention included. At 200 us the
                             worker slept through attention + RoPE + norms before wo on BitNet 2B4T (S ~ 200) and
                             the wake-up made that 2560 x 2560 call 206-211 us instead of 121-134 (decode 16.9 ->
                             17.2-17.4 tok/s, Sapphire Rapids, 2 threads, scripts/decode_profile.py) */
#endif

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
    int caller_cpu;            /* CPU the workers were pinned around, -1: no pinning */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, NULL, -1};

/* ---- pinning ------------------------------------------------------------------------------------------ */

#ifdef __linux__
static cpu_set_t allowed_mask; /* the CPUs the process may use, read when the pool is first sized */
static int allowed_count = -1;

static int pinning_wanted(void) {
    const char *env = getenv("EDGEKIT_PIN_THREADS");
    return !(env && env[0] == '0');
}

static void pin_thread(pthread_t thread, int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(thread, sizeof one, &one); /* best effort: a refusal leaves the thread unpinned */
}

/* Workers onto the allowed CPUs other than `caller_cpu`, in order (under call_lock). */
static void pin_workers_around(int caller_cpu) {
    int i = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && i < pool.workers; cpu++)
        if (CPU_ISSET(cpu, &allowed_mask) && cpu != caller_cpu) pin_thread(pool.threads[i++], cpu);
    pool.caller_cpu = caller_cpu;
}

/* After the workers are (re)created: pin them when the pool fits the allowed CPUs (else leave them free). */
static void plan_pinning(void) {
    if (allowed_count < 0) {
        CPU_ZERO(&allowed_mask);
        if (sched_getaffinity(0, sizeof allowed_mask, &allowed_mask) != 0) CPU_ZERO(&allowed_mask);
        allowed_count = CPU_COUNT(&allowed_mask);
    }
    int threads = pool.workers + 1, cpu = sched_getcpu();
    pool.caller_cpu = -1;
    if (pinning_wanted() && threads > 1 && threads <= allowed_count && cpu >= 0 && CPU_ISSET(cpu, &allowed_mask))
        pin_workers_around(cpu);
}

/* The caller is never pinned (threads it creates later would inherit the mask); if the scheduler moved it onto
 * a worker's CPU, the workers move around it (one sched_getcpu per job, a re-pin only after a move). */
static void pin_caller(void) {
    if (pool.caller_cpu < 0) return;
    int cpu = sched_getcpu();
    if (cpu != pool.caller_cpu && cpu >= 0 && CPU_ISSET(cpu, &allowed_mask)) pin_workers_around(cpu);
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
