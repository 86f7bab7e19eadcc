#ifndef CJEMALLOC_SHIM_H
#define CJEMALLOC_SHIM_H

#include <jemalloc/jemalloc.h>
#include <stddef.h>
#include <stdint.h>

/* jemalloc's flag macros are function-like, so Swift cannot import them.
 * Each shim returns exactly what the macro expands to. */

/* MALLOCX_ALIGN(a): alignment must be a power of two. */
static inline int cj_mallocx_align(size_t alignment) { return MALLOCX_ALIGN(alignment); }

/* MALLOCX_ARENA(a): allocate from arena a (from "arenas.create"). */
static inline int cj_mallocx_arena(unsigned arena) { return MALLOCX_ARENA(arena); }

/* MALLOCX_TCACHE_NONE: bypass the thread cache, so frees go straight back
 * to the arena and its statistics. */
static inline int cj_mallocx_tcache_none(void) { return MALLOCX_TCACHE_NONE; }

/* MALLOCX_ZERO */
static inline int cj_mallocx_zero(void) { return MALLOCX_ZERO; }

/* The version string jemalloc was built as ("5.3.0-0-g..."). */
static inline const char *cj_version(void) { return JEMALLOC_VERSION; }

/* mallctl("thread.allocatedp") / ("thread.deallocatedp"): pointers to this
 * thread's running byte counters, readable with a plain load. */
static inline uint64_t *cj_thread_counter(const char *name) {
    uint64_t *p = NULL;
    size_t sz = sizeof(p);
    if (mallctl(name, &p, &sz, NULL, 0) != 0) return NULL;
    return p;
}

/* mallctl read of a size_t statistic after refreshing the stats epoch. */
static inline int cj_read_size_stat(const char *name, size_t *out) {
    uint64_t epoch = 1;
    size_t esz = sizeof(epoch);
    if (mallctl("epoch", &epoch, &esz, &epoch, esz) != 0) return -1;
    size_t sz = sizeof(*out);
    return mallctl(name, out, &sz, NULL, 0);
}

/* mallctl("arenas.create"): a new arena of the process's own. */
static inline int cj_arena_create(unsigned *index) {
    size_t sz = sizeof(*index);
    return mallctl("arenas.create", index, &sz, NULL, 0);
}

#endif
