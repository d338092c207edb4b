/*
 * Start-up and tear-down: builds the parts of the master in order (tasks,
 * result backend, shutdown and signals, pool, reserve, rate limits, state
 * db, monitor, broker, events, periodic work), runs the loop, and takes
 * them apart again.  What each part does is in its own file; see
 * worker_int.h for the map.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/worker_int.h"
#include "cw_build.h"
#include "http/monitor.h"
#include "loop/loop.h"
#include "tasks/modules.h"
#include "tasks/setup.h"
#include "util/log.h"
#include "util/sdnotify.h"
#include "util/url.h"

/* /metrics labels: task names past this many are counted under "other" */
#define MAX_TASK_LABELS 1000
/* how long a store the master makes itself (a lost child, an unknown task) may retry */
#define MASTER_STORE_RETRY 1.0

/* TLS for the broker: broker_use_ssl, or any of its keys set. */
static bool broker_ssl(const struct cw_config *cfg)
{
	return cfg->broker_ssl || cfg->broker_ssl_ca || cfg->broker_ssl_cert || cfg->broker_ssl_key;
}

static void heartbeat_tick(struct cw_loop *loop, void *arg)
{
	struct cw_worker *w = arg;
	(void)loop;
	if (cw_consumer_running(w) && w->announced)
		cw_worker_heartbeat(w, "worker-heartbeat", w->cfg->heartbeat_interval);
}

static void touch_one(void *arg, struct held *h, enum cw_held_where where)
{
	struct cw_worker *w = arg;
	(void)where;
	w->broker->ops->touch(w->broker, h->d);
}

/*
 * Keep the broker's record of every held message fresh (a quarter of the
 * visibility timeout apart), so no scan hands it to another worker while
 * this one is alive and holding it.
 */
static void touch_tick(struct cw_loop *loop, void *arg)
{
	struct cw_worker *w = arg;
	(void)loop;
	if (!w->broker->ops->connected(w->broker))
		return;
	cw_reserve_each(w->reserve, (1u << CW_HELD_READY) | (1u << CW_HELD_ETA), touch_one, w);
	cw_ratelimit_each(w->ratelimit, touch_one, w);
	cw_reserve_each(w->reserve, 1u << CW_HELD_RUNNING, touch_one, w);
}

static double touch_interval(const struct cw_config *cfg)
{
	double t = cfg->visibility_timeout / 4;
	return t < 0.05 ? 0.05 : t > 60 ? 60 : t;
}

/* ---- pool, shutdown and autoscaler callbacks ------------------------------ */

static void on_idle(void *arg)
{
	cw_consumer_dispatch(arg);
}

static void on_shutdown(void *arg, enum cw_phase phase)
{
	cw_consumer_stop(arg, phase);
}

static bool tasks_running(void *arg)
{
	struct cw_worker *w = arg;
	return cw_pool_busy(w->pool) > 0;
}

static bool broker_pending(void *arg)
{
	struct cw_worker *w = arg;
	return w->broker && w->broker->ops->busy(w->broker) && w->broker->ops->connected(w->broker);
}

static void child_exited(void *arg)
{
	struct cw_worker *w = arg;
	cw_pool_reap(w->pool);
}

static int as_held(void *arg)
{
	return cw_reserve_tasks(((struct cw_worker *)arg)->reserve);
}

static int as_procs(void *arg)
{
	return cw_pool_size(((struct cw_worker *)arg)->pool);
}

static int as_resize(void *arg, int n)
{
	return cw_worker_resize(arg, n);
}

static bool as_running(void *arg)
{
	return cw_consumer_running(arg);
}

/* ---- start-up ----------------------------------------------------------- */

static void load_statedb(struct cw_worker *w)
{
	const struct cw_config *cfg = w->cfg;
	struct cw_error err = {0};
	if (!cfg->statedb || !*cfg->statedb)
		return;
	if (cw_revoked_load(w->revoked, cfg->statedb, cw_wall(), &err) != CW_OK) {
		char moved[4200];
		snprintf(moved, sizeof(moved), "%s.corrupt", cfg->statedb);
		cw_log(CW_LOG_ERROR, "worker", "state db unusable, starting without it (kept as %s): %s",
		       moved, err.msg);
		if (rename(cfg->statedb, moved) < 0)
			cw_log(CW_LOG_ERROR, "worker", "cannot move %s aside: %s", cfg->statedb,
			       strerror(errno));
	} else {
		cw_log(CW_LOG_INFO, "worker", "state db %s: %zu revoked ids", cfg->statedb,
		       cw_revoked_count(w->revoked));
	}
}

