/* The persistent thread pool behind ek_linear (internal to the library; see pool.c). */
#ifndef EK_POOL_H
#define EK_POOL_H
#include <stdint.h>

/* Process [start, end) of a job's range; called concurrently on disjoint ranges. */
typedef void (*ek_chunk_fn)(void *ctx, int64_t start, int64_t end);

/* Set the number of threads (caller included); returns the number actually running. */
int ek_pool_resize(int threads);
int ek_pool_threads(void);
/* Run fn over [0, total) in chunks of `chunk` on all pool threads plus the caller; returns when done. */
void ek_pool_run(ek_chunk_fn fn, void *ctx, int64_t total, int64_t chunk);
#endif
