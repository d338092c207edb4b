/*
 * A message's way in, as Celery's consumer does it: look at the task name
 * first (garbage is dropped, unknown names are stored as NotRegistered),
 * decode the request, settle its options, hold it until its ETA, wait for
 * its rate limit, reserve it within the prefetch budget, and hand it to an
 * idle pool slot, acking early unless acks_late.  Also: the broker's
 * connection state, broadcast (remote control) messages, and keeping held
 * messages visible to the broker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/worker_int.h"
#include "control/mailbox.h"
#include "loop/loop.h"
#include "protocol/control.h"
#include "util/log.h"
#include "util/sdnotify.h"

bool cw_consumer_running(const struct cw_worker *w)
{
	return cw_shutdown_phase(w->shutdown) == CW_RUNNING;
}

void cw_held_release(struct cw_worker *w, struct held *h)
{
	if (!h)
		return;
	if (h->eta_timer)
		cw_loop_timer_cancel(w->loop, h->eta_timer);
	cw_timelimit_stop(w->loop, h);
	cw_reserve_uncount(w->reserve, h);
	cw_request_clear(&h->req);
	cw_delivery_free(h->d);
	free(h);
}

/* Give a message back to its queue unstarted and forget it. */
static void give_back(struct cw_worker *w, struct held *h)
{
	w->broker->ops->restore(w->broker, h->d);
	cw_held_release(w, h);
}

void cw_consumer_update_credit(struct cw_worker *w)
{
	const struct cw_broker_ops *ops = w->broker->ops;
	bool running = cw_consumer_running(w);
	size_t extra = cw_reserve_neta(w->reserve) + cw_ratelimit_waiting(w->ratelimit);
	ops->set_credit(w->broker, running ? cw_reserve_credit(w->reserve, extra) : 0);
	if (ops->set_prefetch)
		ops->set_prefetch(w->broker, running ? (int)cw_reserve_window(w->reserve, extra) : 0);
}

static bool expired(const struct held *h)
{
	return h->expires > 0 && cw_wall() >= h->expires;
}

static bool is_revoked(struct cw_worker *w, const struct held *h)
{
	return cw_revoked_has(w->revoked, h->req.id, cw_wall());
}

/* task_accepted: counted in stats "total" and heartbeats' "processed" */
static void accepted(struct cw_worker *w, const struct held *h)
{
	json_t *n = json_object_get(w->totals, h->req.task);
	json_object_set_new(w->totals, h->req.task,
			    json_integer(json_is_integer(n) ? json_integer_value(n) + 1 : 1));
	w->processed++;
	cw_metrics_task(w->metrics, h->req.task, CW_M_STARTED, 1);
	cw_outcome_event(w, h, "task-started", NULL);
}

void cw_consumer_dispatch(struct cw_worker *w)
{
	while (cw_reserve_nready(w->reserve) && cw_shutdown_phase(w->shutdown) != CW_COLD) {
		int slot = cw_pool_idle_slot(w->pool);
		if (slot < 0)
			break;
		struct held *h = cw_reserve_pop(w->reserve);
		bool exp = expired(h);
		if (exp || is_revoked(w, h)) {
			cw_outcome_revoked(w, h, exp);
			continue;
		}
		/*
		 * Early ack, as Celery's default: just before the task starts.  An acked
		 * message leaves the budget, as kombu's QoS counts only unacknowledged
		 * ones, unless worker_disable_prefetch keeps it counted until it returns.
		 */
		if (!h->acks_late) {
			w->broker->ops->ack(w->broker, h->d);
			h->acked = true;
			if (!w->disable_prefetch)
				cw_reserve_uncount(w->reserve, h);
		}
		h->time_start = cw_wall();
		cw_reserve_run(w->reserve, slot, h);
		accepted(w, h);
		/*
		 * worker_disable_prefetch, nothing reserved behind it: have the child say when
		 * the task returns, so the next message is fetched while the result is stored
		 * (early ack only: an acks_late message stays unacknowledged, and counted,
		 * until the very end).
		 */
		struct cw_job job = {.queue = h->d->queue, .raw = h->d->raw, .len = h->d->raw_len,
				     .report_return = h->counted && !h->acks_late &&
						      cw_reserve_nready(w->reserve) == 0};
		/* the child takes the request decoded here instead of decoding it again */
		char *packed = cw_request_pack(&h->req, h->d->env.priority, h->d->env.body,
					       h->d->env.body_len, &job.packed_len);
		job.packed = packed;
		int rc = cw_pool_submit(w->pool, slot, &job);
		free(packed);
		if (rc != CW_OK) {
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: cannot hand to the pool: %s",
			       h->req.task, h->req.id, cw_strerror(rc));
			cw_reserve_finish(w->reserve, slot);
			cw_outcome_store(w, h, CW_STATE_FAILURE, "WorkerLostError",
					 "billiard.exceptions", "could not start the task", NULL);
			cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
			if (h->acks_late)
				w->broker->ops->ack(w->broker, h->d);
			cw_held_release(w, h);
			continue;
		}
		cw_timelimit_start(w->timelimit, h);
	}
	cw_consumer_update_credit(w);
}

