/*
 * --autoscale MAX,MIN, as Celery's Autoscaler: once a second, grow to
 * min(held messages, MAX) at once; shrink towards max(held, MIN) only when
 * the last grow is more than AUTOSCALE_KEEPALIVE seconds (default 30) old,
 * and only idle processes.  The pool starts at MIN (at least one) and the
 * prefetch budget is sized for MAX.
 */
#ifndef CW_AUTOSCALE_H
#define CW_AUTOSCALE_H

#include <stdbool.h>

struct cw_loop;
struct cw_autoscale;

struct cw_autoscale_handler {
	int (*held)(void *arg);            /* messages held (reserved + running) */
	int (*procs)(void *arg);           /* processes the pool keeps now */
	int (*resize)(void *arg, int n);   /* grow (n > 0) or shrink (n < 0); CW_* */
	bool (*running)(void *arg);        /* false while shutting down */
	void *arg;
};

struct cw_autoscale *cw_autoscale_new(struct cw_loop *loop, int max, int min, double keepalive,
				      const struct cw_autoscale_handler *h);
void cw_autoscale_free(struct cw_autoscale *a);
int cw_autoscale_max(const struct cw_autoscale *a);
int cw_autoscale_min(const struct cw_autoscale *a);
/* The `autoscale` control command: a new range (has_* false = keep). */
void cw_autoscale_set(struct cw_autoscale *a, bool has_max, int max, bool has_min, int min);

#endif
