/*
 * testmod: the task module tests/integration/test_modules.py builds out of
 * tree against the installed headers and loads with --task-module.  One task
 * per behaviour of the module ABI the test checks from Python Celery:
 * results, exceptions, retry, soft-limit cancellation, progress, declared
 * parameters, a crash, the life-cycle hooks and [module:testmod] settings.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cworker/module.h>

/*
 * Settings copied in configure.  Static buffers, not strdup(): configure runs in
 * the master, where no hook runs at the end to free them.
 */
static char greeting[256];      /* [module:testmod] greeting */
static char exit_marker[4096];  /* [module:testmod] exit_marker: a file exit() appends to */
static pid_t init_pid;      /* the process init() last ran in */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* add(a, b): a value result. */
static enum cw_task_status t_add(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				 json_t **result)
{
	json_t *a = cw_task_arg(ctx, 0), *b = cw_task_arg(ctx, 1);
	(void)args;
	(void)kwargs;
	if (!json_is_integer(a) || !json_is_integer(b))
		return cw_task_fail(ctx, "TypeError", NULL, "add(): a and b must be int");
	*result = json_integer(json_integer_value(a) + json_integer_value(b));
	return CW_TASK_SUCCESS;
}

/* bind(a, b=None, *, c, d=None): what the worker bound, with "missing" for left-out optionals. */
static enum cw_task_status t_bind(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	static const char *const names[] = {"a", "b", "c", "d"};
	json_t *out = json_object();
	(void)args;
	(void)kwargs;
	for (int i = 0; i < 4 && out; i++) {
		json_t *v = cw_task_arg(ctx, i);
		json_object_set_new(out, names[i], v ? json_incref(v) : json_string("missing"));
	}
	*result = out;
	return CW_TASK_SUCCESS;
}

/* raw(*args, **kwargs): no declared params, the call as it came. */
static enum cw_task_status t_raw(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				 json_t **result)
{
	*result = json_pack("{s:O,s:O,s:b}", "args", args, "kwargs", kwargs, "arg0_null",
			    cw_task_arg(ctx, 0) == NULL);
	return CW_TASK_SUCCESS;
}

/* fail_value(message): a Python builtin exception. */
static enum cw_task_status t_fail_value(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
					json_t **result)
{
	(void)args;
	(void)kwargs;
	(void)result;
	return cw_task_fail(ctx, "ValueError", NULL, "%s", json_string_value(cw_task_arg(ctx, 0)));
}

/* fail_custom(module, message): an exception class of the module's own. */
static enum cw_task_status t_fail_custom(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
					 json_t **result)
{
	struct cw_exc e = {.type = "QuotaExceeded"};
	(void)args;
	(void)kwargs;
	(void)result;
	snprintf(e.module, sizeof(e.module), "%s", json_string_value(cw_task_arg(ctx, 0)));
	snprintf(e.message, sizeof(e.message), "%s", json_string_value(cw_task_arg(ctx, 1)));
	return cw_task_raise(ctx, &e);
}

/* retry_until(n): retries until the request has been retried n times, returns retries. */
static enum cw_task_status t_retry_until(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
					 json_t **result)
{
	json_int_t n = json_integer_value(cw_task_arg(ctx, 0));
	(void)args;
	(void)kwargs;
	if (cw_task_retries(ctx) < n)
		return cw_task_retry(ctx, 0.05, -1, NULL, "retry %lld of %lld",
				     (long long)cw_task_retries(ctx) + 1, (long long)n);
	*result = json_integer(cw_task_retries(ctx));
	return CW_TASK_SUCCESS;
}

/* retry_max(max_retries): always retries; KeyError once max_retries is used up. */
static enum cw_task_status t_retry_max(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				       json_t **result)
{
	(void)args;
	(void)kwargs;
	(void)result;
	return cw_task_retry(ctx, 0.05, (int)json_integer_value(cw_task_arg(ctx, 0)), "KeyError",
			     "gave up after %lld retries", (long long)cw_task_retries(ctx));
}

/* loop(seconds): polls the soft limit every 10 ms; "finished" when it never comes. */
static enum cw_task_status t_loop(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	double end = now() + json_number_value(cw_task_arg(ctx, 0));
	long polls = 0;
	(void)args;
	(void)kwargs;
	while (now() < end) {
		if (cw_task_cancelled(ctx))
			return cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions",
					    "loop cancelled after %ld polls", polls);
		polls++;
		sleep_ms(10);
	}
	*result = json_string("finished");
	return CW_TASK_SUCCESS;
}

/* progress(steps, delay_ms): PROGRESS current/total after each step; returns steps. */
static enum cw_task_status t_progress(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				      json_t **result)
{
	long steps = (long)json_integer_value(cw_task_arg(ctx, 0));
	json_t *d = cw_task_arg(ctx, 1);
	long delay = d ? (long)json_integer_value(d) : 300;
	(void)args;
	(void)kwargs;
	for (long i = 1; i <= steps; i++) {
		sleep_ms(delay);
		cw_task_progress(ctx, i, steps);
	}
	*result = json_integer(steps);
	return CW_TASK_SUCCESS;
}

/* stage(name): a custom state with meta of our own, then a pause for the reader. */
static enum cw_task_status t_stage(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	(void)args;
	(void)kwargs;
	int rc = cw_task_update_state(ctx, "STAGED", json_pack("{s:O,s:i}", "stage",
							       cw_task_arg(ctx, 0), "pid",
							       (int)getpid()));
	sleep_ms(1500);
	*result = json_boolean(rc == 0);
	return CW_TASK_SUCCESS;
}

