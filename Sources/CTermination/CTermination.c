#include "CTermination.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t received;

static void on_signal(int sig) {
    if (__atomic_load_n(&received, __ATOMIC_RELAXED) != 0) _exit(128 + sig);
    __atomic_store_n(&received, sig, __ATOMIC_RELEASE);
}

int ct_watch(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0) return -1;
    if (sigaction(SIGTERM, &sa, NULL) != 0) return -1;
    /* A parent may have left them blocked (the mask survives exec). */
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGINT);
    sigaddset(&both, SIGTERM);
    return pthread_sigmask(SIG_UNBLOCK, &both, NULL) == 0 ? 0 : -1;
}

int ct_received(void) { return __atomic_load_n(&received, __ATOMIC_ACQUIRE); }

void ct_forget(void) { __atomic_store_n(&received, 0, __ATOMIC_RELEASE); }