void cw_consumer_on_returned(void *arg, int slot)
{
	struct cw_worker *w = arg;
	struct held *h = cw_reserve_running(w->reserve, slot);

	if (!h || h->acks_late || !h->counted)
		return;
	cw_reserve_uncount(w->reserve, h);
	cw_consumer_update_credit(w);
}

/* Into the ready FIFO; false on ENOMEM (the message went back to its queue). */
static bool make_ready(struct cw_worker *w, struct held *h)
{
	if (cw_reserve_push(w->reserve, h))
		return true;
	give_back(w, h);
	return false;
}

/* Rate limiter: these messages got their tokens. */
void cw_consumer_on_ready(void *arg, struct held **hs, size_t n)
{
	struct cw_worker *w = arg;
	for (size_t i = 0; i < n; i++)
		make_ready(w, hs[i]);
	cw_consumer_dispatch(w);
}

/* A due message: ready to run, unless its task's rate limit makes it wait. */
static void admit(struct cw_worker *w, struct held *h)
{
	int rc = cw_ratelimit_admit(w->ratelimit, h);
	if (rc == 0)
		make_ready(w, h);
	else if (rc != 1)
		give_back(w, h);
}

static void on_eta(struct cw_loop *loop, void *arg)
{
	struct held *h = arg;
	struct cw_worker *w = h->w;
	(void)loop;
	h->eta_timer = 0;
	cw_reserve_unhold(w->reserve, h);
	admit(w, h);
	cw_consumer_dispatch(w);
}

/* Messages Celery's consumer drops: logged, removed from the queue for good. */
static void drop(struct cw_worker *w, struct cw_delivery *d)
{
	w->broker->ops->reject(w->broker, d, false);
	cw_delivery_free(d);
}

/* Resolve per-message settings: message header > [task:NAME] section > global. */
static void settle(struct cw_worker *w, struct held *h)
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

static void received_event(struct cw_worker *w, const struct held *h)
{
	if (!cw_events_task_enabled(w->events))
		return;
	const struct cw_request *r = &h->req;
	char *ar = r->argsrepr ? NULL : cw_proto_pyrepr(r->args, true, 1024);
	char *kr = r->kwargsrepr ? NULL : cw_proto_pyrepr(r->kwargs, false, 1024);
	cw_outcome_event(w, h, "task-received",
			 json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:I,s:o}", "name", r->task, "args",
				   r->argsrepr ? r->argsrepr : ar ? ar : "", "kwargs",
				   r->kwargsrepr ? r->kwargsrepr : kr ? kr : "", "root_id",
				   r->root_id ? r->root_id : r->id, "parent_id",
				   r->parent_id ? json_string(r->parent_id) : json_null(), "eta",
				   r->eta ? json_string(r->eta) : json_null(), "retries",
				   (json_int_t)r->retries, "expires",
				   r->expires ? json_string(r->expires) : json_null()));
	free(ar);
	free(kr);
}

/* Look at the name first; NULL when the message was dealt with (dropped, stored). */
static struct held *take(struct cw_worker *w, struct cw_delivery *d, const char *name,
			 const char *id)
{
	struct cw_error err = {0};

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
		return NULL;
	}
	struct held *h = calloc(1, sizeof(*h));
	if (!h) {
		w->broker->ops->restore(w->broker, d);
		cw_delivery_free(d);
		return NULL;
	}
	h->w = w;
	int rc = cw_proto_decode_request(&d->env, &w->limits, &h->req, &err);
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
		cw_held_release(w, h);
		drop(w, d);
		return NULL;
	}
	h->d = d;
	settle(w, h);
	if (w->cfg->max_redeliveries > 0 && d->deliveries > w->cfg->max_redeliveries) {
		char msg[200];
		snprintf(msg, sizeof(msg), "message delivered %ld times, over max_redeliveries (%ld): "
			 "it keeps killing its worker", d->deliveries, w->cfg->max_redeliveries);
		cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: %s", name, id, msg);
		cw_outcome_store(w, h, CW_STATE_FAILURE, "RedeliveryLimitExceeded",
				 "cworker.exceptions", msg, NULL);
		cw_metrics_task(w->metrics, name, CW_M_FAILED, 1);
		w->broker->ops->ack(w->broker, h->d);
		cw_held_release(w, h);
		return NULL;
	}
	return h;
}

