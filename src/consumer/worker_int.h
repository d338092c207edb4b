/*
 * The master's state, shared by worker.c (consuming, dispatching) and
 * mailbox.c (remote control and inspection).  Private to src/consumer.
 */
#ifndef CW_WORKER_INT_H
#define CW_WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "broker/broker.h"
#include "config/config.h"
#include "http/metrics.h"
#include "consumer/events.h"
#include "consumer/revoked.h"
#include "pool/pool.h"
#include "protocol/control.h"
#include "tasks/exec.h"
#include "tasks/registry.h"

/*
 * A message the worker holds: waiting for its ETA, reserved (in `ready`)
 * or running (in `running[slot]`).  Allocated once; moves between lists by
 * pointer so timers can refer to it.
 */
struct held {
	struct cw_delivery *d;
	struct cw_request req;     /* decoded once, on arrival */
	double eta;                /* wall clock; 0 = none */
	double expires;            /* wall clock; 0 = none */
	bool acks_late, reject_on_worker_lost;
	bool terminated;           /* revoke(terminate=True) signalled its child */
	bool soft_fired;           /* the soft time limit was signalled */
	double time_start;         /* wall clock when handed to the pool */
	double soft, hard;         /* effective limits, seconds; 0 = none */
	int slot;                  /* while running */
	bool counted;              /* counts against the prefetch limit */
	uint64_t eta_timer, soft_timer, hard_timer;
	struct worker *w;
};

/*
 * A task name's rate limit: kombu's TokenBucket(rate, capacity=1) as
 * Celery's consumer uses it.  Messages that found the bucket empty wait
 * here, in arrival order, outside the prefetch budget (so they never hold
 * back other task types), until a token is due.
 */
struct bucket {
	char *task;
	double rate;               /* tokens per second */
	double tokens, stamp;      /* monotonic stamp of the last refill */
	struct held **q;
	size_t n, cap;
	uint64_t timer;
	struct worker *w;
};

struct worker {
	const struct cw_config *cfg;
	struct cw_loop *loop;
	struct cw_broker *broker;
	const struct cw_broker_ops *bops;
	struct cw_backend *backend;
	struct cw_registry *reg;
	struct cw_pool *pool;
	struct cw_exec_env env;
	struct cw_proto_limits limits;

	struct held **ready;       /* FIFO of reserved, unstarted messages */
	size_t nready, capready;
	struct held **eta;         /* messages waiting for their ETA (unordered) */
	size_t neta, capeta;
	struct cw_revoked *revoked; /* ids revoked by control messages (Celery's LimitedSet) */
	struct bucket **buckets;   /* one per rate-limited task name (stable pointers) */
	int nbuckets;
	struct held **running;     /* indexed by pool slot */
	int nslots;
	int limit;                 /* concurrency x prefetch multiplier */
	int held;                  /* counted messages: reserved + running */

	/* monitoring */
	struct cw_events *events;
	struct cw_metrics *metrics;  /* --http: Prometheus counters (NULL = off; calls are no-ops) */
	struct cw_monitor *monitor;  /* --http: server, probes (consumer/monitor.c) */
	json_t *totals;            /* task name -> tasks finished (stats "total") */
	long processed;
	double started;            /* wall clock at start (stats "uptime") */
	json_t *task_limits;       /* name -> [soft, hard] set by the time_limit command */
	int pool_size;             /* processes wanted now (grow/shrink/autoscale) */
	int autoscale_max, autoscale_min; /* 0 = no autoscaler */
	double last_scale_up;      /* monotonic */
	double autoscale_keepalive;

	int sigfd;
	enum { RUNNING, WARM, COLD } phase;
	double shutdown_deadline;
	bool announced;
	int exit_code;
};

/* worker.c services for the mailbox */
void cw_worker_revoke(struct worker *w, const char *id, bool terminate, int sig);
void cw_worker_save_state(struct worker *w);
int cw_worker_set_rate(struct worker *w, const char *task, double rate);
double cw_worker_rate(const struct worker *w, const char *task);
/* Grow (n > 0) or shrink (n < 0) the pool; CW_EAGAIN when not enough idle processes. */
int cw_worker_resize(struct worker *w, int n);
void cw_worker_shutdown(struct worker *w);
void cw_worker_heartbeat(struct worker *w, const char *type, double freq);
/* A request's info dict as Celery's Request.info(safe) builds it. */
json_t *cw_worker_request_info(const struct worker *w, const struct held *h, bool safe);

/* mailbox.c */
void cw_mailbox_handle(struct worker *w, const struct cw_control *c);

#endif
