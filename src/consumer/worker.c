#include "consumer/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "broker/broker.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "tasks/registry.h"
#include "util/log.h"
#include "util/url.h"

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
	double soft, hard;         /* effective limits, seconds; 0 = none */
	int slot;                  /* while running */
	bool counted;              /* counts against the prefetch limit */
	uint64_t eta_timer, soft_timer, hard_timer;
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
	struct held **running;     /* indexed by pool slot */
	int nslots;
	int limit;                 /* concurrency x prefetch multiplier */
	int held;                  /* counted messages: reserved + running */

	int sigfd;
	enum { RUNNING, WARM, COLD } phase;
	double shutdown_deadline;
	bool announced;
	int exit_code;
};

static double touch_interval(const struct cw_config *cfg)
{
	double t = cfg->visibility_timeout / 4;
	return t < 0.05 ? 0.05 : t > 60 ? 60 : t;
}

static bool push(struct held ***arr, size_t *n, size_t *cap, struct held *h)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct held **a = realloc(*arr, c * sizeof(*a));
		if (!a)
			return false;
		*arr = a;
		*cap = c;
	}
	(*arr)[(*n)++] = h;
	return true;
}

static void remove_at(struct held **arr, size_t *n, size_t i)
{
	memmove(arr + i, arr + i + 1, (*n - i - 1) * sizeof(*arr));
	(*n)--;
}

static void release(struct worker *w, struct held *h)
{
	if (!h)
		return;
	if (h->eta_timer)
		cw_loop_timer_cancel(w->loop, h->eta_timer);
	if (h->soft_timer)
		cw_loop_timer_cancel(w->loop, h->soft_timer);
	if (h->hard_timer)
		cw_loop_timer_cancel(w->loop, h->hard_timer);
	if (h->counted)
		w->held--;
	cw_request_clear(&h->req);
	cw_delivery_free(h->d);
	free(h);
}

static void update_credit(struct worker *w)
{
	int credit = w->phase == RUNNING ? w->limit - w->held : 0;
	w->bops->set_credit(w->broker, credit > 0 ? credit : 0);
}

/* Store a state the master decided (revoked, lost, timed out, ...). */
static void store_exc(struct worker *w, struct held *h, enum cw_state state, const char *type,
		      const char *module, const char *msg, json_t *args)
{
	struct cw_result_meta m = {.state = state, .exc_type = type, .exc_module = module,
				   .exc_message = msg, .exc_args = args};
	cw_exec_store(&w->env, &h->req, h->d->queue, &m);
}

static void ack(struct worker *w, struct held *h)
{
	w->bops->ack(w->broker, h->d);
}

static bool expired(const struct held *h)
{
	return h->expires > 0 && cw_wall() >= h->expires;
}

