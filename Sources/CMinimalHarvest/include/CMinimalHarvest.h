#ifndef C_MINIMAL_HARVEST_H
#define C_MINIMAL_HARVEST_H
/*
 * The seed's two write-protection branches written as plainly as C allows,
 * on the model's own data (its bitmap, rmap arrays, shadow-page columns and
 * sptes): the yardstick the model's per-page cost is held against
 * (`bench breakdown`). Each function takes `steps`, how many of the kernel
 * function's steps to run, so that the difference between consecutive
 * step counts is what one step costs:
 *
 * rmap (write_protect_slot()'s first branch, kvm_mmu_rmap_write_protect()):
 *   1 for_each_set_bit over the handed-out bitmap, the gfn of each bit
 *   2 + spin_lock()/spin_unlock() of mmu_lock around each gfn (a ticket lock)
 *   3 + the 4 KiB rmap: every spte on it loses the writable bit
 *   4 + the 2 MiB and 1 GiB rmaps, found through gfn_to_rmap(), which
 *       searches the memslots (search_memslots(), largest first)
 *
 * slot walk (kvm_mmu_slot_remove_write_access()):
 *   1 follow active_mmu_pages, test each page's slot bitmap
 *   2 + read the 512 sptes of each page of the slot, find the leaves
 *   3 + write-protect each writable 4 KiB leaf
 *
 * Large leaves are counted, not dropped: the state it runs on has none.
 */
#include <stddef.h>
#include <stdint.h>

/* A memslot as gfn_to_rmap() reads it. */
typedef struct {
    uint64_t base_gfn;
    uint64_t npages;
    uintptr_t *rmap[3]; /* 4 KiB, 2 MiB, 1 GiB heads, pte_list encoded */
} mh_slot;

/* arch_spinlock_t of the seed's era: a ticket lock. */
typedef struct {
    uint32_t next;
    uint32_t owner;
} mh_ticket_lock;

/* The shadow-page columns the walk reads. */
typedef struct {
    const int32_t *next;
    const uint64_t *slot_bitmap;
    uint64_t *const *spt;
    const uint8_t *level;
    int32_t head;
} mh_pages;

/* What a run did: sptes made read-only, large leaves found writable,
 * rmap heads or sptes visited (so nothing is optimised away). */
typedef struct {
    uint64_t protected_;
    uint64_t large_writable;
    uint64_t visited;
} mh_counts;

/* `slots` in search order; `slot` the index of the one the bitmap is of. */
/* `other`: the bitmap half made current, cleared first as the seed's
 * kvm_vm_ioctl_get_dirty_log() clears it; `words` the length of each half. */
mh_counts mh_rmap_write_protect(const mh_slot *slots, int nslots, int slot, const uint64_t *bitmap,
                                uint64_t *other, size_t words, mh_ticket_lock *lock, int steps);

mh_counts mh_slot_remove_write_access(const mh_pages *pages, int slot_id, uint64_t *other, size_t words,
                                      mh_ticket_lock *lock, int steps);

#endif