static bool track_started(const void *cfg, const char *task)
{
	return cw_config_track_started(cfg, task);
}

static int open_backend(struct cw_worker *w, struct cw_error *err)
{
	const struct cw_config *cfg = w->cfg;
	struct cw_backend_opts bo = {.url = cfg->result_backend, .expires = cfg->result_expires,
				     .task_table = cfg->db_task_table,
				     .group_table = cfg->db_group_table,
				     .task_schema = cfg->db_task_schema,
				     .group_schema = cfg->db_group_schema,
				     .broker_url = cfg->broker_url,
				     .ssl_ca = cfg->broker_ssl_ca, .ssl_cert = cfg->broker_ssl_cert,
				     .ssl_key = cfg->broker_ssl_key, .ssl = broker_ssl(cfg),
				     .ssl_verify = strcmp(cfg->broker_ssl_reqs, "CERT_NONE") != 0,
				     .redis_ssl_ca = cfg->redis_ssl_ca,
				     .redis_ssl_cert = cfg->redis_ssl_cert,
				     .redis_ssl_key = cfg->redis_ssl_key,
				     .redis_ssl_reqs = cfg->redis_ssl_reqs,
				     .master_name = cfg->backend_master_name};
	w->backend = cw_backend_open(&bo, err);
	if (!w->backend && err->msg[0]) {
		cw_log(CW_LOG_ERROR, "worker", "result backend: %s", err->msg);
		return CW_EINVAL;
	}
	/* solo runs tasks in this process: their results keep the full retry window */
	if (cfg->pool_kind != CW_POOL_SOLO)
		cw_backend_retry_cap(MASTER_STORE_RETRY);
	if (cw_backend_prepare(w->backend, err) != CW_OK)
		cw_log(CW_LOG_WARNING, "worker", "result backend not ready yet (%s); children retry "
		       "when they store", err->msg);
	w->env = (struct cw_exec_env){.reg = w->reg, .backend = w->backend, .hostname = cfg->hostname,
				      .result_extended = cfg->result_extended, .limits = w->limits,
				      .default_queue = "celery", .track_started = track_started,
				      .track_arg = cfg, .process_init = cw_modules_init,
				      .process_exit = cw_modules_exit};
	return CW_OK;
}

static int open_broker(struct cw_worker *w, const char *redacted)
{
	const struct cw_config *cfg = w->cfg;
	struct cw_error err = {0};
	static const char *const broadcast[] = {"celery.pidbox", NULL};
	struct cw_queue_decl *decls = calloc((size_t)cfg->nqueue_confs + 1, sizeof(*decls));
	if (!decls)
		return CW_ENOMEM;
	for (int i = 0; i < cfg->nqueue_confs; i++)
		decls[i] = (struct cw_queue_decl){.name = cfg->queue_confs[i].name,
						  .keys = cfg->queue_confs[i].keys,
						  .vals = cfg->queue_confs[i].vals,
						  .n = cfg->queue_confs[i].n};
	struct cw_broker_opts opts = {.url = cfg->broker_url, .queues = cfg->queue_list,
				      .nqueues = cfg->nqueues, .broadcast = broadcast,
				      .visibility_timeout = cfg->visibility_timeout, .limits = w->limits,
				      .nodename = cfg->hostname,
				      .ssl_ca = cfg->broker_ssl_ca, .ssl_cert = cfg->broker_ssl_cert,
				      .ssl_key = cfg->broker_ssl_key, .ssl = broker_ssl(cfg),
				      .ssl_verify = strcmp(cfg->broker_ssl_reqs, "CERT_NONE") != 0,
				      .heartbeat = (int)cfg->broker_heartbeat,
				      .connect_timeout = cfg->broker_connection_timeout,
				      .max_priority = (int)cfg->queue_max_priority,
				      .queue_type = cfg->queue_type,
				      .queue_passive = cfg->queue_passive,
				      .queue_decls = decls, .nqueue_decls = cfg->nqueue_confs,
				      .control_exclusive = cfg->control_exclusive,
				      .failover_strategy = cfg->failover_strategy,
				      .master_name = cfg->broker_master_name};

	struct cw_broker_handler bh = {.on_delivery = cw_consumer_on_delivery,
				       .on_state = cw_consumer_on_state,
				       .on_broadcast = cw_consumer_on_broadcast, .arg = w};
	w->broker = cw_broker_open(w->loop, &opts, &bh, &err);
	free(decls); /* the transport keeps its own copy */
	if (!w->broker) {
		cw_log(CW_LOG_ERROR, "worker", "broker %s: %s", redacted, err.msg);
		return CW_EIO;
	}
	return CW_OK;
}

