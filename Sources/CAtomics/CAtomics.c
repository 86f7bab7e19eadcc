#define _GNU_SOURCE
#include "CAtomics.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

__thread ca_lock_stats *ca_lock_stats_current;
__thread ca_mcs_node ca_mcs_self __attribute__((aligned(64)));
uint64_t ca_lock_failures;

int ca_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0 ? 0 : -1;
}

int ca_unpin_thread(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET((int)i, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0 ? 0 : -1;
}
