/*
 * Built-in cworker.* tasks: used by tests, examples and benchmarks, and as
 * the smallest examples of the task API.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "tasks/exec_cancel.h"
#include "tasks/registry.h"
#include "cw_build.h"
#include "cworker/module.h"

/* Declared parameters (the worker binds every call before the task runs). */
static const struct cw_param p_none[] = {{NULL, 0}};
static const struct cw_param p_echo[] = {{"value", 0}, {NULL, 0}};
static const struct cw_param p_add[] = {{"a", 0}, {"b", 0}, {NULL, 0}};
static const struct cw_param p_sleep[] = {{"seconds", 0}, {"value", CW_PARAM_OPTIONAL}, {NULL, 0}};
static const struct cw_param p_spin[] = {{"seconds", 0}, {NULL, 0}};
static const struct cw_param p_fail[] = {{"exc_type", CW_PARAM_OPTIONAL},
					 {"message", CW_PARAM_OPTIONAL}, {NULL, 0}};
static const struct cw_param p_alloc[] = {{"mib", 0}, {"seconds", CW_PARAM_OPTIONAL},
					  {"leak", CW_PARAM_OPTIONAL}, {NULL, 0}};
static const struct cw_param p_retry_until[] = {{"n", 0}, {NULL, 0}};
static const struct cw_param p_retry_max[] = {{"max_retries", 0}, {"exc_type", CW_PARAM_OPTIONAL},
					      {NULL, 0}};

static enum cw_task_status t_noop(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	(void)ctx;
	(void)args;
	(void)kwargs;
	*result = NULL;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_echo(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	(void)args;
	(void)kwargs;
	*result = json_incref(cw_task_arg(ctx, 0));
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_add(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				 json_t **result)
{
	json_t *a = cw_task_arg(ctx, 0), *b = cw_task_arg(ctx, 1);
	(void)args;
	(void)kwargs;
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b), s;
		if (!__builtin_add_overflow(x, y, &s)) {
			*result = json_integer(s);
			return CW_TASK_SUCCESS;
		}
		/* the exact sum of two int64 values fits in 128 bits: print it */
		__int128 big = (__int128)x + (__int128)y;
		char digits[48], *p = digits + sizeof(digits) - 1;
		bool neg = big < 0;
		unsigned __int128 u = neg ? (unsigned __int128)(-big) : (unsigned __int128)big;
		*p = '\0';
		do {
			*--p = (char)('0' + (int)(u % 10));
			u /= 10;
		} while (u);
		if (neg)
			*--p = '-';
		*result = cw_json_bigint(p);
		return CW_TASK_SUCCESS;
	}
	if (json_is_number(a) && json_is_number(b)) {
		*result = json_real(json_number_value(a) + json_number_value(b));
		return CW_TASK_SUCCESS;
	}
	if (json_is_string(a) && json_is_string(b) && !cw_json_is_bigint(a) && !cw_json_is_bigint(b)) {
		size_t la = json_string_length(a), lb = json_string_length(b);
		char *s = malloc(la + lb + 1);
		if (!s)
			return cw_task_fail(ctx, "MemoryError", NULL, "add");
		memcpy(s, json_string_value(a), la);
		memcpy(s + la, json_string_value(b), lb);
		*result = json_stringn_nocheck(s, la + lb);
		free(s);
		return CW_TASK_SUCCESS;
	}
	if (json_is_array(a) && json_is_array(b)) {
		*result = json_copy(a);
		json_array_extend(*result, b);
		return CW_TASK_SUCCESS;
	}
	return cw_task_fail(ctx, "TypeError", NULL,
			    "unsupported operand types for cworker.add (numbers within int64 or "
			    "float, strings or lists)");
}

/* The bound `seconds` parameter: a non-negative number. */
static bool seconds_arg(struct cw_task_ctx *ctx, const char *fn, double *out)
{
	json_t *v = cw_task_arg(ctx, 0);
	if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0) {
		cw_task_fail(ctx, "ValueError", NULL, "%s(): seconds must be a non-negative number", fn);
		return false;
	}
	*out = json_number_value(v);
	return true;
}

