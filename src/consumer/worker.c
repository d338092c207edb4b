#include "consumer/worker.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "broker/broker.h"
#include "consumer/revoked.h"
#include "protocol/control.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "tasks/alias.h"
#include "tasks/canvas.h"
#include "tasks/exec_cancel.h"
#include "tasks/exec.h"
#include "tasks/registry.h"
#include "util/log.h"
#include "util/sdnotify.h"
#include "util/url.h"
#include "consumer/worker_int.h"
#include "consumer/monitor.h"
#include "cw_build.h"
#ifdef CW_HAVE_DOCCONV
#include "docconv/tasks.h"
#endif

static void begin_shutdown(struct worker *w, bool cold);

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

/* TLS for the broker: broker_use_ssl, or any of its keys set. */
static bool broker_ssl(const struct cw_config *cfg)
{
	return cfg->broker_ssl || cfg->broker_ssl_ca || cfg->broker_ssl_cert || cfg->broker_ssl_key;
}

static void update_credit(struct worker *w)
{
	int credit = w->phase == RUNNING ? w->limit - w->held : 0;
	w->bops->set_credit(w->broker, credit > 0 ? credit : 0);
	if (w->bops->set_prefetch) {
		/*
		 * Celery's basic.qos: concurrency x multiplier unacknowledged
		 * messages, raised by the ETA and rate-limited messages held.
		 */
		size_t extra = w->neta;
		for (int b = 0; b < w->nbuckets; b++)
			extra += w->buckets[b]->n;
		w->bops->set_prefetch(w->broker, w->phase == RUNNING ? w->limit + (int)extra : 0);
	}
}

/* Publish the messages a task run asked for (retry, callbacks, chain, chord body). */
static void publish_outbox(struct worker *w, const struct held *h, const char *buf, size_t len)
{
	struct cw_outmsg m;
	size_t off = 0;

	while (cw_outbox_next(buf, len, &off, &m)) {
		char *queue = strndup(m.queue, m.queue_len), *tag = strndup(m.tag, m.tag_len);
		if (queue && tag)
			w->bops->publish(w->broker, queue, m.priority, tag, m.env, m.env_len);
		else
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: out of memory publishing a "
			       "follow-up message", h->req.task, h->req.id);
		free(queue);
		free(tag);
	}
	if (off != len)
		cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: malformed follow-up messages from the "
		       "pool", h->req.task, h->req.id);
}

/*
 * Store a state the master decided (revoked, lost, timed out, ...), then
 * what Celery does after it: chord part, errbacks.
 */
static void store_exc(struct worker *w, struct held *h, enum cw_state state, const char *type,
		      const char *module, const char *msg, json_t *args)
{
	struct cw_result_meta m = {.state = state, .exc_type = type, .exc_module = module,
				   .exc_message = msg, .exc_args = args};
	struct cw_outbox ob = {0};
	cw_exec_store(&w->env, &h->req, h->d->queue, &m);
	cw_canvas_after(&w->env, &h->req, &m, NULL, &ob);
	publish_outbox(w, h, ob.buf, ob.len);
	cw_outbox_free(&ob);
}

static void ack(struct worker *w, struct held *h)
{
	w->bops->ack(w->broker, h->d);
}

/* Send a task-* event about h (uuid added). */
static void task_event(struct worker *w, const struct held *h, const char *type, json_t *fields)
{
	if (!cw_events_task_enabled(w->events)) {
		json_decref(fields);
		return;
	}
	json_t *f = fields ? fields : json_object();
	json_object_set_new(f, "uuid", json_string(h->req.id));
	cw_events_send(w->events, type, f);
}

static char *traceback_text(const struct held *h, const char *type, const char *msg)
{
	char *tb = NULL;
	if (asprintf(&tb, "Traceback (most recent call last):\n  File \"cworker\", task %s, in %s\n"
		     "%s: %s\n", h->req.task, h->req.id, type, msg ? msg : "") < 0)
		tb = NULL;
	return tb;
}

/* task-failed / task-retried with Celery's exception repr and a traceback */
static void exc_event(struct worker *w, const struct held *h, const char *type,
		      const char *exc_type, const char *msg, json_t *args)
{
	if (!cw_events_task_enabled(w->events))
		return;
	json_t *one = json_is_array(args) ? NULL : json_string(msg ? msg : "");
	char *e = cw_proto_exc_repr(exc_type, one ? one : args, 1000);
	char *tb = traceback_text(h, exc_type, msg);
	json_decref(one);
	task_event(w, h, type, json_pack("{s:s,s:s}", "exception", e ? e : exc_type, "traceback",
					 tb ? tb : ""));
	free(e);
	free(tb);
}

