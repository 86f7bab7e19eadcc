#ifndef CATOMICS_H
#define CATOMICS_H

#include <cpuid.h>
#include <stdint.h>

/* The kernel primitives the model's hot paths use, with the kernel's memory
 * ordering. Each is one instruction or a short loop; static inline so Swift
 * inlines them into the timed loops. */

/* cpu_relax(): the PAUSE instruction in a spin-wait loop. */
static inline void ca_cpu_relax(void) { __builtin_ia32_pause(); }

/* ---- mmu_lock as each era of the kernel had it ------------------------- */

/* Which lock an mmu_lock is. */
enum { CA_LOCK_TICKET = 0, CA_LOCK_QUEUED = 1, CA_LOCK_RW = 2 };
/* A bit of `ca_mmu_lock.kind`: the lock records holds and waits
 * (`ca_instrumented_lock_exclusive`); the low byte is the era's kind. */
enum { CA_LOCK_INSTRUMENTED = 0x100, CA_LOCK_KIND_MASK = 0xff };

/* A node of the queued (MCS) lock, one per thread, on its own line. */
typedef struct ca_mcs_node {
    struct ca_mcs_node *next;
    uint32_t locked;
    char pad[64 - sizeof(void *) - sizeof(uint32_t)];
} ca_mcs_node;

/* One side's holds, as `ca_lock_stats` records them: each hold in ticks
 * (the first `cap`; past it they are only counted), how many, their sum and
 * the longest. */
typedef struct {
    uint64_t *holds;
    uint64_t cap, n, count;
    uint64_t ticks_total, ticks_max;
} ca_hold_stats;

/* What a thread's operations on an instrumented lock record when the
 * harness asks (`ca_lock_stats_set`): its holds of the exclusive side (the whole
 * spinlock, or the rwlock's write side) and of the shared side (the
 * rwlock's read side) apart, and the ticks spent waiting to acquire
 * either. Recording costs a time-stamp read at each acquire and release,
 * so the harness turns it on only for repetitions whose harvest time it
 * does not report. */
typedef struct {
    ca_hold_stats exclusive;
    ca_hold_stats shared;
    uint64_t wait_ticks;
    uint64_t acquired_at;
} ca_lock_stats;

/* kvm->mmu_lock: a ticket spinlock (x86 before 4.2: first come, first
 * served), a queued spinlock (qspinlock, x86 since 4.2: an MCS queue, each
 * waiter spinning on its own line) or a read/write lock (531810ca, 5.12:
 * readers share it; a waiting writer holds new readers off). The fields of
 * every kind are here; `kind` says which is in use. */
typedef struct {
    uint32_t ticket_next;
    uint32_t ticket_owner;
    uint32_t kind;
    uint32_t pad0;
    ca_mcs_node *mcs_tail;
    int32_t rw;               /* >0 readers, -1 a writer */
    uint32_t rw_writers_waiting;
    uint32_t rw_readers_waiting;
    char pad[64 - 4 * sizeof(uint32_t) - sizeof(void *) - 3 * sizeof(uint32_t)];
} ca_mmu_lock;

