/* A persistent pthread pool: ek_linear runs ~210 times per decoded token, so threads are created once
 * (and again only when the thread count changes), never per call.
 *
 * A job is a range [0, total) cut into chunks handed out by an atomic counter, so a thread slowed by
 * another process on a shared core does not hold the others back. Idle workers spin for a short while
 * (calls arrive back to back during decode, and a condition-variable wake-up costs tens of microseconds),
 * then sleep on a condition variable so an idle runtime costs no CPU.
 */
#include "ek_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
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
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, NULL};

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
