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

/* A 64-bit hash (wyhash's construction: each 64x64 -> 128-bit multiply folds 16 bytes, three
 * independent chains over 48-byte blocks, so it runs at about 1.7x the speed of an xxHash64-style
 * four-lane mix here).  The rma transport checks with it that a message written by MPI_Put has
 * arrived whole: a mixture of old and new bytes matches with probability about 2^-64.  Loads are
 * relaxed because the bytes may be changing under it; memcpy keeps unaligned loads legal. */
#define RDQ_P1 0x9E3779B185EBCA87ULL

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

static inline uint64_t rdq_mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static const uint64_t RDQ_SECRET[4] = {0x2d358dccaa6c78a5ULL, 0x8bb84b93962eacc9ULL,
                                       0x4b33a62ed433d4a3ULL, 0x4d5a2da51de1aa47ULL};

static inline uint64_t rdq_word4(const unsigned char *p)
{
    uint32_t w;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __builtin_memcpy(&w, p, 4);
    return w;
}

static inline uint64_t rdq_hash(const void *data, int64_t n, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t a, b, s1, s2;
    int64_t i = n;
    seed ^= rdq_mix(seed ^ RDQ_SECRET[0], RDQ_SECRET[1]);
    if (n <= 16) {
        if (n >= 4) {   /* overlapping 4-byte reads cover every byte */
            int64_t q = (n >> 3) << 2;
            a = rdq_word4(p) << 32 | rdq_word4(p + q);
            b = rdq_word4(p + n - 4) << 32 | rdq_word4(p + n - 4 - q);
        } else if (n > 0) {
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            a = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        if (i > 48) {
            s1 = s2 = seed;
            do {
                seed = rdq_mix(rdq_word(p) ^ RDQ_SECRET[1], rdq_word(p + 8) ^ seed);
                s1 = rdq_mix(rdq_word(p + 16) ^ RDQ_SECRET[2], rdq_word(p + 24) ^ s1);
                s2 = rdq_mix(rdq_word(p + 32) ^ RDQ_SECRET[3], rdq_word(p + 40) ^ s2);
                p += 48;
                i -= 48;
            } while (i > 48);
            seed ^= s1 ^ s2;
        }
        while (i > 16) {
            seed = rdq_mix(rdq_word(p) ^ RDQ_SECRET[1], rdq_word(p + 8) ^ seed);
            p += 16;
            i -= 16;
        }
        a = rdq_word(p + i - 16);
        b = rdq_word(p + i - 8);
    }
    __uint128_t r = (__uint128_t)(a ^ RDQ_SECRET[1]) * (b ^ seed);
    return rdq_mix((uint64_t)r ^ RDQ_SECRET[0] ^ (uint64_t)n, (uint64_t)(r >> 64) ^ RDQ_SECRET[1]);
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
