/*
 * A message's way out.  The pool reports a finished task (on_done) or a
 * child that died running one (on_lost); the consumer reports messages it
 * will not run (revoked, expired).  Each ends here in one place: the
 * Celery state it gets (stored by the child, or here for the states the
 * master decides), its task-* event, its metrics, its follow-up messages
 * and its ack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "consumer/worker_int.h"
#include "loop/loop.h"
#include "tasks/canvas.h"
#include "tasks/exec_cancel.h"
#include "util/log.h"

/* Publish the messages a task run asked for (retry, callbacks, chain, chord body). */
static void publish_outbox(struct cw_worker *w, const struct held *h, const char *buf, size_t len)
{
	struct cw_outmsg m;
	size_t off = 0;

	while (cw_outbox_next(buf, len, &off, &m)) {
		char *queue = strndup(m.queue, m.queue_len), *tag = strndup(m.tag, m.tag_len);
		if (queue && tag)
			w->broker->ops->publish(w->broker, queue, m.priority, tag, m.env, m.env_len);
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

void cw_outcome_store(struct cw_worker *w, struct held *h, enum cw_state state, const char *type,
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

void cw_outcome_event(struct cw_worker *w, const struct held *h, const char *type, json_t *fields)
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
static void exc_event(struct cw_worker *w, const struct held *h, const char *type,
		      const char *exc_type, const char *msg, json_t *args)
{
	if (!cw_events_task_enabled(w->events))
		return;
	json_t *one = json_is_array(args) ? NULL : json_string(msg ? msg : "");
	char *e = cw_proto_exc_repr(exc_type, one ? one : args, 1000);
	char *tb = traceback_text(h, exc_type, msg);
	json_decref(one);
	cw_outcome_event(w, h, type, json_pack("{s:s,s:s}", "exception", e ? e : exc_type,
					       "traceback", tb ? tb : ""));
	free(e);
	free(tb);
}

static void revoked_event(struct cw_worker *w, const struct held *h, bool terminated, int signum,
			  bool expired)
{
	cw_outcome_event(w, h, "task-revoked",
			 json_pack("{s:b,s:o,s:b}", "terminated", terminated, "signum",
				   signum ? json_integer(signum) : json_null(), "expired", expired));
}

/* Acknowledge once: an early-acked task that is killed or times out is not acked again. */
static void ack(struct cw_worker *w, struct held *h)
{
	if (h->acked)
		return;
	h->acked = true;
	w->broker->ops->ack(w->broker, h->d);
}

void cw_outcome_revoked(struct cw_worker *w, struct held *h, bool expired)
{
	if (expired)
		cw_log(CW_LOG_WARNING, "consumer", "Discarding revoked task: %s[%s] (expired)",
		       h->req.task, h->req.id);
	else
		cw_log(CW_LOG_INFO, "consumer", "Discarding revoked task: %s[%s]", h->req.task,
		       h->req.id);
	cw_outcome_store(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions",
			 expired ? "expired" : "revoked", NULL);
	cw_metrics_task(w->metrics, h->req.task, CW_M_REVOKED, 1);
	revoked_event(w, h, false, 0, expired);
	ack(w, h);
	cw_held_release(w, h);
}

void cw_outcome_on_done(void *arg, int slot, const struct cw_outcome *o, const char *publish)
{
	struct cw_worker *w = arg;
	struct held *h = cw_reserve_finish(w->reserve, slot);

	if (!h)
		return;
	cw_metrics_runtime(w->metrics, h->req.task, o->runtime);
	cw_metrics_task(w->metrics, h->req.task, o->state == CW_STATE_SUCCESS ? CW_M_SUCCEEDED
						 : o->state == CW_STATE_RETRY ? CW_M_RETRIED : CW_M_FAILED, 1);
	for (int i = 0; i < o->ncounters && i < CW_OUTCOME_COUNTERS; i++)
		if (o->counters[i].value > 0)
			cw_metrics_task_counter(w->metrics, h->req.task, o->counters[i].name,
						(uint64_t)o->counters[i].value);
	if (o->state == CW_STATE_SUCCESS) {
		cw_log(CW_LOG_INFO, "task", "Task %s[%s] succeeded in %.6fs: %s", h->req.task, h->req.id,
		       o->runtime, o->result_repr);
		cw_outcome_event(w, h, "task-succeeded", json_pack("{s:s,s:f}", "result",
								   o->result_repr, "runtime",
								   o->runtime));
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
	cw_held_release(w, h);
	cw_consumer_update_credit(w);
}

void cw_outcome_on_event(void *arg, int slot, const char *type, const char *fields, size_t len)
{
	struct cw_worker *w = arg;
	struct held *h = cw_reserve_running(w->reserve, slot);
	struct cw_error err = {0};

	/* only task-* events about the task that slot runs; a child cannot speak for others */
	if (!h || strncmp(type, "task-", 5) || !cw_events_task_enabled(w->events))
		return;
	json_t *f = cw_json_loads(fields, len, &w->limits, &err);
	if (!json_is_object(f)) {
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s]: bad %s event from the pool dropped",
		       h->req.task, h->req.id, type);
		json_decref(f);
		return;
	}
	cw_outcome_event(w, h, type, f);
}

/* A FAILURE the master records for a lost task: stored, task-failed, counted. */
static void failed(struct cw_worker *w, struct held *h, const char *type, const char *module,
		   const char *msg, json_t *args)
{
	cw_outcome_store(w, h, CW_STATE_FAILURE, type, module, msg, args);
	exc_event(w, h, "task-failed", type, msg, args);
	cw_metrics_task(w->metrics, h->req.task, CW_M_FAILED, 1);
}

void cw_outcome_on_lost(void *arg, int slot, pid_t pid, int st, enum cw_lost_reason why)
{
	struct cw_worker *w = arg;
	struct held *h = cw_reserve_finish(w->reserve, slot);
	char msg[200];

	if (!h)
		return;
	if (h->terminated && why == CW_LOST_CRASH) {
		/* revoke(terminate=True): REVOKED TaskRevokedError('terminated'), acked */
		cw_log(CW_LOG_INFO, "pool", "Task %s[%s] terminated (pid %d, %s)", h->req.task,
		       h->req.id, (int)pid, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited");
		cw_outcome_store(w, h, CW_STATE_REVOKED, "TaskRevokedError", "celery.exceptions",
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
		failed(w, h, "SoftTimeLimitExceeded", "celery.exceptions", msg, NULL);
		ack(w, h);
	} else if (why == CW_LOST_TIMEOUT) {
		json_t *args = json_pack("[f]", h->hard);
		failed(w, h, "TimeLimitExceeded", "billiard.exceptions", NULL, args);
		json_decref(args);
		ack(w, h); /* task_acks_on_failure_or_timeout */
	} else if (why == CW_LOST_MEMORY) {
		snprintf(msg, sizeof(msg), "child RSS passed the limit of %ld KiB",
			 w->cfg->child_memory_limit);
		cw_log(CW_LOG_ERROR, "task", "Task %s[%s] killed: %s", h->req.task, h->req.id, msg);
		failed(w, h, "MemoryLimitExceeded", "cworker.exceptions", msg, NULL);
		ack(w, h);
	} else if (h->acks_late && h->reject_on_worker_lost) {
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s]: worker pid %d lost; requeued "
		       "(reject_on_worker_lost)", h->req.task, h->req.id, (int)pid);
		w->broker->ops->reject(w->broker, h->d, true);
		cw_metrics_task(w->metrics, h->req.task, CW_M_REJECTED, 1);
		cw_outcome_event(w, h, "task-rejected", json_pack("{s:b}", "requeue", true));
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
		failed(w, h, "WorkerLostError", "billiard.exceptions", msg, NULL);
		if (h->acks_late)
			ack(w, h);
	}
	cw_held_release(w, h);
	cw_consumer_update_credit(w);
}

bool cw_outcome_cancelled(struct cw_worker *w, struct held *h)
{
	bool back = h->acks_late;
	cw_outcome_event(w, h, "task-cancelled", NULL);
	if (back) {
		/*
		 * Celery neither acks nor rejects it: kombu gives every unacked
		 * message back when the channel closes (reject_on_worker_lost
		 * plays no part).  Given back now, not at the visibility timeout.
		 */
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s] cancelled by the cold shutdown; "
		       "message given back (acks_late)", h->req.task, h->req.id);
		w->broker->ops->restore(w->broker, h->d);
	} else {
		cw_log(CW_LOG_WARNING, "task", "Task %s[%s] cancelled by the cold shutdown; "
		       "acked when it started, so it is lost", h->req.task, h->req.id);
		cw_outcome_store(w, h, CW_STATE_RETRY, "Retry", "celery.exceptions",
				 "cancelled by Celery", NULL);
	}
	cw_held_release(w, h);
	return back;
}
