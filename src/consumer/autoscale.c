/* The autoscaler (see autoscale.h). */
#include "consumer/autoscale.h"

#include <stdlib.h>

#include "loop/loop.h"
#include "util/err.h"
#include "util/log.h"

struct cw_autoscale {
	struct cw_loop *loop;
	struct cw_autoscale_handler h;
	int max, min;
	double keepalive;
	double last_up;            /* monotonic; 0 = never grew */
	uint64_t timer;
};

static void tick(struct cw_loop *loop, void *arg)
{
	struct cw_autoscale *a = arg;
	if (!a->h.running(a->h.arg))
		return;
	int procs = a->h.procs(a->h.arg), qty = a->h.held(a->h.arg);
	int cur = qty < a->max ? qty : a->max;
	if (cur > procs) {
		cw_log(CW_LOG_INFO, "autoscale", "Scaling up %d processes.", cur - procs);
		a->last_up = cw_loop_now(loop);
		(void)a->h.resize(a->h.arg, cur - procs);
		return;
	}
	cur = qty > a->min ? qty : a->min;
	if (cur < procs && a->last_up > 0 && cw_loop_now(loop) - a->last_up > a->keepalive) {
		cw_log(CW_LOG_INFO, "autoscale", "Scaling down %d processes.", procs - cur);
		if (a->h.resize(a->h.arg, cur - procs) != CW_OK)
			cw_log(CW_LOG_DEBUG, "autoscale", "won't scale down: all processes busy");
	}
}

struct cw_autoscale *cw_autoscale_new(struct cw_loop *loop, int max, int min, double keepalive,
				      const struct cw_autoscale_handler *h)
{
	struct cw_autoscale *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	*a = (struct cw_autoscale){.loop = loop, .h = *h, .max = max, .min = min,
				   .keepalive = keepalive};
	if (!(a->timer = cw_loop_every(loop, 1.0, tick, a))) {
		free(a);
		return NULL;
	}
	return a;
}

void cw_autoscale_free(struct cw_autoscale *a)
{
	if (!a)
		return;
	cw_loop_timer_cancel(a->loop, a->timer);
	free(a);
}

int cw_autoscale_max(const struct cw_autoscale *a)
{
	return a ? a->max : 0;
}

int cw_autoscale_min(const struct cw_autoscale *a)
{
	return a ? a->min : 0;
}

void cw_autoscale_set(struct cw_autoscale *a, bool has_max, int max, bool has_min, int min)
{
	if (has_max) {
		int procs = a->h.procs(a->h.arg);
		if (max < procs)
			(void)a->h.resize(a->h.arg, max - procs);
		a->max = max;
		(void)a->h.resize(a->h.arg, 0);   /* the budget follows the new MAX */
	}
	if (has_min) {
		int procs = a->h.procs(a->h.arg);
		if (min > procs)
			(void)a->h.resize(a->h.arg, min - procs);
		a->min = min;
	}
}
