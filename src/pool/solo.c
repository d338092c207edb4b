/*
 * The solo pool: one slot, tasks run in the master process itself.
 * cw_pool_submit() only queues the message; the task runs from a zero-delay
 * loop timer and reports on_done from there, so the caller sees the same
 * order of events as with prefork (submit returns, then the task ends).
 * The loop stops while a task runs: no soft or hard time limits, no
 * signals, no recycling (Celery's solo pool cannot enforce them either).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop/loop.h"
#include "pool/pool.h"
#include "pool/pool_ops.h"
#include "tasks/canvas.h"
#include "util/err.h"

struct solo {
	struct cw_loop *loop;
	const struct cw_exec_env *env;
	struct cw_pool_handler h;
	pid_t pid;               /* the master, once started */
	bool busy;               /* a message is queued or running */
	bool inited;             /* the modules' init hooks ran in this process */
	uint64_t timer;          /* pending run of the queued message */
	char *queue, *raw;       /* the queued message (copies) */
	size_t len;
};

static void drop_message(struct solo *s)
{
	free(s->queue);
	free(s->raw);
	s->queue = s->raw = NULL;
	s->len = 0;
}

/* update_state from the task: the master is this process, so hand the event straight over. */
static void solo_emit(void *arg, const char *type, const char *fields, size_t len)
{
	struct solo *s = arg;
	if (s->h.on_event)
		s->h.on_event(s->h.arg, 0, type, fields, len);
}

static void run_cb(struct cw_loop *loop, void *arg)
{
	/* the soft limit never fires here: nothing runs the loop during the task */
	static volatile sig_atomic_t never;
	struct solo *s = arg;
	struct cw_exec_env env = *s->env;
	struct cw_outcome o;
	struct cw_outbox ob = {0};
	(void)loop;

	s->timer = 0;
	env.cancel = &never;
	env.emit = solo_emit;
	env.emit_arg = s;
	cw_exec_message(&env, s->raw, s->len, NULL, 0, s->queue, &o, &ob);
	drop_message(s);
	o.publish_len = ob.len;
	s->busy = false;
	s->h.on_done(s->h.arg, 0, &o, ob.buf);
	cw_outbox_free(&ob);
	if (s->h.on_idle)
		s->h.on_idle(s->h.arg);
}

static void cancel_run(struct solo *s)
{
	if (s->timer)
		cw_loop_timer_cancel(s->loop, s->timer);
	s->timer = 0;
}

static void *solo_create(struct cw_loop *loop, int n, const struct cw_exec_env *env,
			 const struct cw_pool_handler *h)
{
	struct solo *s = calloc(1, sizeof(*s));
	(void)n;
	if (!s)
		return NULL;
	s->loop = loop;
	s->env = env;
	s->h = *h;
	return s;
}

static void solo_destroy(void *self)
{
	struct solo *s = self;
	if (s->inited && s->env->process_exit)
		s->env->process_exit();
	cancel_run(s);
	drop_message(s);
	free(s);
}

static int solo_start(void *self)
{
	struct solo *s = self;
	/* the master runs the tasks: it is the process the modules' init hooks are for */
	if (s->env->process_init && s->env->process_init() != CW_OK)
		return CW_EIO;
	s->inited = true;
	s->pid = getpid();
	return CW_OK;
}

static int solo_idle_slot(const void *self)
{
	const struct solo *s = self;
	return s->pid > 0 && !s->busy ? 0 : -1;
}

static int solo_busy(const void *self)
{
	const struct solo *s = self;
	return s->busy;
}

static int solo_size(const void *self)
{
	(void)self;
	return 1;
}

static int solo_processes(const void *self, pid_t *pids, int max)
{
	const struct solo *s = self;
	if (max < 1 || s->pid <= 0)
		return 0;
	pids[0] = s->pid;
	return 1;
}

static pid_t solo_pid(const void *self, int slot)
{
	const struct solo *s = self;
	return slot == 0 ? s->pid : -1;
}

static long solo_rss_kib(const void *self, int slot)
{
	const struct solo *s = self;
	return slot == 0 && s->pid > 0 ? cw_proc_rss_kib(s->pid) : 0;
}

static int solo_submit(void *self, int slot, const struct cw_job *job)
{
	/* report_return: the store runs in the master's own turn, nothing to overlap;
	 * packed: the envelope is decoded again when the task runs (solo is for debugging) */
	struct solo *s = self;
	if (slot != 0 || s->busy || s->pid <= 0)
		return CW_EINVAL;
	/* the caller's message may go away before the timer fires (cold shutdown) */
	s->queue = strdup(job->queue);
	s->raw = malloc(job->len + 1);
	if (!s->queue || !s->raw) {
		drop_message(s);
		return CW_ENOMEM;
	}
	memcpy(s->raw, job->raw, job->len);
	s->raw[job->len] = '\0';
	s->len = job->len;
	/*
	 * Not run now even when the timer cannot be armed: the caller relies on
	 * submit returning before on_done.  CW_ENOMEM makes it log the task and
	 * record it as lost (WorkerLostError), and the slot stays free.
	 */
	s->timer = cw_loop_timer(s->loop, 0, run_cb, s);
	if (!s->timer) {
		drop_message(s);
		return CW_ENOMEM;
	}
	s->busy = true;
	return CW_OK;
}

static void solo_reap(void *self)
{
	/* no pool processes; collect whatever a task may have left behind */
	(void)self;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void solo_stop(void *self, double wait)
{
	/* a task still queued is dropped unacknowledged, as a killed child's would be */
	(void)wait;
	cancel_run(self);
}

static void solo_kill(void *self)
{
	solo_stop(self, 0);
}

const struct cw_pool_ops cw_pool_solo_ops = {
	.name = "solo",
	.create = solo_create,
	.destroy = solo_destroy,
	.start = solo_start,
	.idle_slot = solo_idle_slot,
	.busy = solo_busy,
	.size = solo_size,
	.slots = solo_size,
	.processes = solo_processes,
	.pid = solo_pid,
	.rss_kib = solo_rss_kib,
	.submit = solo_submit,
	.reap = solo_reap,
	.stop = solo_stop,
	.kill = solo_kill,
};