void cw_consumer_on_delivery(void *arg, struct cw_delivery *d)
{
	struct cw_worker *w = arg;
	struct cw_error err = {0};
	char *name = NULL, *id = NULL;

	if (!cw_consumer_running(w)) {
		/* arrived while shutting down: give it straight back */
		w->broker->ops->restore(w->broker, d);
		cw_delivery_free(d);
		return;
	}
	int rc = cw_proto_peek_task(&d->env, &w->limits, &name, &id, &err);
	if (rc != CW_OK) {
		if (rc == CW_EFORMAT)
			cw_log(CW_LOG_ERROR, "consumer",
			       "Received and deleted unknown message. Wrong destination?!? (queue %s, "
			       "content-type %s): %s", d->queue, d->env.content_type, err.msg);
		else
			cw_log(CW_LOG_ERROR, "consumer", "Can't decode message body: %s (type:%s "
			       "encoding:%s, queue %s); message dropped", err.msg, d->env.content_type,
			       d->env.content_encoding, d->queue);
		drop(w, d);
		goto out;
	}
	struct held *h = take(w, d, name, id);
	if (!h)
		goto out;
	cw_log(CW_LOG_INFO, "consumer", "Task %s[%s] received", name, id);
	cw_metrics_task(w->metrics, name, CW_M_RECEIVED, 1);
	bool exp = expired(h);
	if (exp || is_revoked(w, h)) {
		cw_outcome_revoked(w, h, exp);
		goto out;
	}
	received_event(w, h);
	if (h->eta > cw_wall()) {
		/* held in the master until due, outside the prefetch limit (as Celery) */
		if (!cw_reserve_hold(w->reserve, h)) {
			give_back(w, h);
			goto out;
		}
		h->eta_timer = cw_loop_timer(w->loop, h->eta - cw_wall(), on_eta, h);
		if (!h->eta_timer) {
			cw_log(CW_LOG_ERROR, "consumer", "Task %s[%s]: out of memory holding it for its "
			       "ETA; given back to its queue", name, id);
			cw_reserve_unhold(w->reserve, h);
			give_back(w, h);
		}
		goto out;
	}
	admit(w, h);
	cw_consumer_dispatch(w);
out:
	free(name);
	free(id);
	cw_consumer_update_credit(w);
}

void cw_consumer_on_broadcast(void *arg, const char *exchange, const struct cw_envelope *env)
{
	struct cw_worker *w = arg;
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
	if (cw_consumer_running(w))
		cw_mailbox_handle(w, &c);
	cw_control_clear(&c);
}

static void forget(void *arg, struct held *h, enum cw_held_where where)
{
	(void)where;
	cw_held_release(arg, h);
}

static void restore(void *arg, struct held *h, enum cw_held_where where)
{
	(void)where;
	give_back(arg, h);
}

/*
 * The connection is gone and the broker takes back everything we did not
 * acknowledge (AMQP): forget reserved, ETA-held and rate-limited messages,
 * as Celery's consumer clears its reserved requests on a connection loss.
 * Running tasks go on; their late acks are dropped by the transport.
 */
static void forget_unstarted(struct cw_worker *w)
{
	size_t n = cw_reserve_drain(w->reserve, forget, w);
	n += cw_ratelimit_drain(w->ratelimit, false, forget, w);
	if (n)
		cw_log(CW_LOG_WARNING, "consumer", "%zu reserved message(s) dropped: the broker "
		       "redelivers them", n);
}

/*
 * Cold: the children are killed first (no task can finish and ack after its
 * message went back), then every running task is cancelled as Celery's
 * cancel_active_requests does.  Returns how many messages went back.
 */
static size_t cancel_running(struct cw_worker *w)
{
	size_t back = 0;
	cw_pool_kill(w->pool);
	for (int i = 0; i < cw_reserve_slots(w->reserve); i++) {
		struct held *h = cw_reserve_finish(w->reserve, i);
		if (h && cw_outcome_cancelled(w, h))
			back++;
	}
	return back;
}

void cw_consumer_stop(struct cw_worker *w, enum cw_phase phase)
{
	if (phase == CW_COLD)
		cw_backend_retry_cap(0); /* one attempt per store: the exit must not wait on a backend */
	size_t back = phase == CW_COLD ? cancel_running(w) : 0;
	cw_consumer_update_credit(w);
	if (w->announced)
		cw_worker_heartbeat(w, "worker-offline", w->cfg->heartbeat_interval);
	/* reserved, ETA-held and rate-limited messages go back to the head of their queues */
	back += cw_reserve_drain(w->reserve, restore, w);
	back += cw_ratelimit_drain(w->ratelimit, true, restore, w);
	if (back)
		cw_log(CW_LOG_WARNING, "worker", "Restoring %zu unacknowledged message(s)", back);
}

void cw_consumer_on_state(void *arg, bool up)
{
	struct cw_worker *w = arg;
	if (!up && w->broker->ops->redelivers)
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
		cw_consumer_update_credit(w);
}