/* Celery's Request.revoked() for an expired task: REVOKED, acked. */
static void revoke_expired(struct worker *w, struct held *h)
{
	cw_log(CW_LOG_WARNING, "consumer", "Discarding revoked task: %s[%s] (expired)", h->req.task,
	       h->req.id);
	store_exc(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions", "expired", NULL);
	ack(w, h);
	release(w, h);
}

static void on_soft_limit(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	(void)loop;
	h->soft_timer = 0;
	cw_log(CW_LOG_WARNING, "pool", "Soft time limit (%gs) exceeded for %s[%s]", h->soft,
	       h->req.task, h->req.id);
	cw_pool_signal(h->w->pool, h->slot, SIGUSR1);
}

static void on_hard_limit(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	(void)loop;
	h->hard_timer = 0;
	cw_log(CW_LOG_ERROR, "pool", "Hard time limit (%gs) exceeded for %s[%s]", h->hard,
	       h->req.task, h->req.id);
	cw_pool_kill_slot(h->w->pool, h->slot, CW_LOST_TIMEOUT);
}

static void dispatch(struct worker *w)
{
	while (w->nready && w->phase != COLD) {
		int slot = cw_pool_idle_slot(w->pool);
		if (slot < 0)
			return;
		struct held *h = w->ready[0];
		remove_at(w->ready, &w->nready, 0);
		if (expired(h)) {
			revoke_expired(w, h);
			update_credit(w);
			continue;
		}
		/* early ack, as Celery's default: just before the task starts */
		if (!h->acks_late)
			ack(w, h);
		h->slot = slot;
		w->running[slot] = h;
		int rc = cw_pool_submit(w->pool, slot, h->d->queue, h->d->raw, h->d->raw_len);
		if (rc != CW_OK) {
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: cannot hand to the pool: %s",
			       h->req.task, h->req.id, cw_strerror(rc));
			store_exc(w, h, CW_STATE_FAILURE, "WorkerLostError", "billiard.exceptions",
				  "could not start the task", NULL);
			if (h->acks_late)
				ack(w, h);
			w->running[slot] = NULL;
			release(w, h);
			continue;
		}
		/* solo: the task already ran and on_done released it */
		if (w->running[slot] != h)
			continue;
		if (h->soft > 0 && (!h->hard || h->soft < h->hard))
			h->soft_timer = cw_loop_timer(w->loop, h->soft, on_soft_limit, h);
		if (h->hard > 0)
			h->hard_timer = cw_loop_timer(w->loop, h->hard, on_hard_limit, h);
	}
}

static void on_eta(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	struct worker *w = h->w;
	(void)loop;
	h->eta_timer = 0;
	for (size_t i = 0; i < w->neta; i++)
		if (w->eta[i] == h) {
			remove_at(w->eta, &w->neta, i);
			break;
		}
	h->counted = true;
	w->held++;
	if (!push(&w->ready, &w->nready, &w->capready, h)) {
		w->bops->restore(w->broker, h->d);
		release(w, h);
		return;
	}
	dispatch(w);
	update_credit(w);
}

/* Messages Celery's consumer drops: logged, removed from the queue for good. */
static void drop(struct worker *w, struct cw_delivery *d)
{
	w->bops->reject(w->broker, d, false);
	cw_delivery_free(d);
}

/* Resolve per-message settings: message header > [task:NAME] section > global. */
static void settle(struct worker *w, struct held *h)
{
	const struct cw_config *c = w->cfg;
	const struct cw_task_conf *t = cw_config_task(c, h->req.task);

	h->acks_late = t && t->acks_late >= 0 ? t->acks_late : c->acks_late;
	h->reject_on_worker_lost = t && t->reject_on_worker_lost >= 0 ? t->reject_on_worker_lost
								       : c->reject_on_worker_lost;
	h->hard = h->req.time_limit > 0 ? h->req.time_limit
		  : t && t->time_limit >= 0 ? t->time_limit : c->time_limit;
	h->soft = h->req.soft_time_limit > 0 ? h->req.soft_time_limit
		  : t && t->soft_time_limit >= 0 ? t->soft_time_limit : c->soft_time_limit;
	if (h->req.eta && cw_proto_parse_iso8601(h->req.eta, h->req.utc, &h->eta) != CW_OK)
		h->eta = 0;
	if (h->req.expires && cw_proto_parse_iso8601(h->req.expires, h->req.utc, &h->expires) != CW_OK)
		h->expires = 0;
}

