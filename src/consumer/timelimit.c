/* Soft/hard time limits and the child memory watchdog (see timelimit.h). */
#include "consumer/timelimit.h"

#include <signal.h>
#include <stdlib.h>

#include "http/metrics.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "util/log.h"

struct cw_timelimit {
	struct cw_loop *loop;
	struct cw_pool *pool;
	struct cw_metrics *metrics;
	const struct cw_reserve *reserve;
	long memory_kib;
	uint64_t memory_timer;
};

static void on_soft(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	struct cw_timelimit *tl = h->tl;
	(void)loop;
	h->soft_timer = 0;
	h->soft_fired = true;
	cw_metrics_task(tl->metrics, h->req.task, CW_M_SOFT_LIMIT, 1);
	cw_log(CW_LOG_WARNING, "pool", "Soft time limit (%gs) exceeded for %s[%s]", h->soft,
	       h->req.task, h->req.id);
	cw_pool_signal(tl->pool, h->slot, SIGUSR1);
}

static void on_hard(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	struct cw_timelimit *tl = h->tl;
	(void)loop;
	h->hard_timer = 0;
	cw_metrics_task(tl->metrics, h->req.task, CW_M_HARD_LIMIT, 1);
	cw_log(CW_LOG_ERROR, "pool", "Hard time limit (%gs) exceeded for %s[%s]", h->hard,
	       h->req.task, h->req.id);
	cw_pool_kill_slot(tl->pool, h->slot, CW_LOST_TIMEOUT);
}

/* With --child-memory-limit: kill a busy child whose RSS passed it. */
static void on_memory(struct cw_loop *loop, void *arg)
{
	struct cw_timelimit *tl = arg;
	(void)loop;
	for (int i = 0; i < cw_reserve_slots(tl->reserve); i++)
		if (cw_reserve_running(tl->reserve, i) &&
		    cw_pool_rss_kib(tl->pool, i) > tl->memory_kib)
			cw_pool_kill_slot(tl->pool, i, CW_LOST_MEMORY);
}

struct cw_timelimit *cw_timelimit_new(struct cw_loop *loop, struct cw_pool *pool,
				      struct cw_metrics *metrics, const struct cw_reserve *reserve,
				      long memory_kib)
{
	struct cw_timelimit *tl = calloc(1, sizeof(*tl));
	if (!tl)
		return NULL;
	*tl = (struct cw_timelimit){.loop = loop, .pool = pool, .metrics = metrics,
				    .reserve = reserve, .memory_kib = memory_kib};
	if (memory_kib > 0 && !(tl->memory_timer = cw_loop_every(loop, 0.1, on_memory, tl))) {
		free(tl);
		return NULL;
	}
	return tl;
}

void cw_timelimit_free(struct cw_timelimit *tl)
{
	if (!tl)
		return;
	if (tl->memory_timer)
		cw_loop_timer_cancel(tl->loop, tl->memory_timer);
	free(tl);
}

/* A limit whose timer cannot be armed is logged: the task then runs without it. */
static uint64_t arm(struct cw_timelimit *tl, struct held *h, double after, cw_timer_cb cb,
		    const char *which)
{
	uint64_t id = cw_loop_timer(tl->loop, after, cb, h);
	if (!id)
		cw_log(CW_LOG_ERROR, "pool", "%s[%s]: out of memory arming the %s time limit; the "
		       "task runs without it", h->req.task, h->req.id, which);
	return id;
}

void cw_timelimit_start(struct cw_timelimit *tl, struct held *h)
{
	h->tl = tl;
	if (h->soft > 0 && (!h->hard || h->soft < h->hard))
		h->soft_timer = arm(tl, h, h->soft, on_soft, "soft");
	if (h->hard > 0)
		h->hard_timer = arm(tl, h, h->hard, on_hard, "hard");
}

void cw_timelimit_stop(struct cw_loop *loop, struct held *h)
{
	if (h->soft_timer)
		cw_loop_timer_cancel(loop, h->soft_timer);
	if (h->hard_timer)
		cw_loop_timer_cancel(loop, h->hard_timer);
	h->soft_timer = h->hard_timer = 0;
}