static void revoked_event(struct worker *w, const struct held *h, bool terminated, int signum,
			  bool expired)
{
	task_event(w, h, "task-revoked",
		   json_pack("{s:b,s:o,s:b}", "terminated", terminated, "signum",
			     signum ? json_integer(signum) : json_null(), "expired", expired));
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
	cw_metrics_task(w->metrics, h->req.task, CW_M_REVOKED, 1);
	revoked_event(w, h, false, 0, true);
	ack(w, h);
	release(w, h);
}

static bool is_revoked(struct worker *w, const struct held *h)
{
	return cw_revoked_has(w->revoked, h->req.id, cw_wall());
}

/* Request.revoked(): a revoked id is skipped, REVOKED TaskRevokedError('revoked'), acked. */
static void revoke_task(struct worker *w, struct held *h)
{
	cw_log(CW_LOG_INFO, "consumer", "Discarding revoked task: %s[%s]", h->req.task, h->req.id);
	store_exc(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions", "revoked", NULL);
	cw_metrics_task(w->metrics, h->req.task, CW_M_REVOKED, 1);
	revoked_event(w, h, false, 0, false);
	ack(w, h);
	release(w, h);
}

static void on_soft_limit(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	(void)loop;
	h->soft_timer = 0;
	h->soft_fired = true;
	cw_metrics_task(h->w->metrics, h->req.task, CW_M_SOFT_LIMIT, 1);
	cw_log(CW_LOG_WARNING, "pool", "Soft time limit (%gs) exceeded for %s[%s]", h->soft,
	       h->req.task, h->req.id);
	cw_pool_signal(h->w->pool, h->slot, SIGUSR1);
}

static void on_hard_limit(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	(void)loop;
	h->hard_timer = 0;
	cw_metrics_task(h->w->metrics, h->req.task, CW_M_HARD_LIMIT, 1);
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
		if (is_revoked(w, h)) {
			revoke_task(w, h);
			update_credit(w);
			continue;
		}
		/* early ack, as Celery's default: just before the task starts */
		if (!h->acks_late)
			ack(w, h);
		h->slot = slot;
		h->time_start = cw_wall();
		w->running[slot] = h;
		/* task_accepted: counted in stats "total" and heartbeats' "processed" */
		json_t *n = json_object_get(w->totals, h->req.task);
		json_object_set_new(w->totals, h->req.task,
				    json_integer(json_is_integer(n) ? json_integer_value(n) + 1 : 1));
		w->processed++;
		cw_metrics_task(w->metrics, h->req.task, CW_M_STARTED, 1);
		task_event(w, h, "task-started", NULL);
		int rc = cw_pool_submit(w->pool, slot, h->d->queue, h->d->raw, h->d->raw_len);
		if (rc != CW_OK) {
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: cannot hand to the pool: %s",
			       h->req.task, h->req.id, cw_strerror(rc));
			store_exc(w, h, CW_STATE_FAILURE, "WorkerLostError", "billiard.exceptions",
				  "could not start the task", NULL);
			cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
			if (h->acks_late)
				ack(w, h);
			w->running[slot] = NULL;
			release(w, h);
			continue;
		}
		if (h->soft > 0 && (!h->hard || h->soft < h->hard))
			h->soft_timer = cw_loop_timer(w->loop, h->soft, on_soft_limit, h);
		if (h->hard > 0)
			h->hard_timer = cw_loop_timer(w->loop, h->hard, on_hard_limit, h);
	}
}

static struct bucket *bucket_for(struct worker *w, const char *task)
{
	for (int i = 0; i < w->nbuckets; i++)
		if (w->buckets[i]->rate > 0 && !strcmp(w->buckets[i]->task, task))
			return w->buckets[i];
	return NULL;
}

static double bucket_fill(struct bucket *b, double now)
{
	if (b->tokens < 1) {
		b->tokens += b->rate * (now - b->stamp);
		if (b->tokens > 1)
			b->tokens = 1;
	}
	b->stamp = now;
	return b->tokens;
}

static bool bucket_take(struct bucket *b, double now)
{
	if (bucket_fill(b, now) < 1)
		return false;
	b->tokens -= 1;
	return true;
}

static void on_bucket(struct cw_loop *loop, void *arg);

static void bucket_arm(struct worker *w, struct bucket *b)
{
	if (!b->n || b->timer || w->phase != RUNNING)
		return;
	double wait = (1 - bucket_fill(b, cw_now())) / b->rate;
	b->timer = cw_loop_timer(w->loop, wait > 0 ? wait : 0, on_bucket, b);
}

/* Into the ready FIFO (counted against the prefetch limit). */
static bool make_ready(struct worker *w, struct held *h)
{
	h->counted = true;
	w->held++;
	return push(&w->ready, &w->nready, &w->capready, h);
}

/*
 * A message that is due: ready to run, unless its task's rate limit makes it
 * wait for a token.  false on ENOMEM (the caller gives the message back).
 */