/* rdtsc: the time-stamp counter, constant-rate here (constant_tsc). */
static inline uint64_t ca_ticks(void) {
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

/* Spins `ticks` time-stamp ticks: a cost the model pays in time (a VM exit,
 * an IPI's delivery) without doing anything. */
static inline void ca_spin_ticks(uint64_t ticks) {
    if (!ticks) return;
    uint64_t t0 = ca_ticks();
    while (ca_ticks() - t0 < ticks) ca_cpu_relax();
}

extern __thread ca_lock_stats *ca_lock_stats_current;
extern __thread ca_mcs_node ca_mcs_self;

/* Start or stop recording this thread's lock operations into `s` (NULL stops). */
static inline void ca_lock_stats_set(ca_lock_stats *s) { ca_lock_stats_current = s; }

static inline void ca_lock_acquired(uint64_t t0) {
    ca_lock_stats *s = ca_lock_stats_current;
    if (__builtin_expect(s != 0, 0)) {
        uint64_t t = ca_ticks();
        s->wait_ticks += t - t0;
        s->acquired_at = t;
    }
}

static inline void ca_hold_record(ca_hold_stats *h, uint64_t ticks) {
    if (h->n < h->cap) h->holds[h->n++] = ticks;
    h->count++;
    h->ticks_total += ticks;
    if (ticks > h->ticks_max) h->ticks_max = ticks;
}

static inline void ca_lock_released(int shared) {
    ca_lock_stats *s = ca_lock_stats_current;
    if (__builtin_expect(s != 0, 0)) ca_hold_record(shared ? &s->shared : &s->exclusive, ca_ticks() - s->acquired_at);
}

static inline uint64_t ca_lock_t0(void) { return ca_lock_stats_current ? ca_ticks() : 0; }

/* A wait for mmu_lock longer than CA_LOCK_STALL_TICKS (2e10 time-stamp
 * ticks: 4 to 10 s on a 2 to 5 GHz counter, where the longest hold the
 * harness makes, a 16 GiB slot walk, is tens of ms) is a lock that never
 * lets go: a bug. The waiter counts it in ca_lock_failures (which also
 * counts a lock found held where nothing may hold it) and goes on as if
 * served, and from then on every wait gives up after 256 spins, so
 * that a broken lock fails the test or the run that reads the count (the
 * bench fails its run) instead of hanging it. The clock is read once
 * every 65536 spins of a wait, never on an uncontended acquire. */
#define CA_LOCK_STALL_TICKS 20000000000ull
extern uint64_t ca_lock_failures;

/* Waits for mmu_lock given up, and locks found held where nothing may
 * hold them, so far in this process. */
static inline uint64_t ca_lock_failure_count(void) { return __atomic_load_n(&ca_lock_failures, __ATOMIC_RELAXED); }
static inline void ca_lock_failed(void) { __atomic_fetch_add(&ca_lock_failures, 1, __ATOMIC_RELAXED); }

typedef struct { uint64_t since; uint32_t spins; } ca_lock_wait;

/* One spin of a wait: relax, and now and then look at the clock. True
 * when the wait should give up. */
static inline int ca_lock_spin(ca_lock_wait *w) {
    ca_cpu_relax();
    if (__builtin_expect(++w->spins & 0xff, 1)) return 0;
    if (__atomic_load_n(&ca_lock_failures, __ATOMIC_RELAXED)) return 1;
    if (w->spins & 0xffff) return 0;
    uint64_t now = ca_ticks();
    if (!w->since) { w->since = now; return 0; }
    if (now - w->since < CA_LOCK_STALL_TICKS) return 0;
    ca_lock_failed();
    return 1;
}

/* arch_spin_lock() of a ticket lock: take a ticket, spin until served. */
static inline void ca_ticket_lock(ca_mmu_lock *l) {
    uint32_t me = __atomic_fetch_add(&l->ticket_next, 1u, __ATOMIC_RELAXED);
    ca_lock_wait w = {0, 0};
    while (__atomic_load_n(&l->ticket_owner, __ATOMIC_ACQUIRE) != me && !ca_lock_spin(&w)) {}
}

static inline void ca_ticket_unlock(ca_mmu_lock *l) {
    __atomic_store_n(&l->ticket_owner, __atomic_load_n(&l->ticket_owner, __ATOMIC_RELAXED) + 1u, __ATOMIC_RELEASE);
}

/* queued_spin_lock(), as the MCS queue it is built on. */
static inline void ca_mcs_lock(ca_mmu_lock *l) {
    ca_mcs_node *me = &ca_mcs_self;
    __atomic_store_n(&me->next, (ca_mcs_node *)0, __ATOMIC_RELAXED);
    __atomic_store_n(&me->locked, 1u, __ATOMIC_RELAXED);
    ca_mcs_node *prev = __atomic_exchange_n(&l->mcs_tail, me, __ATOMIC_ACQ_REL);
    if (prev) {
        __atomic_store_n(&prev->next, me, __ATOMIC_RELEASE);
        ca_lock_wait w = {0, 0};
        while (__atomic_load_n(&me->locked, __ATOMIC_ACQUIRE) && !ca_lock_spin(&w)) {}
    }
}

static inline void ca_mcs_unlock(ca_mmu_lock *l) {
    ca_mcs_node *me = &ca_mcs_self;
    ca_mcs_node *next = __atomic_load_n(&me->next, __ATOMIC_ACQUIRE);
    if (!next) {
        ca_mcs_node *expected = me;
        if (__atomic_compare_exchange_n(&l->mcs_tail, &expected, (ca_mcs_node *)0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return;
        ca_lock_wait w = {0, 0};
        while (!(next = __atomic_load_n(&me->next, __ATOMIC_ACQUIRE))) if (ca_lock_spin(&w)) return;
    }
    __atomic_store_n(&next->locked, 0u, __ATOMIC_RELEASE);
}

/* read_lock()/write_lock() of a writer-preferring rwlock, as the queued
 * rwlock behaves: a reader waits while a writer holds or waits. */
static inline int ca_rw_try_read_lock(ca_mmu_lock *l) {
    int32_t v = __atomic_load_n(&l->rw, __ATOMIC_RELAXED);
    return v >= 0 && !__atomic_load_n(&l->rw_writers_waiting, __ATOMIC_RELAXED) &&
           __atomic_compare_exchange_n(&l->rw, &v, v + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void ca_rw_read_lock(ca_mmu_lock *l) {
    if (ca_rw_try_read_lock(l)) return;
    __atomic_fetch_add(&l->rw_readers_waiting, 1u, __ATOMIC_RELAXED);
    ca_lock_wait w = {0, 0};
    while (!ca_rw_try_read_lock(l) && !ca_lock_spin(&w)) {}
    __atomic_fetch_sub(&l->rw_readers_waiting, 1u, __ATOMIC_RELAXED);
}

static inline void ca_rw_read_unlock(ca_mmu_lock *l) { __atomic_fetch_sub(&l->rw, 1, __ATOMIC_RELEASE); }

static inline void ca_rw_write_lock(ca_mmu_lock *l) {
    __atomic_fetch_add(&l->rw_writers_waiting, 1u, __ATOMIC_RELAXED);
    ca_lock_wait w = {0, 0};
    for (;;) {
        int32_t v = 0;
        if (__atomic_compare_exchange_n(&l->rw, &v, -1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) break;
        if (ca_lock_spin(&w)) break;
    }
    __atomic_fetch_sub(&l->rw_writers_waiting, 1u, __ATOMIC_RELAXED);
}

static inline void ca_rw_write_unlock(ca_mmu_lock *l) { __atomic_store_n(&l->rw, 0, __ATOMIC_RELEASE); }

/* The era's lock itself, with nothing of the harness in it: the exclusive
 * side is the whole spinlock (spin_lock) or the rwlock's write side
 * (write_lock); the shared side the rwlock's read side (read_lock) or, in
 * the eras of a spinlock, which has none, the whole lock (what the same
 * code path took then: spin_lock). `kind` without CA_LOCK_INSTRUMENTED. */
static inline __attribute__((always_inline)) void ca_era_lock_exclusive(ca_mmu_lock *l, uint32_t kind) {
    switch (kind) {
    case CA_LOCK_TICKET: ca_ticket_lock(l); break;
    case CA_LOCK_QUEUED: ca_mcs_lock(l); break;
    default: ca_rw_write_lock(l); break;
    }
}

static inline __attribute__((always_inline)) void ca_era_unlock_exclusive(ca_mmu_lock *l, uint32_t kind) {
    switch (kind) {
    case CA_LOCK_TICKET: ca_ticket_unlock(l); break;
    case CA_LOCK_QUEUED: ca_mcs_unlock(l); break;
    default: ca_rw_write_unlock(l); break;
    }
}

/* The instrumented lock (kind | CA_LOCK_INSTRUMENTED), which the measuring
 * side chooses for a VM whose holds and waits it reports (the concurrent
 * scenario): the era's lock, and around it, on a thread that asked
 * (`ca_lock_stats_set`), a time-stamp read at each acquire and release.
 * The model's code is the same for both; only the lock's kind differs. */
static inline __attribute__((noinline)) void ca_instrumented_lock_exclusive(ca_mmu_lock *l, uint32_t kind) {
    uint64_t t0 = ca_lock_t0();
    ca_era_lock_exclusive(l, kind);
    ca_lock_acquired(t0);
}

static inline __attribute__((noinline)) void ca_instrumented_unlock_exclusive(ca_mmu_lock *l, uint32_t kind) {
    ca_lock_released(0);
    ca_era_unlock_exclusive(l, kind);
}

/* mmu_lock's exclusive side as `kind` (l->kind, read once by a loop that
 * takes the lock per page, so that each acquisition in it is the era's
 * lock and a predicted branch, not a reload of the kind after every atomic). */
static inline __attribute__((always_inline)) void ca_mmu_lock_exclusive_as(ca_mmu_lock *l, uint32_t kind) {
    if (__builtin_expect(kind & CA_LOCK_INSTRUMENTED, 0)) ca_instrumented_lock_exclusive(l, kind & CA_LOCK_KIND_MASK);
    else ca_era_lock_exclusive(l, kind);
}

static inline __attribute__((always_inline)) void ca_mmu_unlock_exclusive_as(ca_mmu_lock *l, uint32_t kind) {
    if (__builtin_expect(kind & CA_LOCK_INSTRUMENTED, 0)) ca_instrumented_unlock_exclusive(l, kind & CA_LOCK_KIND_MASK);
    else ca_era_unlock_exclusive(l, kind);
}

static inline void ca_mmu_lock_exclusive(ca_mmu_lock *l) { ca_mmu_lock_exclusive_as(l, l->kind); }

static inline void ca_mmu_unlock_exclusive(ca_mmu_lock *l) { ca_mmu_unlock_exclusive_as(l, l->kind); }

static inline void ca_mmu_lock_shared(ca_mmu_lock *l) {
    uint32_t kind = l->kind;
    if ((kind & CA_LOCK_KIND_MASK) != CA_LOCK_RW) { ca_mmu_lock_exclusive_as(l, kind); return; }
    if (__builtin_expect(kind & CA_LOCK_INSTRUMENTED, 0)) {
        uint64_t t0 = ca_lock_t0();
        ca_rw_read_lock(l);
        ca_lock_acquired(t0);
    } else {
        ca_rw_read_lock(l);
    }
}

static inline void ca_mmu_unlock_shared(ca_mmu_lock *l) {
    uint32_t kind = l->kind;
    if ((kind & CA_LOCK_KIND_MASK) != CA_LOCK_RW) { ca_mmu_unlock_exclusive_as(l, kind); return; }
    if (__builtin_expect(kind & CA_LOCK_INSTRUMENTED, 0)) ca_lock_released(1);
    ca_rw_read_unlock(l);
}

/* Whether anyone holds it (for assertions). */
static inline int ca_mmu_is_locked(ca_mmu_lock *l) {
    switch (l->kind & CA_LOCK_KIND_MASK) {
    case CA_LOCK_TICKET: return __atomic_load_n(&l->ticket_next, __ATOMIC_RELAXED) != __atomic_load_n(&l->ticket_owner, __ATOMIC_RELAXED);
    case CA_LOCK_QUEUED: return __atomic_load_n(&l->mcs_tail, __ATOMIC_RELAXED) != 0;
    default: return __atomic_load_n(&l->rw, __ATOMIC_RELAXED) != 0;
    }
}

/* spin_needbreak() / rwlock_needbreak() as a fully preemptible kernel has
 * them (spin_is_contended(), rwlock_is_contended()): someone waits for the
 * lock this thread holds. A ticket lock with a ticket taken behind the
 * owner's; an MCS queue with a node behind this thread's; an rwlock with
 * a writer (or, for a writer, a reader) waiting. */
static inline int ca_mmu_lock_contended(ca_mmu_lock *l) {
    switch (l->kind & CA_LOCK_KIND_MASK) {
    case CA_LOCK_TICKET:
        return __atomic_load_n(&l->ticket_next, __ATOMIC_RELAXED) - __atomic_load_n(&l->ticket_owner, __ATOMIC_RELAXED) > 1;
    case CA_LOCK_QUEUED: return __atomic_load_n(&l->mcs_tail, __ATOMIC_RELAXED) != &ca_mcs_self;
    default:
        return __atomic_load_n(&l->rw_writers_waiting, __ATOMIC_RELAXED) != 0 ||
               (__atomic_load_n(&l->rw, __ATOMIC_RELAXED) < 0 && __atomic_load_n(&l->rw_readers_waiting, __ATOMIC_RELAXED) != 0);
    }
}

/* cmpxchg64(): the spte update of a lockless fault or a walk under the read lock. */
static inline int ca_cmpxchg64(uint64_t *p, uint64_t old, uint64_t new_) {
    return __atomic_compare_exchange_n(p, &old, new_, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

/* A plain test-and-test-and-set spinlock on a 32-bit word, for the model's
 * own small critical sections beside mmu_lock (the TDP MMU's
 * tdp_mmu_pages_lock around its page list): never instrumented, so it
 * leaves mmu_lock's statistics alone. */
static inline void ca_spin_lock(uint32_t *w) {
    for (;;) {
        if (!__atomic_exchange_n(w, 1u, __ATOMIC_ACQUIRE)) return;
        while (__atomic_load_n(w, __ATOMIC_RELAXED)) __builtin_ia32_pause();
    }
}
static inline void ca_spin_unlock(uint32_t *w) { __atomic_store_n(w, 0u, __ATOMIC_RELEASE); }

/* Atomic 32-bit words shared between the harvester and the vCPU threads. */
static inline uint32_t ca_load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ca_store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t ca_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ca_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t ca_fetch_add64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
/* A store no later load may pass (xchg): one side of the vcpu->mode and
 * srcu handshakes, whose other side is a locked read-modify-write. */
static inline void ca_store_seq32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline void ca_store_seq64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

/* Pins the calling thread to one CPU (pthread_setaffinity_np); 0, or -1
 * when the OS refuses (then it runs where the scheduler puts it). */
int ca_pin_thread(int cpu);
/* Lets the calling thread run on every online CPU again. */
int ca_unpin_thread(void);

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

/* The time-stamp ticks one load of *p takes, lfence on both sides: a line
 * in a near cache costs tens of ticks, one from memory hundreds. For the
 * test that the eviction empties the caches. */
static inline uint64_t ca_load_ticks(const uint64_t *p) {
    uint32_t lo, hi;
    __asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    uint64_t t0 = (uint64_t)hi << 32 | lo;
    uint64_t v = *(volatile const uint64_t *)p;
    __asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi) : "r"(v) : "memory");
    return ((uint64_t)hi << 32 | lo) - t0;
}

/* mfence: every earlier load, store and line flush is complete. */
static inline void ca_flush_fence(void) { __asm__ __volatile__("mfence" ::: "memory"); }

/* A compiler barrier: keeps loads and stores from moving across the edges
 * of a timed region. */
static inline void ca_compiler_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

#endif
