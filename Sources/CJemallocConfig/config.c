/* jemalloc reads this string once, when it initialises (before main).
 *
 * thp:always: jemalloc madvise()s its memory MADV_HUGEPAGE, so the model's
 * shadow pages, rmaps and bitmaps sit on 2 MiB pages where the kernel can
 * give them. The kernel's own shadow pages and pte_list_descs live in the
 * direct map, which is mapped with large pages; without this, the model
 * would pay TLB misses the kernel does not. (MALLOC_CONF in the environment
 * still overrides it.) */
const char *malloc_conf = "thp:always";