static bool admit(struct worker *w, struct held *h)
{
	struct bucket *b = bucket_for(w, h->req.task);

	if (b && (b->n || !bucket_take(b, cw_now()))) {
		if (!push(&b->q, &b->n, &b->cap, h))
			return false;
		bucket_arm(w, b);
		return true;
	}
	return make_ready(w, h);
}

static void on_bucket(struct cw_loop *loop, void *arg)
{
	struct bucket *b = arg;
	struct worker *w = b->w;
	(void)loop;
	b->timer = 0;
	while (b->n && bucket_take(b, cw_now())) {
		struct held *h = b->q[0];
		remove_at(b->q, &b->n, 0);
		if (!make_ready(w, h)) {
			w->bops->restore(w->broker, h->d);
			release(w, h);
		}
	}
	bucket_arm(w, b);
	dispatch(w);
	update_credit(w);
}

double cw_worker_rate(const struct worker *w, const char *task)
{
	for (int i = 0; i < w->nbuckets; i++)
		if (!strcmp(w->buckets[i]->task, task))
			return w->buckets[i]->rate;
	return 0;
}

/* Set (rate > 0) or lift (rate 0) a task's rate limit; waiting messages follow the new rate. */
int cw_worker_set_rate(struct worker *w, const char *task, double rate)
{
	struct bucket *b = NULL;
	for (int i = 0; i < w->nbuckets; i++)
		if (!strcmp(w->buckets[i]->task, task))
			b = w->buckets[i];
	if (!b) {
		if (rate <= 0)
			return CW_OK;
		struct bucket **arr = realloc(w->buckets, (size_t)(w->nbuckets + 1) * sizeof(*arr));
		if (!arr)
			return CW_ENOMEM;
		w->buckets = arr;
		b = calloc(1, sizeof(*b));
		if (!b || !(b->task = strdup(task))) {
			free(b);
			return CW_ENOMEM;
		}
		*b = (struct bucket){.task = b->task, .tokens = 1, .stamp = cw_now(), .w = w};
		w->buckets[w->nbuckets++] = b;
	}
	b->rate = rate > 0 ? rate : 0;
	if (b->timer)
		cw_loop_timer_cancel(w->loop, b->timer);
	b->timer = 0;
	if (b->rate == 0) {
		/* no limit any more: everything waiting is due now */
		while (b->n) {
			struct held *h = b->q[0];
			remove_at(b->q, &b->n, 0);
			if (!make_ready(w, h)) {
				w->bops->restore(w->broker, h->d);
				release(w, h);
			}
		}
		dispatch(w);
		update_credit(w);
	} else {
		bucket_arm(w, b);
	}
	return CW_OK;
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
	if (!admit(w, h)) {
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
	/* the time_limit control command replaces the task's own limits (not the message's) */
	json_t *tl = json_object_get(w->task_limits, h->req.task);
	if (json_is_array(tl)) {
		if (h->req.soft_time_limit <= 0)
			h->soft = json_is_number(json_array_get(tl, 0)) ?
				  json_number_value(json_array_get(tl, 0)) : 0;
		if (h->req.time_limit <= 0)
			h->hard = json_is_number(json_array_get(tl, 1)) ?
				  json_number_value(json_array_get(tl, 1)) : 0;
	}
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
		cw_metrics_task(w->metrics, name, CW_M_REJECTED, 1);
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
		cw_metrics_task(w->metrics, name, CW_M_REJECTED, 1);
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
		cw_metrics_task(w->metrics, name, CW_M_FAILED, 1);
		ack(w, h);
		release(w, h);
		goto out;
	}
	cw_log(CW_LOG_INFO, "consumer", "Task %s[%s] received", name, id);
	cw_metrics_task(w->metrics, name, CW_M_RECEIVED, 1);
	if (expired(h)) {
		revoke_expired(w, h);
		goto out;
	}
	if (is_revoked(w, h)) {
		revoke_task(w, h);
		goto out;
	}
	if (cw_events_task_enabled(w->events)) {
		char *ar = h->req.argsrepr ? NULL : cw_proto_pyrepr(h->req.args, true, 1024);
		char *kr = h->req.kwargsrepr ? NULL : cw_proto_pyrepr(h->req.kwargs, false, 1024);
		task_event(w, h, "task-received",
			   json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:I,s:o}", "name", h->req.task,
				     "args", h->req.argsrepr ? h->req.argsrepr : ar ? ar : "",
				     "kwargs", h->req.kwargsrepr ? h->req.kwargsrepr : kr ? kr : "",
				     "root_id", h->req.root_id ? h->req.root_id : h->req.id,
				     "parent_id", h->req.parent_id ? json_string(h->req.parent_id)
								   : json_null(),
				     "eta", h->req.eta ? json_string(h->req.eta) : json_null(),
				     "retries", (json_int_t)h->req.retries,
				     "expires", h->req.expires ? json_string(h->req.expires)
							       : json_null()));
		free(ar);
		free(kr);
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
	if (!admit(w, h)) {
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

void cw_worker_save_state(struct worker *w)
{
	struct cw_error err = {0};
	if (w->cfg->statedb && *w->cfg->statedb &&
	    cw_revoked_save(w->revoked, w->cfg->statedb, cw_wall(), &err) != CW_OK)
		cw_log(CW_LOG_ERROR, "worker", "cannot save the state db: %s", err.msg);
}

/* Flag id as revoked; with terminate, signal the child running it.  (control.py revoke) */
void cw_worker_revoke(struct worker *w, const char *id, bool terminate, int sig)
{
	if (cw_revoked_add(w->revoked, id, cw_wall()) != CW_OK) {
		cw_log(CW_LOG_ERROR, "control", "revoke: bad task id ignored");
		return;
	}
	cw_log(CW_LOG_INFO, "control", "Tasks flagged as revoked: %s", id);
	if (!terminate)
		return;
	for (int s = 0; s < w->nslots; s++) {
		struct held *h = w->running[s];
		if (!h || strcmp(h->req.id, id))
			continue;
		cw_log(CW_LOG_INFO, "control", "Terminating %s (%s)", id, strsignal(sig));
		h->terminated = true;
		if (cw_pool_signal(w->pool, s, sig) != CW_OK)
			cw_log(CW_LOG_WARNING, "control", "cannot terminate %s in this pool", id);
	}
}

static void on_broadcast(void *arg, const char *exchange, const struct cw_envelope *env)
{
	struct worker *w = arg;
	struct cw_control c;
	struct cw_error err = {0};

	if (cw_proto_decode_control(env, &w->limits, &c, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "control", "bad control message on %s dropped: %s", exchange,
		       err.msg);
		return;
	}
	if (!cw_control_for_me(&c, w->cfg->hostname) || (c.expires > 0 && cw_wall() > c.expires)) {
		cw_control_clear(&c);
		return;
	}
	/* merge the sender's Lamport clock */
	if (c.clock > 0)
		cw_events_adjust(w->events, (uint64_t)c.clock);
	else
		cw_events_forward(w->events);
	if (w->phase == RUNNING)
		cw_mailbox_handle(w, &c);
	cw_control_clear(&c);
}

/*
 * The connection is gone and the broker takes back everything we did not
 * acknowledge (AMQP): forget reserved, ETA-held and rate-limited messages,
 * as Celery's consumer clears its reserved requests on a connection loss.
 * Running tasks go on; their late acks are dropped by the transport.
 */
static void forget_unstarted(struct worker *w)
{
	size_t n = w->nready + w->neta;
	for (size_t i = 0; i < w->nready; i++)
		release(w, w->ready[i]);
	w->nready = 0;
	for (size_t i = 0; i < w->neta; i++)
		release(w, w->eta[i]);
	w->neta = 0;
	for (int b = 0; b < w->nbuckets; b++) {
		struct bucket *k = w->buckets[b];
		n += k->n;
		for (size_t i = 0; i < k->n; i++)
			release(w, k->q[i]);
		k->n = 0;
		if (k->timer)
			cw_loop_timer_cancel(w->loop, k->timer);
		k->timer = 0;
	}
	if (n)
		cw_log(CW_LOG_WARNING, "consumer", "%zu reserved message(s) dropped: the broker "
		       "redelivers them", n);
}

static void on_state(void *arg, bool up)
{
	struct worker *w = arg;
	if (!up && w->bops->redelivers)
		forget_unstarted(w);
	if (up && w->announced)
		cw_metrics_reconnect(w->metrics);
	if (up && !w->announced) {
		w->announced = true;
		cw_log(CW_LOG_INFO, "worker", "%s ready.", w->cfg->hostname);
		cw_sd_notifyf("READY=1\nSTATUS=%s consuming from %s", w->cfg->hostname, w->cfg->queues);
		cw_worker_heartbeat(w, "worker-online", w->cfg->heartbeat_interval);
	}
	if (up)
		update_credit(w);
}

static void on_done(void *arg, int slot, const struct cw_outcome *o, const char *publish)
{
	struct worker *w = arg;
	struct held *h = w->running[slot];

	if (!h)
		return;
	w->running[slot] = NULL;
	cw_metrics_runtime(w->metrics, h->req.task, o->runtime);
	cw_metrics_task(w->metrics, h->req.task, o->state == CW_STATE_SUCCESS ? CW_M_SUCCEEDED
						 : o->state == CW_STATE_RETRY ? CW_M_RETRIED : CW_M_FAILED, 1);
	for (int i = 0; i < o->ncounters; i++)
		if (o->counters[i].value > 0)
			cw_metrics_task_counter(w->metrics, h->req.task, o->counters[i].name,
						(uint64_t)o->counters[i].value);
	if (o->state == CW_STATE_SUCCESS) {
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] succeeded in %.6fs: %s", h->req.task, h->req.id,
		       o->runtime, o->result_repr);
		task_event(w, h, "task-succeeded", json_pack("{s:s,s:f}", "result", o->result_repr,
							     "runtime", o->runtime));
	} else if (o->state == CW_STATE_RETRY) {
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] retry: %s", h->req.task, h->req.id,
		       o->exc_message);
		exc_event(w, h, "task-retried", o->exc_type, o->exc_message, NULL);
	} else {
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] raised unexpected: %s(%s)", h->req.task,
		       h->req.id, o->exc_type, o->exc_message);
		exc_event(w, h, "task-failed", o->exc_type, o->exc_message, NULL);
	}
	if (o->publish_len)
		publish_outbox(w, h, publish, o->publish_len);
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
	if (h->terminated && why == CW_LOST_CRASH) {
		/* revoke(terminate=True): REVOKED TaskRevokedError('terminated'), acked */
		cw_log(CW_LOG_INFO, "pool", "Task %s[%s] terminated (pid %d, %s)", h->req.task,
		       h->req.id, (int)pid, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited");
		store_exc(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions",
			  "terminated", NULL);
		revoked_event(w, h, true, WIFSIGNALED(st) ? WTERMSIG(st) : 0, false);
		cw_metrics_task(w->metrics, h->req.task, CW_M_REVOKED, 1);
		ack(w, h);
	} else if (h->soft_fired && why == CW_LOST_CRASH && WIFEXITED(st) &&
		   WEXITSTATUS(st) == CW_EXIT_ABANDONED) {
		/* the task could not stop in time and its child gave it up */
		snprintf(msg, sizeof(msg), "soft time limit (%gs) exceeded; the task was abandoned",
			 h->soft);
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s]: %s", h->req.task, h->req.id, msg);
		store_exc(w, h, CW_STATE_FAILURE, "SoftTimeLimitExceeded", "celery.exceptions", msg,
			  NULL);
		exc_event(w, h, "task-failed", "SoftTimeLimitExceeded", msg, NULL);
		cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
		ack(w, h);
	} else if (why == CW_LOST_TIMEOUT) {
		json_t *args = json_pack("[f]", h->hard);
		store_exc(w, h, CW_STATE_FAILURE, "TimeLimitExceeded", "billiard.exceptions", NULL, args);
		exc_event(w, h, "task-failed", "TimeLimitExceeded", NULL, args);
		cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
		json_decref(args);
		ack(w, h); /* task_acks_on_failure_or_timeout */
	} else if (why == CW_LOST_MEMORY) {
		snprintf(msg, sizeof(msg), "child RSS passed the limit of %ld KiB",
			 w->cfg->child_memory_limit);
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] killed: %s", h->req.task, h->req.id, msg);
		store_exc(w, h, CW_STATE_FAILURE, "MemoryLimitExceeded", "cworker.exceptions", msg, NULL);
		exc_event(w, h, "task-failed", "MemoryLimitExceeded", msg, NULL);
		cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
		ack(w, h);
	} else if (h->acks_late && h->reject_on_worker_lost) {
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s]: worker pid %d lost; requeued "
		       "(reject_on_worker_lost)", h->req.task, h->req.id, (int)pid);
		w->bops->reject(w->broker, h->d, true);
		cw_metrics_task(w->metrics, h->req.task, CW_M_REJECTED, 1);
		task_event(w, h, "task-rejected", json_pack("{s:b}", "requeue", true));
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
		exc_event(w, h, "task-failed", "WorkerLostError", msg, NULL);
		cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
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