/* Pool, reserve, rate limits, time limits and the autoscaler. */
static int build_parts(struct cw_worker *w)
{
	const struct cw_config *cfg = w->cfg;
	bool solo = cfg->pool_kind == CW_POOL_SOLO;
	int nslots = solo ? 1 : (int)cfg->concurrency;
	int as_max = 0;

	if (cfg->autoscale_max && !solo) {
		/* start at MIN (at least one process), prefetch sized for MAX, as Celery */
		as_max = (int)cfg->autoscale_max;
		nslots = cfg->autoscale_min > 0 ? (int)cfg->autoscale_min : 1;
	}
	struct cw_pool_handler ph = {.on_done = cw_outcome_on_done, .on_lost = cw_outcome_on_lost,
				     .on_returned = cw_consumer_on_returned, .on_idle = on_idle,
				     .on_event = cw_outcome_on_event, .arg = w};
	w->pool = cw_pool_new(w->loop, cfg->pool, nslots, &w->env, &ph);
	w->reserve = cw_reserve_new(nslots);
	w->ratelimit = cw_ratelimit_new(w->loop, cw_consumer_on_ready, w);
	if (!w->pool || !w->reserve || !w->ratelimit)
		return CW_ENOMEM;
	cw_reserve_set_limit(w->reserve, (as_max ? as_max : nslots) * (int)cfg->prefetch_multiplier);
	cw_reserve_set_eta_cap(w->reserve, cfg->eta_task_limit);
	if (cfg->disable_prefetch) {
		/* Celery 5.6: Redis only; other transports warn and keep their window */
		const struct cw_broker_ops *bo = cw_broker_lookup(cfg->broker_url);
		if (bo && bo->set_prefetch) {
			cw_log(CW_LOG_WARNING, "worker", "worker_disable_prefetch is only supported "
			       "for Redis brokers; ignoring it");
		} else {
			w->disable_prefetch = true;
			cw_reserve_set_cap(w->reserve, as_max ? as_max : nslots);
		}
	}
	cw_pool_set_recycling(w->pool, cfg->max_tasks_per_child, cfg->max_memory_per_child);
	w->timelimit = cw_timelimit_new(w->loop, w->pool, w->metrics, w->reserve,
					solo ? 0 : cfg->child_memory_limit);
	if (!w->timelimit)
		return CW_ENOMEM;
	if (as_max) {
		const char *ka = getenv("AUTOSCALE_KEEPALIVE");
		struct cw_autoscale_handler ah = {.held = as_held, .procs = as_procs,
						  .resize = as_resize, .running = as_running, .arg = w};
		w->autoscale = cw_autoscale_new(w->loop, as_max, (int)cfg->autoscale_min,
						ka && atof(ka) > 0 ? atof(ka) : 30, &ah);
		if (!w->autoscale)
			return CW_ENOMEM;
	}
	for (int i = 0; i < cfg->ntasks; i++)
		if (cfg->tasks[i].rate > 0 &&
		    cw_ratelimit_set(w->ratelimit, cfg->tasks[i].name, cfg->tasks[i].rate) != CW_OK)
			return CW_ENOMEM;
	return CW_OK;
}

