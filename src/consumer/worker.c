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

/* A message the worker holds: reserved (in `ready`) or running (in a slot). */
struct held {
	struct cw_delivery *d;
	char *id, *name;
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

	struct held *ready;      /* FIFO of reserved, unstarted messages */
	size_t nready, capready;
	struct held *running;    /* indexed by pool slot */
	int limit;               /* concurrency x prefetch multiplier */
	int held;                /* reserved + running */

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

static void release(struct worker *w, struct held *h)
{
	cw_delivery_free(h->d);
	free(h->id);
	free(h->name);
	*h = (struct held){0};
	w->held--;
}

static void update_credit(struct worker *w)
{
	int credit = w->phase == RUNNING ? w->limit - w->held : 0;
	w->bops->set_credit(w->broker, credit > 0 ? credit : 0);
}

static void dispatch(struct worker *w)
{
	while (w->nready && w->phase != COLD) {
		int slot = cw_pool_idle_slot(w->pool);
		if (slot < 0)
			return;
		struct held h = w->ready[0];
		memmove(w->ready, w->ready + 1, (w->nready - 1) * sizeof(*w->ready));
		w->nready--;
		/* early ack, as Celery's default: just before the task starts */
		w->bops->ack(w->broker, h.d);
		w->running[slot] = h;
		int rc = cw_pool_submit(w->pool, slot, h.d->queue, h.d->raw, h.d->raw_len);
		if (rc != CW_OK) {
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: cannot hand to the pool: %s", h.name,
			       h.id, cw_strerror(rc));
			cw_exec_store_failure(w->backend, h.id, "WorkerLostError", "billiard.exceptions",
					      "could not start the task", NULL);
			release(w, &w->running[slot]);
		}
	}
}

static void push_ready(struct worker *w, struct held h)
{
	if (w->nready == w->capready) {
		size_t cap = w->capready ? w->capready * 2 : 16;
		struct held *r = realloc(w->ready, cap * sizeof(*r));
		if (!r) {
			cw_log(CW_LOG_ERROR, "consumer", "out of memory: giving %s back", h.id);
			w->bops->restore(w->broker, h.d);
			release(w, &h);
			return;
		}
		w->ready = r;
		w->capready = cap;
	}
	w->ready[w->nready++] = h;
}

/* Messages Celery's consumer drops: logged, removed from the queue for good. */
static void drop(struct worker *w, struct held *h)
{
	w->bops->reject(w->broker, h->d, false);
	release(w, h);
	update_credit(w);
}

static void on_delivery(void *arg, struct cw_delivery *d)
{
	struct worker *w = arg;
	struct held h = {.d = d};
	struct cw_error err = {0};
	struct cw_request req = {0};

	w->held++;
	if (w->phase != RUNNING) {
		/* arrived while shutting down: give it straight back */
		w->bops->restore(w->broker, d);
		release(w, &h);
		return;
	}
	int rc = cw_proto_peek_task(&d->env, &w->limits, &h.name, &h.id, &err);
	if (rc == CW_EFORMAT) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message. Wrong destination?!? (queue %s, "
		       "content-type %s): %s", d->queue, d->env.content_type, err.msg);
		drop(w, &h);
		return;
	}
	if (rc != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Can't decode message body: %s (type:%s encoding:%s, queue %s); message dropped",
		       err.msg, d->env.content_type, d->env.content_encoding, d->queue);
		drop(w, &h);
		return;
	}
	if (!cw_registry_find(w->reg, h.name)) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received unregistered task of type '%s'. The message has been ignored and "
		       "discarded. (id %s, queue %s)", h.name, h.id, d->queue);
		cw_exec_store_failure(w->backend, h.id, "NotRegistered", "celery.exceptions", h.name,
				      NULL);
		drop(w, &h);
		return;
	}
	rc = cw_proto_decode_request(&d->env, &w->limits, &req, &err);
	cw_request_clear(&req);
	if (rc != CW_OK) {
		if (rc == CW_EDECODE)
			cw_log(CW_LOG_ERROR, "consumer",
			       "Can't decode message body: %s (type:%s encoding:%s) task %s[%s]; message "
			       "dropped", err.msg, d->env.content_type, d->env.content_encoding, h.name, h.id);
		else
			cw_log(CW_LOG_ERROR, "consumer",
			       "Received invalid task message: %s (task %s[%s], content-type %s); message "
			       "rejected", err.msg, h.name, h.id, d->env.content_type);
		drop(w, &h);
		return;
	}
	cw_log(CW_LOG_INFO, "consumer", "Task %s[%s] received", h.name, h.id);
	push_ready(w, h);
	dispatch(w);
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