static void on_delivery(void *arg, struct cw_delivery *d)
{
	struct worker *w = arg;
	struct cw_error err = {0};
	char *name = NULL, *id = NULL;

	if (w->phase != RUNNING) {
		/* arrived while shutting down: give it straight back */
		w->bops->restore(w->broker, d);
		cw_delivery_free(d);
		return;
	}
	int rc = cw_proto_peek_task(&d->env, &w->limits, &name, &id, &err);
	if (rc == CW_EFORMAT) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message. Wrong destination?!? (queue %s, "
		       "content-type %s): %s", d->queue, d->env.content_type, err.msg);
		drop(w, d);
		goto out;
	}
	if (rc != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Can't decode message body: %s (type:%s encoding:%s, queue %s); message dropped",
		       err.msg, d->env.content_type, d->env.content_encoding, d->queue);
		drop(w, d);
		goto out;
	}
	if (!cw_registry_find(w->reg, name)) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received unregistered task of type '%s'. The message has been ignored and "
		       "discarded. (id %s, queue %s)", name, id, d->queue);
		struct cw_result_meta m = {.state = CW_STATE_FAILURE, .task_id = id,
					   .exc_type = "NotRegistered", .exc_module = "celery.exceptions",
					   .exc_message = name};
		if (*id)
			cw_exec_store(&w->env, NULL, d->queue, &m);
		drop(w, d);
		goto out;
	}
	struct held *h = calloc(1, sizeof(*h));
	if (!h) {
		w->bops->restore(w->broker, d);
		cw_delivery_free(d);
		goto out;
	}
	h->w = w;
	h->d = d;
	rc = cw_proto_decode_request(&d->env, &w->limits, &h->req, &err);
	if (rc != CW_OK) {
		if (rc == CW_EDECODE)
			cw_log(CW_LOG_ERROR, "consumer",
			       "Can't decode message body: %s (type:%s encoding:%s) task %s[%s]; message "
			       "dropped", err.msg, d->env.content_type, d->env.content_encoding, name, id);
		else
			cw_log(CW_LOG_ERROR, "consumer",
			       "Received invalid task message: %s (task %s[%s], content-type %s); message "
			       "rejected", err.msg, name, id, d->env.content_type);
		h->d = NULL;
		release(w, h);
		drop(w, d);
		goto out;
	}
	settle(w, h);
	if (w->cfg->max_redeliveries > 0 && d->deliveries > w->cfg->max_redeliveries) {
		char msg[200];
		snprintf(msg, sizeof(msg), "message delivered %ld times, over max_redeliveries (%ld): "
			 "it keeps killing its worker", d->deliveries, w->cfg->max_redeliveries);
		cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: %s", name, id, msg);
		store_exc(w, h, CW_STATE_FAILURE, "RedeliveryLimitExceeded", "cworker.exceptions", msg,
			  NULL);
		ack(w, h);
		release(w, h);
		goto out;
	}
	cw_log(CW_LOG_INFO, "consumer", "Task %s[%s] received", name, id);
	if (expired(h)) {
		revoke_expired(w, h);
		goto out;
	}
	if (h->eta > cw_wall()) {
		/* held in the master until due, outside the prefetch limit (as Celery) */
		if (!push(&w->eta, &w->neta, &w->capeta, h)) {
			w->bops->restore(w->broker, d);
			h->d = NULL;
			release(w, h);
			cw_delivery_free(d);
			goto out;
		}
		h->eta_timer = cw_loop_timer(w->loop, h->eta - cw_wall(), on_eta, h);
		goto out;
	}
	h->counted = true;
	w->held++;
	if (!push(&w->ready, &w->nready, &w->capready, h)) {
		w->bops->restore(w->broker, d);
		h->d = NULL;
		release(w, h);
		cw_delivery_free(d);
		goto out;
	}
	dispatch(w);
out:
	free(name);
	free(id);
	update_credit(w);
}

static void on_state(void *arg, bool up)
{
	struct worker *w = arg;
	if (up && !w->announced) {
		w->announced = true;
		cw_log(CW_LOG_INFO, "worker", "%s ready.", w->cfg->hostname);
	}
	if (up)
		update_credit(w);
}

