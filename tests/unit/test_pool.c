/*
 * The pool seam: both kinds behind cw_pool_*, solo reporting a task's end
 * from the loop (never from inside submit), what solo refuses, task counters
 * travelling in the outcome (also across the prefork socket) and their
 * Prometheus families.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "envelope.h"
#include "http/metrics.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "protocol/protocol.h"

static enum cw_task_status t_count(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	(void)args;
	(void)kwargs;
	cw_task_count(ctx, "pages", 3);
	cw_task_count(ctx, "pages", 2);
	cw_task_count(ctx, "Bad-Name", 1);     /* refused: not [a-z0-9_] */
	cw_task_count(ctx, "zero", 0);         /* nothing to add: no slot */
	cw_task_count(ctx, "b", 1);
	cw_task_count(ctx, "c", 1);
	cw_task_count(ctx, "d", 1);
	cw_task_count(ctx, "e", 1);            /* a fifth name: dropped */
	*result = json_integer(7);
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_fail(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	(void)args;
	(void)kwargs;
	(void)result;
	cw_task_count(ctx, "pages", 9);
	return cw_task_fail(ctx, "ValueError", NULL, "no");
}

static const struct cw_task_def defs[] = {
	{CW_ABI_VERSION, "t.count", t_count, "counts", false, NULL},
	{CW_ABI_VERSION, "t.fail", t_fail, "fails", false, NULL},
};

struct seen {
	struct cw_loop *loop;
	bool in_submit;
	int done, idle, done_in_submit;
	struct cw_outcome o;
};

static void on_done(void *arg, int slot, const struct cw_outcome *o, const char *publish)
{
	struct seen *s = arg;
	(void)slot;
	(void)publish;
	s->done++;
	s->done_in_submit += s->in_submit;
	s->o = *o;
	cw_loop_stop(s->loop);
}

static void on_lost(void *arg, int slot, pid_t pid, int wstatus, enum cw_lost_reason why)
{
	(void)arg;
	(void)slot;
	(void)pid;
	(void)wstatus;
	(void)why;
	CHECK(!"a task was lost");
}

static void on_idle(void *arg)
{
	struct seen *s = arg;
	s->idle++;
}

static void give_up(struct cw_loop *loop, void *arg)
{
	(void)arg;
	cw_loop_stop(loop);
}

/* Submit one message and run the loop until on_done (or 10 s). */
static void run_one(struct cw_pool *p, struct seen *s, const char *task)
{
	char *raw = test_envelope(task, "[]", "{}");
	int slot = cw_pool_idle_slot(p);
	CHECK(raw && slot == 0);
	if (!raw)
		return;
	s->in_submit = true;
	CHECK(cw_pool_submit(p, slot, &(struct cw_job){.queue = "celery", .raw = raw, .len = strlen(raw)}) == CW_OK);
	s->in_submit = false;
	free(raw);
	CHECK(cw_pool_busy(p) == 1);
	CHECK(cw_pool_idle_slot(p) == -1);
	int before = s->done;
	uint64_t t = cw_loop_timer(s->loop, 10, give_up, NULL);
	cw_loop_run(s->loop);
	cw_loop_timer_cancel(s->loop, t);
	CHECK(s->done == before + 1);
	CHECK(s->done_in_submit == 0);
	CHECK(cw_pool_busy(p) == 0);
}

static long counter(const struct cw_outcome *o, const char *name)
{
	for (int i = 0; i < o->ncounters; i++)
		if (!strcmp(o->counters[i].name, name))
			return o->counters[i].value;
	return -1;
}

static void check_counted(const struct cw_outcome *o)
{
	CHECK(o->state == CW_STATE_SUCCESS);
	CHECK(!strcmp(o->result_repr, "7"));
	CHECK(o->ncounters == CW_OUTCOME_COUNTERS);
	CHECK(counter(o, "pages") == 5);
	CHECK(counter(o, "b") == 1 && counter(o, "c") == 1 && counter(o, "d") == 1);
	CHECK(counter(o, "e") == -1 && counter(o, "zero") == -1 && counter(o, "Bad-Name") == -1);
}

