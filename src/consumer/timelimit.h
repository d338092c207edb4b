/*
 * Limits on a running task, enforced by the master: the soft time limit
 * (SIGUSR1 to the child; the task may clean up), the hard time limit
 * (SIGKILL; the pool reports the slot lost with CW_LOST_TIMEOUT) and
 * --child-memory-limit (the RSS of busy children looked at ten times a
 * second; SIGKILL with CW_LOST_MEMORY).
 */
#ifndef CW_TIMELIMIT_H
#define CW_TIMELIMIT_H

#include "consumer/held.h"
#include "consumer/reserve.h"

struct cw_loop;
struct cw_pool;
struct cw_metrics;
struct cw_timelimit;

/* memory_kib > 0: watch busy children's RSS (prefork only). */
struct cw_timelimit *cw_timelimit_new(struct cw_loop *loop, struct cw_pool *pool,
				      struct cw_metrics *metrics, const struct cw_reserve *reserve,
				      long memory_kib);
void cw_timelimit_free(struct cw_timelimit *tl);
/* h just started in h->slot: arm its soft and hard limits (h->soft, h->hard; 0 = none). */
void cw_timelimit_start(struct cw_timelimit *tl, struct held *h);
/* h stopped running (or is freed): cancel its timers. */
void cw_timelimit_stop(struct cw_loop *loop, struct held *h);

#endif
