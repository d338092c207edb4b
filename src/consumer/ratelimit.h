/*
 * Task rate limits: kombu's TokenBucket(rate, capacity=1), one per task
 * name, as Celery's consumer uses them.  A message whose bucket is empty
 * waits here, in arrival order and outside the prefetch budget (so it never
 * holds back other task types), until a token is due; then it is handed to
 * the `ready` callback.  Time comes from the loop's clock (cw_loop_now), so
 * tests can drive it.
 */
#ifndef CW_RATELIMIT_H
#define CW_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "consumer/held.h"
#include "consumer/reserve.h"

struct cw_loop;
struct cw_ratelimit;

/* A token bucket of capacity 1 (pure; now = monotonic seconds). */
struct cw_bucket {
	double rate;               /* tokens per second; 0 = no limit */
	double tokens, stamp;      /* stamp: when tokens was last refilled */
};
void cw_bucket_init(struct cw_bucket *b, double rate, double now);
/* Take a token if one is there. */
bool cw_bucket_take(struct cw_bucket *b, double now);
/* Seconds until a token is there (0 = now). */
double cw_bucket_wait(struct cw_bucket *b, double now);

/* Messages whose token came (n >= 1, oldest first); the callee owns them. */
typedef void (*cw_ratelimit_ready_cb)(void *arg, struct held **hs, size_t n);

struct cw_ratelimit *cw_ratelimit_new(struct cw_loop *loop, cw_ratelimit_ready_cb ready,
				      void *arg);
/* Frees the buckets; waiting messages must have been drained. */
void cw_ratelimit_free(struct cw_ratelimit *rl);

/*
 * Set (rate > 0) or lift (rate 0) task's limit.  Lifting it hands every
 * waiting message to `ready` at once.  CW_OK or CW_ENOMEM.
 */
int cw_ratelimit_set(struct cw_ratelimit *rl, const char *task, double rate);
/* task's limit in tasks per second; 0 = none. */
double cw_ratelimit_rate(const struct cw_ratelimit *rl, const char *task);

/*
 * A message is due: returns 0 when it may run now (no limit, or a token was
 * taken), 1 when it waits here (owned by the rate limiter until `ready` or a
 * drain), CW_ENOMEM when it could not be queued (the caller still owns it).
 */
int cw_ratelimit_admit(struct cw_ratelimit *rl, struct held *h);

/* Messages waiting for a token, all tasks together. */
size_t cw_ratelimit_waiting(const struct cw_ratelimit *rl);
/* Visit waiting messages (where = CW_HELD_READY: Celery reports them as reserved). */
void cw_ratelimit_each(const struct cw_ratelimit *rl, cw_held_cb cb, void *arg);
struct held *cw_ratelimit_find(const struct cw_ratelimit *rl, const char *id);
/*
 * Hand every waiting message to cb (which owns it) and stop the timers; with
 * stop, no timer is armed any more (shutdown).  Returns how many.
 */
size_t cw_ratelimit_drain(struct cw_ratelimit *rl, bool stop, cw_held_cb cb, void *arg);

#endif