static double round2(double v)
{
	return round(v * 100) / 100;
}

static int active_count(const struct worker *w)
{
	int n = 0;
	for (int i = 0; i < w->nslots; i++)
		n += w->running[i] != NULL;
	return n;
}

/* worker-online / worker-heartbeat / worker-offline with Celery's fields */
void cw_worker_heartbeat(struct worker *w, const char *type, double freq)
{
	double la[3] = {0, 0, 0};
	if (getloadavg(la, 3) < 0)
		la[0] = la[1] = la[2] = 0;
	cw_events_send(w->events, type,
		       json_pack("{s:f,s:i,s:I,s:[f,f,f],s:s,s:s,s:s}", "freq", freq, "active",
				 active_count(w), "processed", (json_int_t)w->processed, "loadavg",
				 round2(la[0]), round2(la[1]), round2(la[2]), "sw_ident", "cworker",
				 "sw_ver", CW_VERSION, "sw_sys", "Linux"));
}

static void heartbeat_tick(struct cw_loop *loop, void *arg)
{
	struct worker *w = arg;
	if (w->phase == RUNNING && w->announced)
		cw_worker_heartbeat(w, "worker-heartbeat", w->cfg->heartbeat_interval);
	cw_loop_timer(loop, w->cfg->heartbeat_interval, heartbeat_tick, w);
}

