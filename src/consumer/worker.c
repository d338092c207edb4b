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
#include "consumer/revoked.h"
#include "protocol/control.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "tasks/canvas.h"
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
	bool terminated;           /* revoke(terminate=True) signalled its child */
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
	const char *task;          /* borrowed from the config */
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
	struct bucket *buckets;    /* one per rate-limited task name */
	int nbuckets;
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

static bool is_revoked(struct worker *w, const struct held *h)
{
	return cw_revoked_has(w->revoked, h->req.id, cw_wall());
}

/* Request.revoked(): a revoked id is skipped, REVOKED TaskRevokedError('revoked'), acked. */
static void revoke_task(struct worker *w, struct held *h)
{
	cw_log(CW_LOG_INFO, "consumer", "Discarding revoked task: %s[%s]", h->req.task, h->req.id);
	store_exc(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions", "revoked", NULL);
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
		if (is_revoked(w, h)) {
			revoke_task(w, h);
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

static struct bucket *bucket_for(struct worker *w, const char *task)
{
	for (int i = 0; i < w->nbuckets; i++)
		if (!strcmp(w->buckets[i].task, task))
			return &w->buckets[i];
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
	if (is_revoked(w, h)) {
		revoke_task(w, h);
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

static void save_state(struct worker *w)
{
	struct cw_error err = {0};
	if (w->cfg->statedb && *w->cfg->statedb &&
	    cw_revoked_save(w->revoked, w->cfg->statedb, cw_wall(), &err) != CW_OK)
		cw_log(CW_LOG_ERROR, "worker", "cannot save the state db: %s", err.msg);
}

static int signal_number(json_t *v)
{
	static const struct { const char *name; int sig; } names[] = {
		{"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT}, {"QUIT", SIGQUIT},
		{"HUP", SIGHUP}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT},
	};
	if (json_is_integer(v))
		return json_integer_value(v) > 0 && json_integer_value(v) < 65 ?
		       (int)json_integer_value(v) : -1;
	const char *s = json_string_value(v);
	if (!s)
		return SIGTERM; /* Celery's default */
	if (!strncmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(names[i].name, s))
			return names[i].sig;
	return -1;
}

/* The revoke control command (celery/worker/control.py revoke). */
static void control_revoke(struct worker *w, const struct cw_control *c)
{
	json_t *ids = json_object_get(c->arguments, "task_id"), *one = NULL, *v;
	bool terminate = json_is_true(json_object_get(c->arguments, "terminate"));
	int sig = signal_number(json_object_get(c->arguments, "signal"));
	size_t i;

	if (json_is_string(ids))
		ids = one = json_pack("[O]", ids);
	if (!json_is_array(ids)) {
		cw_log(CW_LOG_ERROR, "control", "revoke without task ids ignored");
		return;
	}
	json_array_foreach(ids, i, v) {
		const char *id = json_string_value(v);
		if (!id || cw_revoked_add(w->revoked, id, cw_wall()) != CW_OK) {
			cw_log(CW_LOG_ERROR, "control", "revoke: bad task id ignored");
			continue;
		}
		cw_log(CW_LOG_INFO, "control", "Tasks flagged as revoked: %s", id);
		if (!terminate)
			continue;
		if (sig < 0) {
			cw_log(CW_LOG_ERROR, "control", "revoke %s: unknown signal; not terminated", id);
			continue;
		}
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
	json_decref(one);
	save_state(w);
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
	if (!strcmp(c.method, "revoke"))
		control_revoke(w, &c);
	else
		cw_log(CW_LOG_DEBUG, "control", "control command %s not handled", c.method);
	cw_control_clear(&c);
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

static void on_done(void *arg, int slot, const struct cw_outcome *o, const char *publish)
{
	struct worker *w = arg;
	struct held *h = w->running[slot];

	if (!h)
		return;
	w->running[slot] = NULL;
	if (o->state == CW_STATE_SUCCESS)
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] succeeded in %.6fs: %s", h->req.task, h->req.id,
		       o->runtime, o->result_repr);
	else if (o->state == CW_STATE_RETRY)
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] retry: %s", h->req.task, h->req.id,
		       o->exc_message);
	else
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] raised unexpected: %s(%s)", h->req.task,
		       h->req.id, o->exc_type, o->exc_message);
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
		ack(w, h);
	} else if (why == CW_LOST_TIMEOUT) {
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
		for (int b = 0; b < w->nbuckets; b++)
			for (size_t i = 0; i < w->buckets[b].n; i++)
				w->bops->touch(w->broker, w->buckets[b].q[i]->d);
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
	for (int b = 0; b < w->nbuckets; b++) {
		struct bucket *k = &w->buckets[b];
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
	struct cw_backend_opts bo = {.url = cfg->result_backend, .expires = cfg->result_expires};
	w.backend = cw_backend_open(&bo, &err);
	if (!w.backend && err.msg[0]) {
		cw_log(CW_LOG_ERROR, "worker", "result backend: %s", err.msg);
		goto out;
	}
	w.env = (struct cw_exec_env){.reg = w.reg, .backend = w.backend, .hostname = cfg->hostname,
				     .result_extended = cfg->result_extended, .limits = w.limits,
				     .default_queue = "celery"};
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
	w.buckets = calloc((size_t)cfg->ntasks + 1, sizeof(*w.buckets));
	if (!w.buckets)
		goto out;
	for (int i = 0; i < cfg->ntasks; i++)
		if (cfg->tasks[i].rate > 0)
			w.buckets[w.nbuckets++] = (struct bucket){.task = cfg->tasks[i].name,
				.rate = cfg->tasks[i].rate, .tokens = 1, .stamp = cw_now(), .w = &w};
	if (cw_pool_start(w.pool) != CW_OK)
		goto out;

	cw_url_redact(cfg->broker_url, redacted, sizeof(redacted));
	cw_log(CW_LOG_INFO, "worker", "%s: broker %s, %s pool of %d, prefetch %d, queues %s",
	       cfg->hostname, redacted, cfg->pool, w.nslots, w.limit, cfg->queues);
	w.bops = cw_broker_lookup(cfg->broker_url);
	struct cw_broker_opts opts = {.url = cfg->broker_url, .queues = cfg->queue_list,
				      .nqueues = cfg->nqueues,
				      .visibility_timeout = cfg->visibility_timeout, .limits = w.limits};
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
	for (int b = 0; w.buckets && b < w.nbuckets; b++) {
		for (size_t i = 0; i < w.buckets[b].n; i++)
			release(&w, w.buckets[b].q[i]);
		free(w.buckets[b].q);
	}
	free(w.buckets);
	if (w.revoked) {
		save_state(&w);
		cw_revoked_free(w.revoked);
	}
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