static int start(struct cw_worker *w)
{
	const struct cw_config *cfg = w->cfg;
	struct cw_error err = {0};
	char redacted[512];

	if (cw_tasks_setup(w->reg, cfg, true, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "worker", "%s", err.msg[0] ? err.msg : "out of memory");
		return CW_EINVAL;
	}
	if (open_backend(w, &err) != CW_OK)
		return CW_EINVAL;
	struct cw_shutdown_handler sh = {.begin = on_shutdown, .tasks_running = tasks_running,
					 .broker_pending = broker_pending,
					 .child_exited = child_exited, .arg = w};
	struct cw_shutdown_opts so = {.soft_timeout = cfg->soft_shutdown_timeout,
				      .remap_sigterm = cw_shutdown_remap_sigterm(getenv("REMAP_SIGTERM"))};
	if (so.remap_sigterm && so.soft_timeout <= 0)
		cw_log(CW_LOG_WARNING, "worker", "REMAP_SIGTERM=SIGQUIT without "
		       "worker_soft_shutdown_timeout: SIGTERM cancels running tasks at once");
	if (!(w->shutdown = cw_shutdown_new(w->loop, &sh, &so, &err))) {
		cw_log(CW_LOG_ERROR, "worker", "%s", err.msg);
		return CW_EIO;
	}
	w->started = cw_wall();
	w->totals = json_object();
	w->task_limits = json_object();
	/* Celery's REVOKES_MAX and REVOKE_EXPIRES */
	w->revoked = cw_revoked_new(50000, 10800);
	if (!w->totals || !w->task_limits || !w->revoked)
		return CW_ENOMEM;
	/* --http: Prometheus counters (the other parts take NULL as "off") and the server */
	if (cfg->http_listen && *cfg->http_listen &&
	    !(w->metrics = cw_metrics_new(MAX_TASK_LABELS, CW_VERSION, CW_FEATURES)))
		return CW_ENOMEM;
	cw_tasks_declare_counters(w->metrics);
	if (cw_monitor_start(w, &w->monitor, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "worker", "%s", err.msg[0] ? err.msg : "out of memory");
		return CW_EIO;
	}
	if (build_parts(w) != CW_OK)
		return CW_ENOMEM;
	load_statedb(w);
	if (cw_pool_start(w->pool) != CW_OK)
		return CW_EIO;

	cw_url_redact(cfg->broker_url, redacted, sizeof(redacted));
	cw_log(CW_LOG_INFO, "worker", "%s: broker %s, %s pool of %d, prefetch %d, queues %s",
	       cfg->hostname, redacted, cfg->pool, cw_pool_size(w->pool),
	       cw_reserve_limit(w->reserve), cfg->queues);
	if (open_broker(w, redacted) != CW_OK)
		return CW_EIO;
	w->events = cw_events_new(w->broker, cfg->hostname, cfg->task_events,
				  !cfg->without_heartbeat);
	if (!w->events)
		return CW_ENOMEM;
	if ((!cfg->without_heartbeat &&
	     !cw_loop_every(w->loop, cfg->heartbeat_interval, heartbeat_tick, w)) ||
	    !cw_loop_every(w->loop, touch_interval(cfg), touch_tick, w))
		return CW_ENOMEM;
	cw_monitor_started(w->monitor);
	if (cw_sd_watchdog_start(w->loop) != CW_OK)
		return CW_ENOMEM;
	return CW_OK;
}

static void release_one(void *arg, struct held *h, enum cw_held_where where)
{
	(void)where;
	cw_held_release(arg, h);
}

static void stop(struct cw_worker *w)
{
	if (w->pool) {
		cw_pool_stop(w->pool, 5.0);
		cw_pool_free(w->pool);
		w->pool = NULL;
	}
	if (w->reserve) {
		cw_reserve_drain(w->reserve, release_one, w);
		for (int i = 0; i < cw_reserve_slots(w->reserve); i++)
			cw_held_release(w, cw_reserve_finish(w->reserve, i));
	}
	if (w->ratelimit)
		cw_ratelimit_drain(w->ratelimit, true, release_one, w);
	if (w->revoked) {
		cw_worker_save_state(w);
		cw_revoked_free(w->revoked);
	}
	cw_autoscale_free(w->autoscale);
	cw_timelimit_free(w->timelimit);
	cw_ratelimit_free(w->ratelimit);
	cw_reserve_free(w->reserve);
	if (w->broker)
		w->broker->ops->close(w->broker);
	cw_events_free(w->events);
	cw_monitor_free(w->monitor);
	cw_metrics_free(w->metrics);
	json_decref(w->totals);
	json_decref(w->task_limits);
	cw_backend_close(w->backend);
	cw_registry_free(w->reg);
	cw_tasks_teardown();
	cw_shutdown_free(w->shutdown);
}

int cw_worker_run(const struct cw_config *cfg)
{
	struct cw_worker w = {.cfg = cfg};
	int rc = 1;

	w.limits = (struct cw_proto_limits)CW_PROTO_LIMITS_DEFAULT;
	w.loop = cw_loop_new();
	w.reg = cw_registry_new();
	if (w.loop && w.reg && start(&w) == CW_OK && cw_loop_run(w.loop) == 0)
		rc = cw_shutdown_exit_code(w.shutdown);
	stop(&w);
	cw_loop_free(w.loop);
	if (rc == 0)
		cw_log(CW_LOG_INFO, "worker", "%s stopped.", cfg->hostname);
	return rc;
}