json_t *cw_worker_request_info(const struct worker *w, const struct held *h, bool safe)
{
	(void)w;
	json_t *args = safe ? json_string(h->req.argsrepr ? h->req.argsrepr : "")
			    : json_incref(h->req.args);
	json_t *kwargs = safe ? json_string(h->req.kwargsrepr ? h->req.kwargsrepr : "")
			      : json_incref(h->req.kwargs);
	bool running = h->time_start > 0;
	pid_t pid = running ? cw_pool_pid(w->pool, h->slot) : 0;
	return json_pack("{s:s,s:s,s:o,s:o,s:s,s:s,s:o,s:b,s:{s:s,s:s,s:i,s:b},s:o}", "id",
			 h->req.id, "name", h->req.task, "args", args, "kwargs", kwargs, "type",
			 h->req.task, "hostname", w->cfg->hostname, "time_start",
			 running ? json_real(h->time_start) : json_null(), "acknowledged",
			 running && !h->acks_late, "delivery_info", "exchange",
			 h->d->env.exchange ? h->d->env.exchange : "", "routing_key",
			 h->d->env.routing_key && *h->d->env.routing_key ? h->d->env.routing_key
									 : h->d->queue,
			 "priority", h->d->env.priority, "redelivered", h->d->env.redelivered,
			 "worker_pid", pid > 0 ? json_integer(pid) : json_null());
}