static enum cw_task_status t_sleep(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	double secs;
	(void)args;
	(void)kwargs;
	if (!seconds_arg(ctx, "sleep", &secs))
		return CW_TASK_FAILURE;
	double end = cw_now() + secs;
	/* sleep in short slices so a soft time limit is noticed within 10 ms */
	for (;;) {
		if (cw_task_cancelled(ctx))
			return cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions",
					    "SoftTimeLimitExceeded()");
		double left = end - cw_now();
		if (left <= 0)
			break;
		double d = fmin(left, 0.01);
		struct timespec ts = {0, (long)(d * 1e9)};
		nanosleep(&ts, NULL);
	}
	json_t *value = cw_task_arg(ctx, 1);
	*result = value ? json_incref(value) : NULL;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_getpid(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	(void)ctx;
	(void)args;
	(void)kwargs;
	*result = json_integer(getpid());
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_fail(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	json_t *t = cw_task_arg(ctx, 0), *m = cw_task_arg(ctx, 1);
	(void)args;
	(void)kwargs;
	(void)result;
	const char *type = json_is_string(t) ? json_string_value(t) : "Exception";
	const char *msg = json_is_string(m) ? json_string_value(m) : "";
	/* a class name: letters, digits, '_' and '.' only */
	bool ok = *type != '\0';
	for (const char *p = type; *p; p++)
		ok &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.';
	if (!ok)
		return cw_task_fail(ctx, "ValueError", NULL, "fail(): invalid exception type name");
	return cw_task_fail(ctx, type, NULL, "%s", msg);
}

static enum cw_task_status t_spin(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	double secs;
	(void)args;
	(void)kwargs;
	if (!seconds_arg(ctx, "spin", &secs))
		return CW_TASK_FAILURE;
	/* burns CPU and never looks at the cancel flag: only a hard limit stops it */
	volatile unsigned long x = 0;
	double end = cw_now() + secs;
	while (cw_now() < end)
		for (int i = 0; i < 100000; i++)
			x += (unsigned long)i;
	(void)x;
	*result = NULL;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_alloc(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	json_t *m = cw_task_arg(ctx, 0), *s = cw_task_arg(ctx, 1);
	(void)args;
	(void)kwargs;
	if (!json_is_integer(m) || json_integer_value(m) < 0 || json_integer_value(m) > 1 << 20)
		return cw_task_fail(ctx, "ValueError", NULL, "alloc(): mib must be 0..1048576");
	double hold = json_is_number(s) ? json_number_value(s) : 0;
	size_t n = (size_t)json_integer_value(m) << 20;
	char *p = malloc(n ? n : 1);
	if (!p)
		return cw_task_fail(ctx, "MemoryError", NULL, "alloc(): cannot allocate %zu bytes", n);
	/* touch every page so the memory is resident, a little at a time */
	double end = cw_now() + hold;
	for (size_t off = 0; off < n; off += 4096)
		p[off] = (char)off;
	while (cw_now() < end && !cw_task_cancelled(ctx)) {
		struct timespec ts = {0, 10000000L};
		nanosleep(&ts, NULL);
	}
	/* leak=True keeps the memory (a leaky task, what max-memory-per-child is for) */
	json_t *leak = cw_task_arg(ctx, 2);
	if (json_is_true(leak)) {
		/* kept reachable on purpose: the process "leaks" until it is recycled */
		static void *kept[64];
		static size_t nkept;
		if (nkept < sizeof(kept) / sizeof(kept[0]))
			kept[nkept++] = p;
		else
			free(p);
	} else {
		free(p);
	}
	*result = json_integer(json_integer_value(m));
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_retry_until(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
					 json_t **result)
{
	json_t *n = cw_task_arg(ctx, 0);
	(void)args;
	(void)kwargs;
	if (!json_is_integer(n) || json_integer_value(n) < 0)
		return cw_task_fail(ctx, "ValueError", NULL, "retry_until(): n must be >= 0");
	if (cw_task_retries(ctx) < json_integer_value(n))
		return cw_task_retry(ctx, 0.05, -1, NULL, "retries %lld < %lld",
				     (long long)cw_task_retries(ctx), (long long)json_integer_value(n));
	*result = json_integer(json_integer_value(n));
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_retry_max(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				       json_t **result)
{
	json_t *m = cw_task_arg(ctx, 0), *e = cw_task_arg(ctx, 1);
	(void)args;
	(void)kwargs;
	(void)result;
	if (!json_is_integer(m))
		return cw_task_fail(ctx, "ValueError", NULL, "retry_max(): max_retries must be an int");
	return cw_task_retry(ctx, 0.05, (int)json_integer_value(m),
			     json_is_string(e) ? json_string_value(e) : NULL, "always retries");
}

static enum cw_task_status t_crash(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	(void)ctx;
	(void)args;
	(void)kwargs;
	(void)result;
	signal(SIGSEGV, SIG_DFL);
	raise(SIGSEGV);
	abort();
}

/*
 * celery.backend_cleanup, which celery beat sends daily: delete expired rows
 * of a database result backend (Redis keys expire by themselves).
 */
static enum cw_task_status t_backend_cleanup(struct cw_task_ctx *ctx, json_t *args,
					     json_t *kwargs, json_t **result)
{
	struct cw_error err = {0};
	long deleted = 0;
	(void)args;
	(void)kwargs;
	if (cw_backend_cleanup(cw_task_backend(ctx), &deleted, &err) != CW_OK)
		return cw_task_fail(ctx, "OperationalError", "cworker.exceptions", "%s", err.msg);
	*result = NULL;
	return CW_TASK_SUCCESS;
}

#define TASK(n, f, d, diag, p) {CW_ABI_VERSION, n, f, d, diag, p}
static const struct cw_task_def builtin[] = {
	TASK("cworker.noop", t_noop, "Do nothing; returns None", false, p_none),
	TASK("celery.backend_cleanup", t_backend_cleanup,
	     "backend_cleanup(): delete expired rows of a database result backend", false, p_none),
	TASK("cworker.echo", t_echo, "echo(value): return value unchanged", false, p_echo),
	TASK("cworker.add", t_add, "add(a, b): a + b (numbers, strings, lists)", false, p_add),
	TASK("cworker.sleep", t_sleep, "sleep(seconds, value=None): sleep (honouring soft time limits), return value", false,
	     p_sleep),
	TASK("cworker.getpid", t_getpid, "getpid(): process id of the executing process", false, p_none),
	TASK("cworker.fail", t_fail, "fail(exc_type, message): fail with that exception", false, p_fail),
	TASK("cworker.spin", t_spin, "spin(seconds): busy CPU, ignores soft limits", true, p_spin),
	TASK("cworker.crash", t_crash, "crash(): the executing process dies by SIGSEGV", true, NULL),
	TASK("cworker.retry_until", t_retry_until, "retry_until(n): retry until retries == n, return n", true,
	     p_retry_until),
	TASK("cworker.retry_max", t_retry_max, "retry_max(max_retries, exc_type=None): always retry", true,
	     p_retry_max),
	TASK("cworker.alloc", t_alloc, "alloc(mib, seconds, leak=False): hold mib MiB resident", true, p_alloc),
};

static const struct cw_task_def *const builtin_ptrs[] = {
	&builtin[0], &builtin[1], &builtin[2], &builtin[3], &builtin[4], &builtin[5], &builtin[6],
	&builtin[7], &builtin[8], &builtin[9], &builtin[10], &builtin[11], NULL,
};
_Static_assert(sizeof(builtin_ptrs) / sizeof(builtin_ptrs[0]) ==
	       sizeof(builtin) / sizeof(builtin[0]) + 1, "builtin_ptrs lists every built-in task");

/* The cworker.* tasks, loaded as the first built-in module. */
const struct cw_module cw_builtin_module = {
	.abi_version = CW_ABI_VERSION, .size = sizeof(struct cw_module), .name = "cworker",
	.version = CW_VERSION, .tasks = builtin_ptrs,
};
