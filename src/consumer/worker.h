/*
 * The master, as the rest of cworker sees it.  cw_worker_run() wires the
 * broker, the pool, the result backend and the consumer's parts together
 * and runs the loop until shutdown.
 *
 * Remote control (src/control) and the HTTP monitor (src/http/monitor.c)
 * reach the running worker only through the query/command functions below:
 * they never see its struct.  Each query returns what Celery's own worker
 * reports for the same question.
 */
#ifndef CW_WORKER_H
#define CW_WORKER_H

#include <stdbool.h>
#include <jansson.h>

#include "config/config.h"

struct cw_worker;
struct cw_broker;
struct cw_events;
struct cw_loop;
struct cw_metrics;
struct cw_pool;
struct cw_registry;
struct cw_revoked;

/* Run the worker until shutdown; returns the process exit status. */
int cw_worker_run(const struct cw_config *cfg);

/* ---- the parts, for their own narrow APIs -------------------------------- */
const struct cw_config *cw_worker_config(const struct cw_worker *w);
struct cw_loop *cw_worker_loop(const struct cw_worker *w);
struct cw_broker *cw_worker_broker(const struct cw_worker *w);
struct cw_pool *cw_worker_pool(const struct cw_worker *w);
struct cw_events *cw_worker_events(const struct cw_worker *w);
struct cw_revoked *cw_worker_revoked(const struct cw_worker *w);
const struct cw_registry *cw_worker_registry(const struct cw_worker *w);
struct cw_metrics *cw_worker_metrics(const struct cw_worker *w);

/* ---- queries ------------------------------------------------------------- */
struct cw_worker_counts {
	long processed;            /* tasks accepted since start */
	double started;            /* wall clock at start */
	int limit;                 /* prefetch budget: concurrency (or autoscale max) x multiplier */
	int held;                  /* reserved + running (Celery's reserved_requests) */
	long reserved;             /* reserved + waiting for a rate-limit token */
	long scheduled;            /* waiting for their ETA */
	int autoscale_max, autoscale_min;   /* 0, 0 = no autoscaler */
	bool running;              /* false once shutdown began */
};
void cw_worker_counts(const struct cw_worker *w, struct cw_worker_counts *c);
/* task name -> tasks accepted (stats "total"); borrowed. */
json_t *cw_worker_totals(const struct cw_worker *w);
/* Whether pool slot runs a task now. */
bool cw_worker_slot_busy(const struct cw_worker *w, int slot);
/* Celery's Request.info() of each running / reserved request; scheduled: {eta, priority, request}. */
json_t *cw_worker_active(const struct cw_worker *w, bool safe);
json_t *cw_worker_reserved(const struct cw_worker *w);
json_t *cw_worker_scheduled(const struct cw_worker *w);
/* query_task: [state, info] for a held id ("active" or "reserved"), NULL if not held. */
json_t *cw_worker_query_task(const struct cw_worker *w, const char *id);
/* A task's rate limit (tasks/s; 0 = none). */
double cw_worker_rate(const struct cw_worker *w, const char *task);

/* ---- commands ------------------------------------------------------------ */
/* Flag id as revoked; with terminate, signal the child running it.  Returns whether it ran. */
bool cw_worker_revoke(struct cw_worker *w, const char *id, bool terminate, int sig);
/* Write the revoked ids to --statedb (if set). */
void cw_worker_save_state(struct cw_worker *w);
/* Set (rate > 0) or lift (0) a task's rate limit; CW_OK or CW_ENOMEM. */
int cw_worker_set_rate(struct cw_worker *w, const char *task, double rate);
/* The time_limit command: soft/hard (JSON numbers, or anything else for none). */
void cw_worker_set_time_limit(struct cw_worker *w, const char *task, json_t *soft, json_t *hard);
/* Grow (n > 0) or shrink (n < 0) the pool; CW_EAGAIN when not enough idle processes. */
int cw_worker_resize(struct cw_worker *w, int n);
/* The autoscale command; CW_EINVAL when the worker has no autoscaler. */
int cw_worker_autoscale(struct cw_worker *w, bool has_max, int max, bool has_min, int min);
/* A warm shutdown, as SIGTERM. */
void cw_worker_shutdown(struct cw_worker *w);
/* worker-online / worker-heartbeat / worker-offline with Celery's fields. */
void cw_worker_heartbeat(struct cw_worker *w, const char *type, double freq);

#endif