void cw_worker_shutdown(struct worker *w)
{
	begin_shutdown(w, false);
}

static int live_slots(const struct worker *w)
{
	return cw_pool_size(w->pool);
}

static void set_limit(struct worker *w)
{
	int procs = w->autoscale_max ? w->autoscale_max : live_slots(w);
	w->limit = procs * (int)w->cfg->prefetch_multiplier;
	update_credit(w);
}

int cw_worker_resize(struct worker *w, int n)
{
	if (n > 0) {
		int want = w->nslots + n;
		{
			struct held **r = realloc(w->running, (size_t)want * sizeof(*r));
			if (!r)
				return CW_ENOMEM;
			for (int i = w->nslots; i < want; i++)
				r[i] = NULL;
			w->running = r;
		}
		int rc = cw_pool_grow(w->pool, n);
		if (cw_pool_slots(w->pool) > w->nslots)
			w->nslots = cw_pool_slots(w->pool);
		set_limit(w);
		dispatch(w);
		return rc;
	}
	int rc = cw_pool_shrink(w->pool, -n);
	set_limit(w);
	return rc;
}

/*
 * --autoscale MAX,MIN: once a second, as Celery's Autoscaler: grow to
 * min(held messages, MAX) at once; shrink towards max(held, MIN) only when
 * the last grow is more than AUTOSCALE_KEEPALIVE seconds (default 30) old,
 * and only idle processes.
 */
