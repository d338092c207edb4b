/*
 * The pool front: picks an implementation by name and forwards the public
 * cw_pool_* calls to its ops table, answering for operations it lacks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool/pool.h"
#include "pool/pool_ops.h"
#include "util/err.h"

struct cw_pool {
	const struct cw_pool_ops *ops;
	void *self;
};

static const struct cw_pool_ops *const kinds[] = {&cw_pool_prefork_ops, &cw_pool_solo_ops};

static const struct cw_pool_ops *lookup(const char *kind)
{
	for (size_t i = 0; kind && i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (!strcmp(kinds[i]->name, kind))
			return kinds[i];
	return NULL;
}

struct cw_pool *cw_pool_new(struct cw_loop *loop, const char *kind, int n,
			    const struct cw_exec_env *env, const struct cw_pool_handler *h)
{
	const struct cw_pool_ops *ops = lookup(kind);
	if (!ops)
		return NULL;
	struct cw_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ops = ops;
	p->self = ops->create(loop, n, env, h);
	if (!p->self) {
		free(p);
		return NULL;
	}
	return p;
}

int cw_pool_start(struct cw_pool *p)
{
	return p->ops->start(p->self);
}

int cw_pool_idle_slot(const struct cw_pool *p)
{
	return p->ops->idle_slot(p->self);
}

int cw_pool_busy(const struct cw_pool *p)
{
	return p->ops->busy(p->self);
}

int cw_pool_size(const struct cw_pool *p)
{
	return p->ops->size(p->self);
}

int cw_pool_slots(const struct cw_pool *p)
{
	return p->ops->slots(p->self);
}

int cw_pool_processes(const struct cw_pool *p, pid_t *pids, int max)
{
	return p->ops->processes(p->self, pids, max);
}

int cw_pool_grow(struct cw_pool *p, int n)
{
	return p->ops->grow ? p->ops->grow(p->self, n) : CW_EINVAL;
}

int cw_pool_shrink(struct cw_pool *p, int n)
{
	return p->ops->shrink ? p->ops->shrink(p->self, n) : CW_EINVAL;
}

pid_t cw_pool_pid(const struct cw_pool *p, int slot)
{
	return p->ops->pid(p->self, slot);
}

int cw_pool_submit(struct cw_pool *p, int slot, const struct cw_job *job)
{
	return p->ops->submit(p->self, slot, job);
}

void cw_pool_set_recycling(struct cw_pool *p, long max_tasks, long max_kib)
{
	if (p->ops->set_recycling)
		p->ops->set_recycling(p->self, max_tasks, max_kib);
}

int cw_pool_signal(struct cw_pool *p, int slot, int sig)
{
	return p->ops->signal ? p->ops->signal(p->self, slot, sig) : CW_EINVAL;
}

void cw_pool_kill_slot(struct cw_pool *p, int slot, enum cw_lost_reason why)
{
	if (p->ops->kill_slot)
		p->ops->kill_slot(p->self, slot, why);
}

long cw_pool_rss_kib(const struct cw_pool *p, int slot)
{
	return p->ops->rss_kib(p->self, slot);
}

long cw_pool_recycles(const struct cw_pool *p, enum cw_recycle_reason why)
{
	return p && p->ops->recycles && why < CW_RECYCLE_N ? p->ops->recycles(p->self, why) : 0;
}

void cw_pool_reap(struct cw_pool *p)
{
	p->ops->reap(p->self);
}

void cw_pool_stop(struct cw_pool *p, double wait)
{
	p->ops->stop(p->self, wait);
}

void cw_pool_kill(struct cw_pool *p)
{
	p->ops->kill(p->self);
}

void cw_pool_free(struct cw_pool *p)
{
	if (!p)
		return;
	p->ops->destroy(p->self);
	free(p);
}

long cw_proc_rss_kib(pid_t pid)
{
	char path[64], buf[128];
	long pages = 0, rss = 0;
	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f) && sscanf(buf, "%ld %ld", &pages, &rss) == 2)
		rss = rss * (sysconf(_SC_PAGESIZE) / 1024);
	else
		rss = 0;
	fclose(f);
	return rss;
}
