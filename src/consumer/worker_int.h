/*
 * The master's parts, wired together.  Each part owns its own state behind
 * its own header (reserve, rate limits, time limits, shutdown, autoscaler,
 * revoked ids, events, metrics); this struct only holds the handles and the
 * few counters Celery reports.  Private to src/consumer: remote control and
 * the HTTP monitor see the worker through consumer/worker.h only.
 *
 *   consumer.c  a message's way in: bad input, settle, ETA, admission,
 *               dispatch to the pool, credit to the broker, connection state
 *   outcome.c   a message's way out: results of the pool and states the
 *               master decides, with their events, metrics and acks
 *   query.c     the query/command API of worker.h
 *   worker.c    start-up and tear-down wiring
 */
#ifndef CW_WORKER_INT_H
#define CW_WORKER_INT_H

#include <stdbool.h>
#include <jansson.h>

#include "backend/backend.h"
#include "broker/broker.h"
#include "config/config.h"
#include "consumer/autoscale.h"
#include "consumer/held.h"
#include "consumer/ratelimit.h"
#include "consumer/reserve.h"
#include "consumer/revoked.h"
#include "consumer/shutdown.h"
#include "consumer/timelimit.h"
#include "consumer/worker.h"
#include "events/events.h"
#include "http/metrics.h"
#include "pool/pool.h"
#include "tasks/exec.h"
#include "tasks/registry.h"

struct cw_worker {
	const struct cw_config *cfg;
	struct cw_loop *loop;
	struct cw_broker *broker;
	struct cw_backend *backend;
	struct cw_registry *reg;
	struct cw_pool *pool;
	struct cw_exec_env env;
	struct cw_proto_limits limits;

	struct cw_reserve *reserve;
	struct cw_ratelimit *ratelimit;
	struct cw_timelimit *timelimit;
	struct cw_shutdown *shutdown;
	struct cw_autoscale *autoscale;   /* NULL = fixed pool size */
	struct cw_revoked *revoked;       /* ids revoked by control messages (Celery's LimitedSet) */
	struct cw_events *events;
	struct cw_metrics *metrics;       /* --http: Prometheus counters (NULL = off; calls no-op) */
	struct cw_monitor *monitor;       /* --http: server and probes */

	json_t *totals;                   /* task name -> tasks accepted (stats "total") */
	long processed;
	double started;                   /* wall clock at start (stats "uptime") */
	json_t *task_limits;              /* name -> [soft, hard] set by the time_limit command */
	bool announced;                   /* worker-online sent */
	bool disable_prefetch;            /* worker_disable_prefetch in effect (Redis) */
};

/* consumer.c */
void cw_consumer_on_delivery(void *arg, struct cw_delivery *d);
void cw_consumer_on_state(void *arg, bool up);
void cw_consumer_on_broadcast(void *arg, const char *exchange, const struct cw_envelope *env);
void cw_consumer_on_ready(void *arg, struct held **hs, size_t n);
/* Hand reserved messages to idle slots, then tell the broker the credit left. */
void cw_consumer_dispatch(struct cw_worker *w);
void cw_consumer_update_credit(struct cw_worker *w);
/*
 * Pool: the early-acked task in slot returned (its result is being stored):
 * it leaves the prefetch budget now, so the next message is on its way
 * while the store is out.  It stays in its slot until on_done.
 */
void cw_consumer_on_returned(void *arg, int slot);
/* Shutdown began: stop fetching, give back every message not started. */
void cw_consumer_stop(struct cw_worker *w, enum cw_phase phase);
bool cw_consumer_running(const struct cw_worker *w);
/* Free a held message (its timers, its place in the budget, its delivery). */
void cw_held_release(struct cw_worker *w, struct held *h);

/* outcome.c */
void cw_outcome_on_done(void *arg, int slot, const struct cw_outcome *o, const char *publish);
void cw_outcome_on_lost(void *arg, int slot, pid_t pid, int wstatus, enum cw_lost_reason why);
/* A running task's own event (update_state): sent as a task-* event about it. */
void cw_outcome_on_event(void *arg, int slot, const char *type, const char *fields, size_t len);
/* Celery's Request.revoked(): expired or revoked ids end REVOKED, acked, freed. */
void cw_outcome_revoked(struct cw_worker *w, struct held *h, bool expired);
/* A state the master decided, stored as the child would (chord part, errbacks). */
void cw_outcome_store(struct cw_worker *w, struct held *h, enum cw_state state, const char *type,
		      const char *module, const char *msg, json_t *args);
void cw_outcome_event(struct cw_worker *w, const struct held *h, const char *type,
		      json_t *fields);
/*
 * Cold shutdown cancelled a running task (its child is already dead):
 * Celery's cancel_active_requests.  An acks_late message goes back to its
 * queue; an early-acked one is lost and stored as RETRY "cancelled by
 * Celery".  Frees h; true when the message went back.
 */
bool cw_outcome_cancelled(struct cw_worker *w, struct held *h);

#endif
