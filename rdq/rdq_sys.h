/* Small C helpers for rdq's Cython core: atomics on the shared-memory path,
 * a monotonic clock and the waiting policy.  Everything is static inline so
 * that the Cython code calls them without the GIL. */
#ifndef RDQ_SYS_H
#define RDQ_SYS_H

#include <stdint.h>
#include <time.h>
#include <sched.h>

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

static inline int64_t rdq_fetch_add(void *p, int64_t v)
{ return __atomic_fetch_add((int64_t *)p, v, __ATOMIC_ACQ_REL); }

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
