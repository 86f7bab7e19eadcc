#define _GNU_SOURCE
#include "CLinuxKVM.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

static void ck_deadline_handler(int sig) { (void)sig; }

int ck_deadline_arm(ck_deadline *d, uint64_t first_ns, uint64_t repeat_ns) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ck_deadline_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0) return -1;

    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR1;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid); /* sigev_notify_thread_id */
    if (timer_create(CLOCK_MONOTONIC, &ev, &d->timer) != 0) return -1;

    struct itimerspec its;
    its.it_value.tv_sec = (time_t)(first_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(first_ns % 1000000000u);
    its.it_interval.tv_sec = (time_t)(repeat_ns / 1000000000u);
    its.it_interval.tv_nsec = (long)(repeat_ns % 1000000000u);
    if (timer_settime(d->timer, 0, &its, NULL) != 0) {
        timer_delete(d->timer);
        return -1;
    }
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    int e = pthread_sigmask(SIG_UNBLOCK, &usr1, &d->saved);
    if (e != 0) {
        timer_delete(d->timer);
        errno = e;
        return -1;
    }
    d->armed = 1;
    return 0;
}

void ck_deadline_disarm(ck_deadline *d) {
    if (d->armed) {
        timer_delete(d->timer);
        pthread_sigmask(SIG_SETMASK, &d->saved, NULL);
        d->armed = 0;
    }
}
