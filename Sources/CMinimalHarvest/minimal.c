#include "CMinimalHarvest.h"

#include <string.h>

#define SPTE_PRESENT   (1ull << 0)
#define SPTE_WRITABLE  (1ull << 1)
#define SPTE_PAGE_SIZE (1ull << 7)
#define PTE_LIST_EXT   4

static inline void mh_lock(mh_ticket_lock *l) {
    uint32_t me = __atomic_fetch_add(&l->next, 1u, __ATOMIC_ACQUIRE);
    while (__atomic_load_n(&l->owner, __ATOMIC_ACQUIRE) != me) __builtin_ia32_pause();
}

static inline void mh_unlock(mh_ticket_lock *l) {
    __atomic_store_n(&l->owner, l->owner + 1u, __ATOMIC_RELEASE);
}

/* __rmap_write_protect(): each spte on the list loses the writable bit
 * (the seed's mmu_spte_update() is a plain store for a dirty writable spte). */
static inline void mh_rmap_wrprot(uintptr_t head, mh_counts *c) {
    if (!head) return;
    if (!(head & 1)) {
        uint64_t *sptep = (uint64_t *)head, spte = *sptep;
        c->visited++;
        if (spte & SPTE_WRITABLE) { *(volatile uint64_t *)sptep = spte & ~SPTE_WRITABLE; c->protected_++; }
        return;
    }
    for (const uintptr_t *d = (const uintptr_t *)(head & ~(uintptr_t)1); d; d = (const uintptr_t *)d[PTE_LIST_EXT]) {
        for (int i = 0; i < PTE_LIST_EXT && d[i]; i++) {
            uint64_t *sptep = (uint64_t *)d[i], spte = *sptep;
            c->visited++;
            if (spte & SPTE_WRITABLE) { *(volatile uint64_t *)sptep = spte & ~SPTE_WRITABLE; c->protected_++; }
        }
    }
}

/* A large level's rmap: count writable leaves (none while logging). */
static inline void mh_rmap_large(uintptr_t head, mh_counts *c) {
    if (!head) return;
    if (!(head & 1)) { c->large_writable += (*(uint64_t *)head & SPTE_WRITABLE) != 0; return; }
    for (const uintptr_t *d = (const uintptr_t *)(head & ~(uintptr_t)1); d; d = (const uintptr_t *)d[PTE_LIST_EXT])
        for (int i = 0; i < PTE_LIST_EXT && d[i]; i++) c->large_writable += (*(uint64_t *)d[i] & SPTE_WRITABLE) != 0;
}

/* search_memslots() of the seed's era: linear, largest slot first. */
static inline const mh_slot *mh_gfn_to_memslot(const mh_slot *slots, int n, uint64_t gfn) {
    for (int i = 0; i < n; i++)
        if (gfn >= slots[i].base_gfn && gfn < slots[i].base_gfn + slots[i].npages) return &slots[i];
    return 0;
}

static inline __attribute__((always_inline)) mh_counts
mh_rmap_body(const mh_slot *slots, int nslots, int slot, const uint64_t *bitmap, uint64_t *other, size_t words,
             mh_ticket_lock *lock, const int steps) {
    mh_counts c = {0, 0, 0};
    memset(other, 0, words * sizeof *other);
    const mh_slot *s = &slots[slot];
    for (size_t w = 0; w < words; w++) {
        uint64_t mask = bitmap[w];
        while (mask) {
            uint64_t gfn = s->base_gfn + (w << 6 | (uint64_t)__builtin_ctzll(mask));
            mask &= mask - 1;
            if (steps == 1) { c.visited += gfn; continue; }
            mh_lock(lock);
            if (steps >= 3) mh_rmap_wrprot(s->rmap[0][gfn - s->base_gfn], &c);
            if (steps >= 4) {
                for (int level = 2; level <= 3; level++) {
                    const mh_slot *ls = mh_gfn_to_memslot(slots, nslots, gfn);
                    if (!ls) continue;
                    unsigned shift = 9u * (unsigned)(level - 1);
                    mh_rmap_large(ls->rmap[level - 1][(gfn >> shift) - (ls->base_gfn >> shift)], &c);
                }
            }
            mh_unlock(lock);
        }
    }
    return c;
}

mh_counts mh_rmap_write_protect(const mh_slot *slots, int nslots, int slot, const uint64_t *bitmap,
                                uint64_t *other, size_t words, mh_ticket_lock *lock, int steps) {
    switch (steps) {
    case 1: return mh_rmap_body(slots, nslots, slot, bitmap, other, words, lock, 1);
    case 2: return mh_rmap_body(slots, nslots, slot, bitmap, other, words, lock, 2);
    case 3: return mh_rmap_body(slots, nslots, slot, bitmap, other, words, lock, 3);
    default: return mh_rmap_body(slots, nslots, slot, bitmap, other, words, lock, 4);
    }
}

static inline __attribute__((always_inline)) mh_counts
mh_walk_body(const mh_pages *p, int slot_id, uint64_t *other, size_t words, mh_ticket_lock *lock, const int steps) {
    mh_counts c = {0, 0, 0};
    memset(other, 0, words * sizeof *other);
    const uint64_t bit = 1ull << slot_id;
    mh_lock(lock);
    for (int32_t sp = p->head; sp >= 0; sp = p->next[sp]) {
        if (!(p->slot_bitmap[sp] & bit)) continue;
        if (steps == 1) { c.visited++; continue; }
        uint64_t *pt = p->spt[sp];
        const int leaf_level = p->level[sp] == 1;
        for (int i = 0; i < 512; i++) {
            uint64_t spte = pt[i];
            if (!(spte & SPTE_PRESENT) || !(leaf_level || (spte & SPTE_PAGE_SIZE))) continue;
            c.visited++;
            if (spte & SPTE_PAGE_SIZE) { c.large_writable += (spte & SPTE_WRITABLE) != 0; continue; }
            if (steps >= 3 && (spte & SPTE_WRITABLE)) { *(volatile uint64_t *)&pt[i] = spte & ~SPTE_WRITABLE; c.protected_++; }
        }
    }
    mh_unlock(lock);
    return c;
}

mh_counts mh_slot_remove_write_access(const mh_pages *pages, int slot_id, uint64_t *other, size_t words,
                                      mh_ticket_lock *lock, int steps) {
    switch (steps) {
    case 1: return mh_walk_body(pages, slot_id, other, words, lock, 1);
    case 2: return mh_walk_body(pages, slot_id, other, words, lock, 2);
    default: return mh_walk_body(pages, slot_id, other, words, lock, 3);
    }
}