static void test_kind(const char *kind, struct cw_registry *reg)
{
	struct seen s = {.loop = cw_loop_new()};
	struct cw_exec_env env = {.reg = reg, .hostname = "test@host",
				  .limits = CW_PROTO_LIMITS_DEFAULT, .default_queue = "celery"};
	struct cw_pool_handler h = {.on_done = on_done, .on_lost = on_lost, .on_idle = on_idle,
				    .arg = &s};
	struct cw_pool *p = cw_pool_new(s.loop, kind, 1, &env, &h);
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(cw_pool_idle_slot(p) == -1);    /* nothing runs before start */
	CHECK(cw_pool_start(p) == CW_OK);
	CHECK(cw_pool_size(p) == 1 && cw_pool_slots(p) == 1);
	pid_t pids[4];
	CHECK(cw_pool_processes(p, pids, 4) == 1);
	CHECK(cw_pool_pid(p, 0) > 0);
	if (cw_pool_idle_slot(p) < 0) {       /* prefork: the child is up once forked */
		uint64_t t = cw_loop_timer(s.loop, 0.05, give_up, NULL);
		cw_loop_run(s.loop);
		cw_loop_timer_cancel(s.loop, t);
	}

	run_one(p, &s, "t.count");
	check_counted(&s.o);
	CHECK(s.idle >= 1);
	run_one(p, &s, "t.fail");
	CHECK(s.o.state == CW_STATE_FAILURE && !strcmp(s.o.exc_type, "ValueError"));
	CHECK(s.o.ncounters == 0);            /* counters describe successful work only */
	run_one(p, &s, "t.unknown");
	CHECK(s.o.state == CW_STATE_FAILURE && !strcmp(s.o.exc_type, "NotRegistered"));

	if (!strcmp(kind, "solo")) {
		CHECK(cw_pool_pid(p, 0) == getpid());
		CHECK(pids[0] == getpid());
		CHECK(cw_pool_grow(p, 1) == CW_EINVAL);
		CHECK(cw_pool_shrink(p, 1) == CW_EINVAL);
		CHECK(cw_pool_signal(p, 0, SIGUSR1) == CW_EINVAL);
		cw_pool_kill_slot(p, 0, CW_LOST_TIMEOUT);   /* no-op */
		CHECK(cw_pool_recycles(p, CW_RECYCLE_CRASH) == 0);
		/* a queued task a stop drops is never reported */
		char *raw = test_envelope("t.count", "[]", "{}");
		if (!raw)
			return;
		CHECK(cw_pool_submit(p, 0, &(struct cw_job){.queue = "celery", .raw = raw, .len = strlen(raw)}) == CW_OK);
		CHECK(cw_pool_submit(p, 0, &(struct cw_job){.queue = "celery", .raw = raw, .len = strlen(raw)}) == CW_EINVAL);
		free(raw);
		int done = s.done;
		cw_pool_stop(p, 1.0);
		uint64_t t = cw_loop_timer(s.loop, 0.05, give_up, NULL);
		cw_loop_run(s.loop);
		cw_loop_timer_cancel(s.loop, t);
		/* cppcheck-suppress knownConditionTrueFalse ; the loop ran callbacks */
		CHECK(s.done == done);
	} else {
		CHECK(cw_pool_pid(p, 0) != getpid());
		cw_pool_stop(p, 2.0);
	}
	cw_pool_free(p);
	cw_loop_free(s.loop);
}

static void test_metrics_counters(void)
{
	struct cw_metrics *m = cw_metrics_new(10, "1.0", "redis");
	struct cw_mbuf b = {0};

	CHECK(cw_metrics_declare_counter(m, "docconv_pages", "Pages, the docconv way."));
	CHECK(!cw_metrics_declare_counter(m, "tasks", "clashes with cworker_tasks_total"));
	CHECK(!cw_metrics_declare_counter(m, "Upper", NULL));
	cw_metrics_task_counter(m, "docconv.convert", "docconv_pages", 3);
	cw_metrics_task_counter(m, "docconv.convert", "docconv_pages", 1);
	cw_metrics_task_counter(m, "t.count", "pages", 5);
	cw_metrics_task_counter(m, "t.count", "child_recycles", 5);     /* refused */
	cw_metrics_task_counter(m, "t.count", "a_name_of_thirty_two_characters_", 1);
	cw_metrics_task_counter(NULL, "x", "pages", 1);                 /* --http off */
	struct cw_metrics_sample smp = {.broker_up = true};
	cw_metrics_render(m, &smp, &b);
	CHECK(b.p && strstr(b.p, "# HELP cworker_docconv_pages_total Pages, the docconv way.\n"
			    "# TYPE cworker_docconv_pages_total counter\n"
			    "cworker_docconv_pages_total{task=\"docconv.convert\"} 4\n"));
	CHECK(b.p && strstr(b.p, "# TYPE cworker_pages_total counter\n"
			    "cworker_pages_total{task=\"t.count\"} 5\n"));
	CHECK(b.p && !strstr(b.p, "child_recycles_total{task"));
	CHECK(b.p && !strstr(b.p, "thirty_two"));
	/* counters sit between the time limit hits and the runtime histogram, as before */
	CHECK(b.p && strstr(b.p, "cworker_task_time_limit_hits_total") <
		     strstr(b.p, "cworker_docconv_pages_total") &&
	      strstr(b.p, "cworker_pages_total") < strstr(b.p, "# HELP cworker_task_runtime"));
	cw_mbuf_free(&b);
	cw_metrics_free(m);
}

int main(void)
{
	struct cw_registry *reg = cw_registry_new();
	for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++)
		CHECK(cw_registry_add(reg, &defs[i]) == CW_OK);
	CHECK(cw_pool_new(NULL, "threads", 1, NULL, NULL) == NULL);
	test_kind("solo", reg);
	test_kind("prefork", reg);
	test_metrics_counters();
	cw_registry_free(reg);
	return check_summary();
}