static void on_done(void *arg, int slot, const struct cw_outcome *o, const char *retry_msg)
{
	struct worker *w = arg;
	struct held *h = w->running[slot];

	if (!h)
		return;
	w->running[slot] = NULL;
	if (o->state == CW_STATE_SUCCESS) {
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] succeeded in %.6fs: %s", h->req.task, h->req.id,
		       o->runtime, o->result_repr);
	} else if (o->state == CW_STATE_RETRY && retry_msg && o->retry_len) {
		/* Task.retry: the same task id again, retries + 1, due in retry_in seconds */
		struct cw_envelope e = {0};
		struct cw_error err = {0};
		if (cw_proto_decode_envelope(retry_msg, o->retry_len, &w->limits, &e, &err) == CW_OK &&
		    e.delivery_tag) {
			w->bops->publish(w->broker, h->d->queue, h->d->env.priority, e.delivery_tag,
					 retry_msg, o->retry_len);
			cw_log(CW_LOG_INFO, "task", "Task %s[%s] retry: %s", h->req.task, h->req.id,
			       o->exc_message);
		} else {
			cw_log(CW_LOG_ERROR, "task", "Task %s[%s]: bad retry message: %s", h->req.task,
			       h->req.id, err.msg);
		}
		cw_envelope_clear(&e);
	} else
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] raised unexpected: %s(%s)", h->req.task,
		       h->req.id, o->exc_type, o->exc_message);
	if (h->acks_late)
		ack(w, h);
	release(w, h);
	update_credit(w);
}

static void on_lost(void *arg, int slot, pid_t pid, int st, enum cw_lost_reason why)
{
	struct worker *w = arg;
	struct held *h = w->running[slot];
	char msg[200];

	if (!h)
		return;
	w->running[slot] = NULL;
	if (why == CW_LOST_TIMEOUT) {
		json_t *args = json_pack("[f]", h->hard);
		store_exc(w, h, CW_STATE_FAILURE, "TimeLimitExceeded", "billiard.exceptions", NULL, args);
		json_decref(args);
		ack(w, h); /* task_acks_on_failure_or_timeout */
	} else if (why == CW_LOST_MEMORY) {
		snprintf(msg, sizeof(msg), "child RSS passed the limit of %ld KiB",
			 w->cfg->child_memory_limit);
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] killed: %s", h->req.task, h->req.id, msg);
		store_exc(w, h, CW_STATE_FAILURE, "MemoryLimitExceeded", "cworker.exceptions", msg, NULL);
		ack(w, h);
	} else if (h->acks_late && h->reject_on_worker_lost) {
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s]: worker pid %d lost; requeued "
		       "(reject_on_worker_lost)", h->req.task, h->req.id, (int)pid);
		w->bops->reject(w->broker, h->d, true);
	} else {
		if (WIFSIGNALED(st))
			snprintf(msg, sizeof(msg), "Worker exited prematurely: signal %d (%s) Job: %s.",
				 WTERMSIG(st), sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?",
				 h->req.id);
		else
			snprintf(msg, sizeof(msg), "Worker exited prematurely: exitcode %d Job: %s.",
				 WEXITSTATUS(st), h->req.id);
		cw_log(CW_LOG_ERROR, "task", "Task handler raised error: WorkerLostError('%s') (task %s)",
		       msg, h->req.task);
		store_exc(w, h, CW_STATE_FAILURE, "WorkerLostError", "billiard.exceptions", msg, NULL);
		if (h->acks_late)
			ack(w, h);
	}
	release(w, h);
	update_credit(w);
}

static void on_idle(void *arg)
{
	struct worker *w = arg;
	dispatch(w);
	update_credit(w);
}

/*
 * Keep the broker's record of every held message fresh (a quarter of the
 * visibility timeout apart), so no scan hands it to another worker while
 * this one is alive and holding it.
 */
static void touch_tick(struct cw_loop *loop, void *arg)
{
	struct worker *w = arg;
	if (w->bops->connected(w->broker)) {
		for (size_t i = 0; i < w->nready; i++)
			w->bops->touch(w->broker, w->ready[i]->d);
		for (size_t i = 0; i < w->neta; i++)
			w->bops->touch(w->broker, w->eta[i]->d);
		for (int i = 0; i < w->nslots; i++)
			if (w->running[i])
				w->bops->touch(w->broker, w->running[i]->d);
	}
	cw_loop_timer(loop, touch_interval(w->cfg), touch_tick, w);
}

