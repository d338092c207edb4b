/*
 * The reserve: every message the master holds and the prefetch budget.
 *
 *  - ready:   reserved messages in arrival order (FIFO), waiting for an idle
 *             slot; they count against the budget;
 *  - eta:     messages waiting for their ETA; outside the budget (as Celery);
 *  - running: one per pool slot; counted while unacknowledged (see below).
 *
 * Prefetch is exact because the broker is only given credit for
 * limit - counted messages, and counted is what Celery's QoS counts: the
 * unacknowledged ones (reserved, and running under acks_late; the consumer
 * uncounts a message when it acks it early).  With a cap
 * (worker_disable_prefetch) every held message counts until it returns, and
 * credit never passes cap - counted.  The reserve stores pointers and counts;
 * it never frees a message (the consumer does, through cw_reserve_uncount first).
 * Rate-limited messages wait in src/consumer/ratelimit.c, not here.
 */
#ifndef CW_RESERVE_H
#define CW_RESERVE_H

#include <stdbool.h>
#include <stddef.h>

#include "consumer/held.h"

struct cw_reserve;

enum cw_held_where { CW_HELD_RUNNING, CW_HELD_READY, CW_HELD_ETA };

struct cw_reserve *cw_reserve_new(int nslots);
void cw_reserve_free(struct cw_reserve *r);

/* The budget: concurrency x prefetch multiplier, against counted messages. */
void cw_reserve_set_limit(struct cw_reserve *r, int limit);
/* worker_disable_prefetch: at most cap counted messages (0 = no cap). */
void cw_reserve_set_cap(struct cw_reserve *r, int cap);
int cw_reserve_limit(const struct cw_reserve *r);
int cw_reserve_counted(const struct cw_reserve *r);
/* worker_eta_task_limit: a cap on the window below (0 = none). */
void cw_reserve_set_eta_cap(struct cw_reserve *r, long cap);
/* The window of unacknowledged messages with extra ETA-held/rate-limited ones (basic.qos). */
long cw_reserve_window(const struct cw_reserve *r, size_t extra);
/* How many more messages the broker may deliver now (never negative). */
int cw_reserve_credit(const struct cw_reserve *r, size_t extra);
/* A message leaves the budget (before it is freed); no-op when it was not counted. */
void cw_reserve_uncount(struct cw_reserve *r, struct held *h);

/* ready FIFO: push counts h; false on ENOMEM (h untouched, not counted). */
bool cw_reserve_push(struct cw_reserve *r, struct held *h);
/* The oldest reserved message, removed; NULL when none. */
struct held *cw_reserve_pop(struct cw_reserve *r);
size_t cw_reserve_nready(const struct cw_reserve *r);

/* ETA-held messages (not counted); false on ENOMEM. */
bool cw_reserve_hold(struct cw_reserve *r, struct held *h);
/* Remove h from the ETA list (O(n) in ETA-held messages); false if not there. */
bool cw_reserve_unhold(struct cw_reserve *r, struct held *h);
size_t cw_reserve_neta(const struct cw_reserve *r);

/* Running messages by pool slot: slots 0 .. cw_reserve_slots()-1. */
int cw_reserve_slots(const struct cw_reserve *r);
/* Make room for slots 0 .. n-1; CW_OK or CW_ENOMEM. */
int cw_reserve_grow(struct cw_reserve *r, int n);
void cw_reserve_run(struct cw_reserve *r, int slot, struct held *h);
struct held *cw_reserve_running(const struct cw_reserve *r, int slot);
/* The message that ran in slot, removed from it; NULL when the slot was empty. */
struct held *cw_reserve_finish(struct cw_reserve *r, int slot);
int cw_reserve_active(const struct cw_reserve *r);
/* Reserved plus running, acked or not (Celery's reserved_requests). */
int cw_reserve_tasks(const struct cw_reserve *r);

/* Visit held messages of the kinds in mask (1 << where), running first, then ready, then ETA. */
typedef void (*cw_held_cb)(void *arg, struct held *h, enum cw_held_where where);
void cw_reserve_each(const struct cw_reserve *r, unsigned mask, cw_held_cb cb, void *arg);
/* The held message with task id, and where it is; NULL if none. */
struct held *cw_reserve_find(const struct cw_reserve *r, const char *id, enum cw_held_where *where);
/*
 * Empty the ready FIFO and the ETA list, handing each message to cb (which
 * owns it from then on: it must uncount and free it).  Returns how many.
 */
size_t cw_reserve_drain(struct cw_reserve *r, cw_held_cb cb, void *arg);

#endif