static void on_done(void *arg, int slot, const struct cw_outcome *o)
{
	struct worker *w = arg;
	struct held *h = &w->running[slot];

	if (!h->d)
		return;
	if (o->state == CW_STATE_SUCCESS)
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] succeeded in %.6fs: %s", h->name, h->id,
		       o->runtime, o->result_repr);
	else
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] raised unexpected: %s(%s)", h->name, h->id,
		       o->exc_type, o->exc_message);
	release(w, h);
	update_credit(w);
}

static void on_lost(void *arg, int slot, pid_t pid, int st)
{
	struct worker *w = arg;
	struct held *h = &w->running[slot];
	char msg[160];

	if (!h->d)
		return;
	if (WIFSIGNALED(st))
		snprintf(msg, sizeof(msg), "Worker exited prematurely: signal %d (%s) Job: %s.",
			 WTERMSIG(st), sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?", h->id);
	else
		snprintf(msg, sizeof(msg), "Worker exited prematurely: exitcode %d Job: %s.",
			 WEXITSTATUS(st), h->id);
	cw_log(CW_LOG_ERROR, "task", "Task handler raised error: WorkerLostError('%s') (task %s, pid %d)",
	       msg, h->name, (int)pid);
	cw_exec_store_failure(w->backend, h->id, "WorkerLostError", "billiard.exceptions", msg, NULL);
	release(w, h);
	update_credit(w);
}

static void on_idle(void *arg)
{
	struct worker *w = arg;
	dispatch(w);
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
			w->bops->touch(w->broker, w->ready[i].d);
		for (int i = 0; i < cw_pool_size(w->pool); i++)
			if (w->running[i].d)
				w->bops->touch(w->broker, w->running[i].d);
	}
	cw_loop_timer(loop, touch_interval(w->cfg), touch_tick, w);
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
	/* reserved but unstarted messages go back to the head of their queues */
	for (size_t i = 0; i < w->nready; i++) {
		w->bops->restore(w->broker, w->ready[i].d);
		release(w, &w->ready[i]);
	}
	w->nready = 0;
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

/* Checked every 50 ms while shutting down: leave when nothing is in flight. */
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
	int rc = 1, n = 0;

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
	n = cfg->pool_kind == CW_POOL_SOLO ? 1 : (int)cfg->concurrency;
	w.limit = n * (int)cfg->prefetch_multiplier;
	w.running = calloc((size_t)n, sizeof(*w.running));
	struct cw_pool_handler ph = {.on_done = on_done, .on_lost = on_lost, .on_idle = on_idle,
				     .arg = &w};
	w.pool = cw_pool_new(w.loop, cfg->pool_kind == CW_POOL_SOLO, n, &w.env, &ph);
	if (!w.running || !w.pool || cw_pool_start(w.pool) != CW_OK)
		goto out;

	cw_url_redact(cfg->broker_url, redacted, sizeof(redacted));
	cw_log(CW_LOG_INFO, "worker", "%s: broker %s, %s pool of %d, prefetch %d, queues %s",
	       cfg->hostname, redacted, cfg->pool, n, w.limit, cfg->queues);
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
	if (cw_loop_run(w.loop) < 0)
		goto out;
	rc = w.exit_code;
out:
	if (w.pool) {
		cw_pool_stop(w.pool, 5.0);
		cw_pool_free(w.pool);
	}
	for (size_t i = 0; i < w.nready; i++)
		release(&w, &w.ready[i]);
	for (int i = 0; w.running && i < n; i++)
		if (w.running[i].d)
			release(&w, &w.running[i]);
	free(w.ready);
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