/* With --child-memory-limit: look at running children's RSS ten times a second. */
static void memory_tick(struct cw_loop *loop, void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < w->nslots; i++)
		if (w->running[i] && cw_pool_rss_kib(w->pool, i) > w->cfg->child_memory_limit)
			cw_pool_kill_slot(w->pool, i, CW_LOST_MEMORY);
	cw_loop_timer(loop, 0.1, memory_tick, w);
}

static void begin_shutdown(struct worker *w, bool cold)
{
	if (cold) {
		if (w->phase != COLD)
			cw_log(CW_LOG_WARNING, "worker", "cold shutdown (MainProcess)");
		w->phase = COLD;
		w->exit_code = 1;
		cw_pool_kill(w->pool);
	} else if (w->phase == RUNNING) {
		cw_log(CW_LOG_WARNING, "worker", "worker: Warm shutdown (MainProcess)");
		w->phase = WARM;
	} else {
		return;
	}
	update_credit(w);
	/* reserved and ETA-held messages go back to the head of their queues */
	for (size_t i = 0; i < w->nready; i++) {
		w->bops->restore(w->broker, w->ready[i]->d);
		release(w, w->ready[i]);
	}
	w->nready = 0;
	for (size_t i = 0; i < w->neta; i++) {
		w->bops->restore(w->broker, w->eta[i]->d);
		release(w, w->eta[i]);
	}
	w->neta = 0;
}

static void on_signal(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct worker *w = arg;
	struct signalfd_siginfo si;
	(void)loop;
	(void)ev;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			cw_pool_reap(w->pool);
			break;
		case SIGTERM:
			begin_shutdown(w, false);
			break;
		case SIGINT:
			/* like Celery: the second Ctrl-C turns warm into cold */
			begin_shutdown(w, w->phase != RUNNING);
			break;
		case SIGQUIT:
			begin_shutdown(w, true);
			break;
		default:
			break;
		}
	}
}

/* Checked every 50 ms: leave when shutting down and nothing is in flight. */
static void shutdown_tick(struct cw_loop *loop, void *arg)
{
	struct worker *w = arg;
	if (w->phase == RUNNING) {
		cw_loop_timer(loop, 0.05, shutdown_tick, w);
		return;
	}
	if (w->shutdown_deadline == 0)
		w->shutdown_deadline = cw_now() + (w->phase == COLD ? 2.0 : 1e9);
	bool tasks = w->phase == WARM && cw_pool_busy(w->pool) > 0;
	bool broker_pending = w->bops->busy(w->broker) && w->bops->connected(w->broker);
	if (!tasks && (!broker_pending || cw_now() > w->shutdown_deadline)) {
		cw_loop_stop(loop);
		return;
	}
	if (!tasks && w->shutdown_deadline > cw_now() + 10)
		w->shutdown_deadline = cw_now() + 10; /* give the broker 10 s to take acks/restores */
	cw_loop_timer(loop, 0.05, shutdown_tick, w);
}

static int setup_signals(struct worker *w)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	w->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (w->sigfd < 0)
		return -1;
	return cw_loop_watch(w->loop, w->sigfd, CW_READ, on_signal, w);
}

