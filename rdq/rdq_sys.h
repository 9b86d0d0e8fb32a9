/* Small C helpers for rdq's Cython core: atomics on the shared-memory path,
 * a monotonic clock and the waiting policy.  Everything is static inline so
 * that the Cython code calls them without the GIL. */
#ifndef RDQ_SYS_H
#define RDQ_SYS_H

#include <stdint.h>
#include <time.h>
#include <sched.h>
#include <pthread.h>

static inline int64_t rdq_load_acquire(const void *p)
{ return __atomic_load_n((const int64_t *)p, __ATOMIC_ACQUIRE); }

static inline void rdq_store_release(void *p, int64_t v)
{ __atomic_store_n((int64_t *)p, v, __ATOMIC_RELEASE); }

/* Returns the value found at p (== expected when the swap happened). */
static inline int64_t rdq_cas(void *p, int64_t expected, int64_t desired)
{
    __atomic_compare_exchange_n((int64_t *)p, &expected, desired, 0,
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return expected;
}

/* A load of a word another process may be writing with MPI_Put: the compiler must
 * read memory each time (a polling loop), and gets no ordering from it. */
static inline int64_t rdq_load_relaxed(const void *p)
{ return __atomic_load_n((const int64_t *)p, __ATOMIC_RELAXED); }

static inline void rdq_store_relaxed(void *p, int64_t v)
{ __atomic_store_n((int64_t *)p, v, __ATOMIC_RELAXED); }

static inline void rdq_fence_acquire(void)
{ __atomic_thread_fence(__ATOMIC_ACQUIRE); }

static inline void rdq_fence_release(void)
{ __atomic_thread_fence(__ATOMIC_RELEASE); }

/* A 64-bit mixing hash (the xxHash64 round with four independent lanes, so it
 * runs near memory speed).  The rma transport checks with it that a message
 * written by MPI_Put has arrived whole: a mixture of old and new bytes
 * matches with probability about 2^-64.  Loads are relaxed atomics because the
 * bytes may be changing under it; memcpy keeps unaligned loads legal. */
#define RDQ_P1 0x9E3779B185EBCA87ULL
#define RDQ_P2 0xC2B2AE3D27D4EB4FULL
#define RDQ_P3 0x165667B19E3779F9ULL

static inline uint64_t rdq_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rdq_round(uint64_t acc, uint64_t w)
{ return rdq_rotl(acc + w * RDQ_P2, 31) * RDQ_P1; }

static inline uint64_t rdq_word(const unsigned char *p)
{
    uint64_t w;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);   /* re-read on every call of a polling loop */
    __builtin_memcpy(&w, p, 8);
    return w;
}

/* The check word stored beside a one-word record (a free-list entry, a close count):
 * a record torn by a reader that copies bytes while the writer rewrites it matches its
 * check with probability about 2^-64, wherever it tears (~value would not do: old and new
 * records torn at the same byte positions are a consistent pair).  `where` makes each
 * record's checks its own. */
static inline int64_t rdq_check(int64_t value, int64_t where)
{
    uint64_t x = (uint64_t)value + (uint64_t)where * RDQ_P1;
    x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27; x *= 0x94D049BB133111EBULL;
    return (int64_t)(x ^ (x >> 31));
}

static inline uint64_t rdq_hash(const void *data, int64_t n, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t a = seed + RDQ_P1 + RDQ_P2, b = seed + RDQ_P2, c = seed, d = seed - RDQ_P1;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = rdq_round(a, rdq_word(p + i));
        b = rdq_round(b, rdq_word(p + i + 8));
        c = rdq_round(c, rdq_word(p + i + 16));
        d = rdq_round(d, rdq_word(p + i + 24));
    }
    uint64_t h = rdq_rotl(a, 1) + rdq_rotl(b, 7) + rdq_rotl(c, 12) + rdq_rotl(d, 18) + (uint64_t)n;
    for (; i + 8 <= n; i += 8)
        h = rdq_rotl(h ^ rdq_round(0, rdq_word(p + i)), 27) * RDQ_P1 + RDQ_P3;
    for (; i < n; i++)
        h = rdq_rotl(h ^ (p[i] * RDQ_P3), 11) * RDQ_P1;
    h ^= h >> 33; h *= RDQ_P2; h ^= h >> 29; h *= RDQ_P3; h ^= h >> 32;
    return h;
}

/* Who holds a queue's busy flag: never 0. */
static inline int64_t rdq_thread_id(void)
{ return (int64_t)(uintptr_t)pthread_self() | 1; }

static inline double rdq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void rdq_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Waiting without burning the core the other side needs: spin briefly (a
 * small message is usually a few hundred nanoseconds away), yield a little,
 * then sleep in short naps (a large copy takes a millisecond; ranks are often
 * oversubscribed on small machines). */
static inline void rdq_backoff(int64_t round)
{
    if (round < 64) {
        rdq_cpu_relax();
    } else if (round < 256) {
        sched_yield();
    } else {
        struct timespec nap = {0, round < 1024 ? 10000 : 50000};   /* 10 us, then 50 us */
        nanosleep(&nap, NULL);
    }
}

#endif