static void autoscale_tick(struct cw_loop *loop, void *arg)
{
	struct worker *w = arg;
	if (w->phase == RUNNING && w->autoscale_max) {
		int procs = live_slots(w), qty = w->held;
		int cur = qty < w->autoscale_max ? qty : w->autoscale_max;
		if (cur > procs) {
			cw_log(CW_LOG_INFO, "autoscale", "Scaling up %d processes.", cur - procs);
			w->last_scale_up = cw_now();
			(void)cw_worker_resize(w, cur - procs);
		} else {
			cur = qty > w->autoscale_min ? qty : w->autoscale_min;
			if (cur < procs && w->last_scale_up > 0 &&
			    cw_now() - w->last_scale_up > w->autoscale_keepalive) {
				cw_log(CW_LOG_INFO, "autoscale", "Scaling down %d processes.",
				       procs - cur);
				if (cw_worker_resize(w, cur - procs) != CW_OK)
					cw_log(CW_LOG_DEBUG, "autoscale",
					       "won't scale down: all processes busy");
			}
		}
	}
	cw_loop_timer(loop, 1.0, autoscale_tick, w);
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
		for (int b = 0; b < w->nbuckets; b++)
			for (size_t i = 0; i < w->buckets[b]->n; i++)
				w->bops->touch(w->broker, w->buckets[b]->q[i]->d);
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
	cw_sd_notify(cold ? "STOPPING=1\nSTATUS=cold shutdown" : "STOPPING=1\nSTATUS=warm shutdown");
	update_credit(w);
	if (w->announced)
		cw_worker_heartbeat(w, "worker-offline", w->cfg->heartbeat_interval);
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
	for (int b = 0; b < w->nbuckets; b++) {
		struct bucket *k = w->buckets[b];
		for (size_t i = 0; i < k->n; i++) {
			w->bops->restore(w->broker, k->q[i]->d);
			release(w, k->q[i]);
		}
		k->n = 0;
		if (k->timer)
			cw_loop_timer_cancel(w->loop, k->timer);
		k->timer = 0;
	}
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
	if (cw_aliases_register(w.reg, cfg, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "worker", "%s", err.msg[0] ? err.msg : "out of memory");
		goto out;
	}
#ifdef CW_HAVE_DOCCONV
	struct cw_docconv_conf dc = {
		.roots = cfg->docconv_roots, .max_download = (size_t)cfg->docconv_max_download << 20,
		.timeout = cfg->docconv_timeout, .s3_endpoint = cfg->s3_endpoint,
		.s3_region = cfg->s3_region, .s3_path_style = cfg->s3_path_style,
		.memory_mib = (size_t)cfg->docconv_memory_mib, .max_pages = (int)cfg->docconv_max_pages,
		.inline_max = (size_t)cfg->docconv_inline_max, .database_url = cfg->database_url};
	if (cw_docconv_configure(&dc) != 0)
		goto out;
#endif
	struct cw_backend_opts bo = {.url = cfg->result_backend, .expires = cfg->result_expires,
				     .task_table = cfg->db_task_table,
				     .group_table = cfg->db_group_table,
				     .task_schema = cfg->db_task_schema,
				     .group_schema = cfg->db_group_schema,
				     .broker_url = cfg->broker_url,
				     .ssl_ca = cfg->broker_ssl_ca, .ssl_cert = cfg->broker_ssl_cert,
				     .ssl_key = cfg->broker_ssl_key, .ssl = broker_ssl(cfg),
				     .ssl_verify = strcmp(cfg->broker_ssl_reqs, "CERT_NONE") != 0};
	w.backend = cw_backend_open(&bo, &err);
	if (!w.backend && err.msg[0]) {
		cw_log(CW_LOG_ERROR, "worker", "result backend: %s", err.msg);
		goto out;
	}
	if (cw_backend_prepare(w.backend, &err) != CW_OK)
		cw_log(CW_LOG_WARNING, "worker", "result backend not ready yet (%s); children retry "
		       "when they store", err.msg);
	w.env = (struct cw_exec_env){.reg = w.reg, .backend = w.backend, .hostname = cfg->hostname,
				     .result_extended = cfg->result_extended, .limits = w.limits,
				     .default_queue = "celery"};
	if (setup_signals(&w) < 0) {
		cw_log(CW_LOG_ERROR, "worker", "signal setup failed: %s", strerror(errno));
		goto out;
	}
	w.nslots = cfg->pool_kind == CW_POOL_SOLO ? 1 : (int)cfg->concurrency;
	if (cfg->autoscale_max && cfg->pool_kind == CW_POOL_PREFORK) {
		/* start at MIN (at least one process), prefetch sized for MAX, as Celery */
		w.autoscale_max = cfg->autoscale_max;
		w.autoscale_min = cfg->autoscale_min;
		w.nslots = cfg->autoscale_min > 0 ? cfg->autoscale_min : 1;
		const char *ka = getenv("AUTOSCALE_KEEPALIVE");
		w.autoscale_keepalive = ka && atof(ka) > 0 ? atof(ka) : 30;
	}
	w.limit = (w.autoscale_max ? w.autoscale_max : w.nslots) * (int)cfg->prefetch_multiplier;
	w.started = cw_wall();
	w.totals = json_object();
	w.task_limits = json_object();
	if (!w.totals || !w.task_limits)
		goto out;
	w.running = calloc((size_t)w.nslots, sizeof(*w.running));
	struct cw_pool_handler ph = {.on_done = on_done, .on_lost = on_lost, .on_idle = on_idle,
				     .arg = &w};
	w.pool = cw_pool_new(w.loop, cfg->pool, w.nslots, &w.env, &ph);
	if (!w.running || !w.pool)
		goto out;
	cw_pool_set_recycling(w.pool, cfg->max_tasks_per_child, cfg->max_memory_per_child);
	/* Celery's REVOKES_MAX and REVOKE_EXPIRES */
	w.revoked = cw_revoked_new(50000, 10800);
	if (!w.revoked)
		goto out;
	if (cfg->statedb && *cfg->statedb) {
		if (cw_revoked_load(w.revoked, cfg->statedb, cw_wall(), &err) != CW_OK) {
			char moved[4200];
			snprintf(moved, sizeof(moved), "%s.corrupt", cfg->statedb);
			cw_log(CW_LOG_ERROR, "worker", "state db unusable, starting without it (kept "
			       "as %s): %s", moved, err.msg);
			if (rename(cfg->statedb, moved) < 0)
				cw_log(CW_LOG_ERROR, "worker", "cannot move %s aside: %s", cfg->statedb,
				       strerror(errno));
		} else {
			cw_log(CW_LOG_INFO, "worker", "state db %s: %zu revoked ids", cfg->statedb,
			       cw_revoked_count(w.revoked));
		}
	}
	for (int i = 0; i < cfg->ntasks; i++)
		if (cfg->tasks[i].rate > 0 &&
		    cw_worker_set_rate(&w, cfg->tasks[i].name, cfg->tasks[i].rate) != CW_OK)
			goto out;
	if (cw_monitor_start(&w, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "worker", "%s", err.msg[0] ? err.msg : "out of memory");
		goto out;
	}
	/* docconv's task counters: exported (with these HELP texts) before the first count */
	cw_metrics_declare_counter(w.metrics, "docconv_pages",
				   "Document pages converted or rendered by successful docconv tasks.");
	cw_metrics_declare_counter(w.metrics, "docconv_ocr_pages",
				   "Pages that went through OCR in successful docconv tasks.");
	if (cw_pool_start(w.pool) != CW_OK)
		goto out;

	cw_url_redact(cfg->broker_url, redacted, sizeof(redacted));
	cw_log(CW_LOG_INFO, "worker", "%s: broker %s, %s pool of %d, prefetch %d, queues %s",
	       cfg->hostname, redacted, cfg->pool, w.nslots, w.limit, cfg->queues);
	w.bops = cw_broker_lookup(cfg->broker_url);
	struct cw_broker_opts opts = {.url = cfg->broker_url, .queues = cfg->queue_list,
				      .nqueues = cfg->nqueues,
				      .visibility_timeout = cfg->visibility_timeout, .limits = w.limits,
				      .nodename = cfg->hostname,
				      .ssl_ca = cfg->broker_ssl_ca, .ssl_cert = cfg->broker_ssl_cert,
				      .ssl_key = cfg->broker_ssl_key, .ssl = broker_ssl(cfg),
				      .ssl_verify = strcmp(cfg->broker_ssl_reqs, "CERT_NONE") != 0,
				      .heartbeat = (int)cfg->broker_heartbeat,
				      .connect_timeout = cfg->broker_connection_timeout,
				      .max_priority = (int)cfg->queue_max_priority};
	static const char *const broadcast[] = {"celery.pidbox", NULL};
	opts.broadcast = broadcast;
	struct cw_broker_handler bh = {.on_delivery = on_delivery, .on_state = on_state,
				       .on_broadcast = on_broadcast, .arg = &w};
	w.broker = w.bops ? w.bops->open(w.loop, &opts, &bh, &err) : NULL;
	if (!w.broker) {
		cw_log(CW_LOG_ERROR, "worker", "broker %s: %s", redacted, err.msg);
		goto out;
	}
	w.broker->ops = w.bops;
	w.events = cw_events_new(w.broker, w.bops, cfg->hostname, cfg->task_events,
				 !cfg->without_heartbeat);
	if (!w.events)
		goto out;
	if (!cfg->without_heartbeat)
		cw_loop_timer(w.loop, cfg->heartbeat_interval, heartbeat_tick, &w);
	if (w.autoscale_max)
		cw_loop_timer(w.loop, 1.0, autoscale_tick, &w);
	cw_loop_timer(w.loop, 0.05, shutdown_tick, &w);
	cw_loop_timer(w.loop, touch_interval(cfg), touch_tick, &w);
	cw_monitor_started(&w);
	if (cfg->child_memory_limit > 0 && cfg->pool_kind == CW_POOL_PREFORK)
		cw_loop_timer(w.loop, 0.1, memory_tick, &w);
	cw_sd_watchdog_start(w.loop);
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
	for (int b = 0; w.buckets && b < w.nbuckets; b++) {
		for (size_t i = 0; i < w.buckets[b]->n; i++)
			release(&w, w.buckets[b]->q[i]);
		free(w.buckets[b]->q);
		free(w.buckets[b]->task);
		free(w.buckets[b]);
	}
	free(w.buckets);
	if (w.revoked) {
		cw_worker_save_state(&w);
		cw_revoked_free(w.revoked);
	}
	free(w.ready);
	free(w.eta);
	free(w.running);
	if (w.broker)
		w.bops->close(w.broker);
	cw_events_free(w.events);
	cw_monitor_free(&w);
	json_decref(w.totals);
	json_decref(w.task_limits);
	cw_backend_close(w.backend);
	cw_registry_free(w.reg);
	cw_aliases_free();
#ifdef CW_HAVE_DOCCONV
	cw_docconv_shutdown();
#endif
	if (w.sigfd >= 0)
		close(w.sigfd);
	cw_loop_free(w.loop);
	if (rc == 0)
		cw_log(CW_LOG_INFO, "worker", "%s stopped.", cfg->hostname);
	return rc;
}