/* A pointer some code forgot to set: volatile, so the compiler keeps the store. */
static int *volatile unset_slot;

/* crash(): the executing process dies by SIGSEGV (a NULL write, as a real bug would). */
static enum cw_task_status t_crash(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	(void)args;
	(void)kwargs;
	(void)result;
	/* a sanitizer build of the worker reports SIGSEGV as its own bug: die plainly instead */
	signal(SIGSEGV, SIG_DFL);
	*unset_slot = 1;
	return cw_task_fail(ctx, "RuntimeError", NULL, "still alive after a NULL write");
}

/* whoami(): the request, and proof that init ran in this process with the settings. */
static enum cw_task_status t_whoami(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	(void)args;
	(void)kwargs;
	*result = json_pack("{s:s,s:s,s:I,s:s,s:i,s:i,s:s?}", "id", cw_task_id(ctx), "name",
			    cw_task_name(ctx), "retries", (json_int_t)cw_task_retries(ctx),
			    "hostname", cw_task_hostname(ctx), "pid", (int)getpid(), "init_pid",
			    (int)init_pid, "greeting", greeting[0] ? greeting : NULL);
	cw_log(CW_LOG_INFO, "testmod", "whoami ran in %d", (int)getpid());
	cw_task_count(ctx, "testmod_calls", 1);
	return CW_TASK_SUCCESS;
}

static int tm_configure(const struct cw_settings *s, char *err, size_t errlen)
{
	const char *g = cw_setting(s, "greeting"), *m = cw_setting(s, "exit_marker");
	const char *fail = cw_setting(s, "fail_configure");
	if (fail && *fail) {
		snprintf(err, errlen, "asked to fail: %s", fail);
		return -1;
	}
	if ((g && strlen(g) >= sizeof(greeting)) || (m && strlen(m) >= sizeof(exit_marker))) {
		snprintf(err, errlen, "greeting or exit_marker too long");
		return -1;
	}
	snprintf(greeting, sizeof(greeting), "%s", g ? g : "");
	snprintf(exit_marker, sizeof(exit_marker), "%s", m ? m : "");
	return 0;
}

static int tm_init(void)
{
	init_pid = getpid();
	return 0;
}

static void tm_exit(void)
{
	FILE *f = exit_marker[0] ? fopen(exit_marker, "a") : NULL;
	if (f) {
		fprintf(f, "exit %d\n", (int)getpid());
		fclose(f);
	}
}

static const struct cw_param p_add[] = {{"a", 0}, {"b", 0}, {NULL, 0}};
static const struct cw_param p_bind[] = {{"a", 0}, {"b", CW_PARAM_OPTIONAL},
					 {"c", CW_PARAM_KWONLY},
					 {"d", CW_PARAM_KWONLY | CW_PARAM_OPTIONAL}, {NULL, 0}};
static const struct cw_param p_message[] = {{"message", 0}, {NULL, 0}};
static const struct cw_param p_custom[] = {{"module", 0}, {"message", 0}, {NULL, 0}};
static const struct cw_param p_n[] = {{"n", 0}, {NULL, 0}};
static const struct cw_param p_max[] = {{"max_retries", 0}, {NULL, 0}};
static const struct cw_param p_seconds[] = {{"seconds", 0}, {NULL, 0}};
static const struct cw_param p_progress[] = {{"steps", 0}, {"delay_ms", CW_PARAM_OPTIONAL},
					     {NULL, 0}};
static const struct cw_param p_stage[] = {{"name", 0}, {NULL, 0}};
static const struct cw_param p_none[] = {{NULL, 0}};

#define TASK(n, f, p, d) {.abi_version = CW_ABI_VERSION, .name = n, .fn = f, .doc = d, .params = p}
static const struct cw_task_def defs[] = {
	TASK("testmod.add", t_add, p_add, "add(a, b)"),
	TASK("testmod.bind", t_bind, p_bind, "bind(a, b=None, *, c, d=None)"),
	TASK("testmod.raw", t_raw, NULL, "raw(*args, **kwargs)"),
	TASK("testmod.fail_value", t_fail_value, p_message, "fail_value(message): ValueError"),
	TASK("testmod.fail_custom", t_fail_custom, p_custom,
	     "fail_custom(module, message): module.QuotaExceeded"),
	TASK("testmod.retry_until", t_retry_until, p_n, "retry_until(n)"),
	TASK("testmod.retry_max", t_retry_max, p_max, "retry_max(max_retries): KeyError at the end"),
	TASK("testmod.loop", t_loop, p_seconds, "loop(seconds): polls cw_task_cancelled"),
	TASK("testmod.progress", t_progress, p_progress, "progress(steps, delay_ms=300)"),
	TASK("testmod.stage", t_stage, p_stage, "stage(name): custom state STAGED"),
	TASK("testmod.crash", t_crash, p_none, "crash(): SIGSEGV"),
	TASK("testmod.whoami", t_whoami, p_none, "whoami(): request, init pid, settings"),
};

static const struct cw_task_def *const tasks[] = {
	&defs[0], &defs[1], &defs[2], &defs[3], &defs[4], &defs[5], &defs[6], &defs[7], &defs[8],
	&defs[9], &defs[10], &defs[11], NULL,
};
_Static_assert(sizeof(tasks) / sizeof(tasks[0]) == sizeof(defs) / sizeof(defs[0]) + 1,
	       "tasks lists every definition");

CW_MODULE = {
	.abi_version = CW_ABI_VERSION,
	.size = sizeof(struct cw_module),
	.name = "testmod",
	.version = "0.0.1-test",
	.tasks = tasks,
	.configure = tm_configure,
	.init = tm_init,
	.exit = tm_exit,
};
