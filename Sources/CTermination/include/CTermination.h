#ifndef CTERMINATION_H
#define CTERMINATION_H

/* SIGINT and SIGTERM for a long run: the first one is recorded, for the run
 * to notice between measurements and stop cleanly (finish what it writes,
 * say where it stopped); a second one exits at once with 128 + its number,
 * as a shell reports a process a signal killed. */

/* Installs the handlers (sigaction, SA_RESTART) and unblocks both signals
 * in the calling thread. Returns 0, or -1 with errno. */
int ct_watch(void);

/* The first signal received since ct_watch() or ct_forget(), or 0. */
int ct_received(void);

/* Forgets a received signal (for tests that send one on purpose). */
void ct_forget(void);

#endif