int cw_worker_run(const struct cw_config *cfg)
{
	struct worker w = {.cfg = cfg, .sigfd = -1, .exit_code = 0};
	struct cw_error err = {0};
	char redacted[512];
	int rc = 1;

	w.limits = (struct cw_proto_limits)CW_PROTO_LIMITS_DEFAULT;
	w.loop = cw_loop_new();
	w.reg = cw_registry_new();
	if (!w.loop || !w.reg)
		goto out;
	if (cw_tasks_register_builtin(w.reg, cfg->diagnostic_tasks) != CW_OK)
		goto out;
	struct cw_backend_opts bo = {.url = cfg->result_backend, .expires = cfg->result_expires};
	w.backend = cw_backend_open(&bo, &err);
	if (!w.backend && err.msg[0]) {
		cw_log(CW_LOG_ERROR, "worker", "result backend: %s", err.msg);
		goto out;
	}
	w.env = (struct cw_exec_env){.reg = w.reg, .backend = w.backend, .hostname = cfg->hostname,
				     .result_extended = cfg->result_extended, .limits = w.limits};
	if (setup_signals(&w) < 0) {
		cw_log(CW_LOG_ERROR, "worker", "signal setup failed: %s", strerror(errno));
		goto out;
	}
	w.nslots = cfg->pool_kind == CW_POOL_SOLO ? 1 : (int)cfg->concurrency;
	w.limit = w.nslots * (int)cfg->prefetch_multiplier;
	w.running = calloc((size_t)w.nslots, sizeof(*w.running));
	struct cw_pool_handler ph = {.on_done = on_done, .on_lost = on_lost, .on_idle = on_idle,
				     .arg = &w};
	w.pool = cw_pool_new(w.loop, cfg->pool_kind == CW_POOL_SOLO, w.nslots, &w.env, &ph);
	if (!w.running || !w.pool)
		goto out;
	cw_pool_set_recycling(w.pool, cfg->max_tasks_per_child, cfg->max_memory_per_child);
	if (cw_pool_start(w.pool) != CW_OK)
		goto out;

	cw_url_redact(cfg->broker_url, redacted, sizeof(redacted));
	cw_log(CW_LOG_INFO, "worker", "%s: broker %s, %s pool of %d, prefetch %d, queues %s",
	       cfg->hostname, redacted, cfg->pool, w.nslots, w.limit, cfg->queues);
	w.bops = cw_broker_lookup(cfg->broker_url);
	struct cw_broker_opts opts = {.url = cfg->broker_url, .queues = cfg->queue_list,
				      .nqueues = cfg->nqueues,
				      .visibility_timeout = cfg->visibility_timeout, .limits = w.limits};
	struct cw_broker_handler bh = {.on_delivery = on_delivery, .on_state = on_state, .arg = &w};
	w.broker = w.bops ? w.bops->open(w.loop, &opts, &bh, &err) : NULL;
	if (!w.broker) {
		cw_log(CW_LOG_ERROR, "worker", "broker %s: %s", redacted, err.msg);
		goto out;
	}
	w.broker->ops = w.bops;
	cw_loop_timer(w.loop, 0.05, shutdown_tick, &w);
	cw_loop_timer(w.loop, touch_interval(cfg), touch_tick, &w);
	if (cfg->child_memory_limit > 0 && cfg->pool_kind == CW_POOL_PREFORK)
		cw_loop_timer(w.loop, 0.1, memory_tick, &w);
	if (cw_loop_run(w.loop) < 0)
		goto out;
	rc = w.exit_code;
out:
	if (w.pool) {
		cw_pool_stop(w.pool, 5.0);
		cw_pool_free(w.pool);
	}
	for (size_t i = 0; i < w.nready; i++)
		release(&w, w.ready[i]);
	for (size_t i = 0; i < w.neta; i++)
		release(&w, w.eta[i]);
	for (int i = 0; w.running && i < w.nslots; i++)
		release(&w, w.running[i]);
	free(w.ready);
	free(w.eta);
	free(w.running);
	if (w.broker)
		w.bops->close(w.broker);
	cw_backend_close(w.backend);
	cw_registry_free(w.reg);
	if (w.sigfd >= 0)
		close(w.sigfd);
	cw_loop_free(w.loop);
	if (rc == 0)
		cw_log(CW_LOG_INFO, "worker", "%s stopped.", cfg->hostname);
	return rc;
}
