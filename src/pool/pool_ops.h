/*
 * The seam between pool.c (the public cw_pool_* calls) and the pool
 * implementations: each kind fills one ops table and keeps its own state
 * behind `self`.  Private to src/pool.
 */
#ifndef CW_POOL_OPS_H
#define CW_POOL_OPS_H

#include "pool/pool.h"

struct cw_pool_ops {
	const char *name;        /* --pool value: "prefork", "solo" */
	/* NULL on ENOMEM; the pool keeps a copy of *h and borrows loop and env */
	void *(*create)(struct cw_loop *loop, int n, const struct cw_exec_env *env,
			const struct cw_pool_handler *h);
	void (*destroy)(void *self);
	int (*start)(void *self);
	int (*idle_slot)(const void *self);
	int (*busy)(const void *self);
	int (*size)(const void *self);
	int (*slots)(const void *self);
	int (*processes)(const void *self, pid_t *pids, int max);
	pid_t (*pid)(const void *self, int slot);
	long (*rss_kib)(const void *self, int slot);
	int (*submit)(void *self, int slot, const struct cw_job *job);
	void (*reap)(void *self);
	void (*stop)(void *self, double wait);
	void (*kill)(void *self);

	/* What a pool may not do: NULL means CW_EINVAL, a no-op or 0. */
	int (*grow)(void *self, int n);
	int (*shrink)(void *self, int n);
	void (*set_recycling)(void *self, long max_tasks, long max_kib);
	int (*signal)(void *self, int slot, int sig);
	void (*kill_slot)(void *self, int slot, enum cw_lost_reason why);
	long (*recycles)(const void *self, enum cw_recycle_reason why);
};

extern const struct cw_pool_ops cw_pool_prefork_ops;
extern const struct cw_pool_ops cw_pool_solo_ops;

#endif
