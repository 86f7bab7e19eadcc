#ifndef CATOMICS_H
#define CATOMICS_H

#include <cpuid.h>
#include <stdint.h>

/* The kernel primitives the model's hot paths use, with the kernel's memory
 * ordering. Each is one instruction or a short loop; static inline so Swift
 * inlines them into the timed loops. */

/* cpu_relax(): the PAUSE instruction in a spin-wait loop. */
static inline void ca_cpu_relax(void) { __builtin_ia32_pause(); }

/* arch_spin_lock() for a test-and-set lock: xchg until it was free,
 * spinning on plain loads in between so the line is not bounced. */
static inline void ca_spin_lock(uint32_t *lock) {
    while (__atomic_exchange_n(lock, 1u, __ATOMIC_ACQUIRE) != 0u) {
        while (__atomic_load_n(lock, __ATOMIC_RELAXED) != 0u) ca_cpu_relax();
    }
}

/* arch_spin_unlock(): a release store. */
static inline void ca_spin_unlock(uint32_t *lock) {
    __atomic_store_n(lock, 0u, __ATOMIC_RELEASE);
}

static inline int ca_spin_is_locked(uint32_t *lock) {
    return __atomic_load_n(lock, __ATOMIC_RELAXED) != 0u;
}

/* xchg(p, v): atomically replace a word and return the old one (the masked
 * harvest's "take the bitmap word and zero it"). */
static inline uint64_t ca_xchg64(uint64_t *p, uint64_t v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

/* atomic_long_fetch_andnot(): clear `mask` in *p, return the old word
 * (KVM_CLEAR_DIRTY_LOG clears the bits user space asks for, atomically). */
static inline uint64_t ca_fetch_andnot64(uint64_t *p, uint64_t mask) {
    return __atomic_fetch_and(p, ~mask, __ATOMIC_SEQ_CST);
}

/* smp_load_acquire() / smp_store_release() on a dirty-ring entry's flags. */
static inline uint32_t ca_load_acquire32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ca_store_release32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* test_and_set_bit_le(): a locked OR returning the bit's old value. */
static inline int ca_test_and_set_bit64(uint64_t *word, unsigned bit) {
    uint64_t m = (uint64_t)1 << bit;
    return (__atomic_fetch_or(word, m, __ATOMIC_SEQ_CST) & m) != 0;
}

/* A locked OR returning the whole old word: the bit's old value, and
 * whether the word (and so its 512-page line) was clean before. */
static inline uint64_t ca_fetch_or64(uint64_t *word, uint64_t m) {
    return __atomic_fetch_or(word, m, __ATOMIC_SEQ_CST);
}

/* READ_ONCE()/WRITE_ONCE() on an spte: a load or store the compiler may not
 * merge, split or elide. */
static inline uint64_t ca_read_once64(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void ca_write_once64(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* prefetch(): start loading the line at p into the caches. */
static inline void ca_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/* clflushopt: write a cache line back if dirty and drop it from every
 * cache level (clflush where the CPU lacks clflushopt). Weakly ordered:
 * ca_flush_fence() waits for all of them. */
static inline void ca_flush_line(const void *p) {
    static int have = -1;
    if (__builtin_expect(have < 0, 0)) {
        unsigned a, b, c, d;
        /* CPUID.(EAX=7, ECX=0):EBX bit 23 */
        have = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 23 & 1);
    }
    if (have) __asm__ __volatile__("clflushopt %0" :: "m"(*(const char *)p) : "memory");
    else __asm__ __volatile__("clflush %0" :: "m"(*(const char *)p) : "memory");
}

/* mfence: every earlier load, store and line flush is complete. */
static inline void ca_flush_fence(void) { __asm__ __volatile__("mfence" ::: "memory"); }

/* A compiler barrier: keeps loads and stores from moving across the edges
 * of a timed region. */
static inline void ca_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

#endif
