/* The process's jemalloc options are defined in config.c (malloc_conf). */
