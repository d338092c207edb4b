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

/*
 * Bind parameter `pos`/`name` the way Python does: positional first, then
 * keyword; both at once is a TypeError.  Returns a borrowed value or NULL
 * after recording the failure (when required).
 */
static json_t *param(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs, size_t pos,
		     const char *name, bool required, const char *fn)
{
	json_t *a = pos < json_array_size(args) ? json_array_get(args, pos) : NULL;
	json_t *k = json_object_get(kwargs, name);
	if (a && k) {
		cw_task_fail(ctx, "TypeError", NULL, "%s() got multiple values for argument '%s'", fn, name);
		return NULL;
	}
	if (!a && !k && required)
		cw_task_fail(ctx, "TypeError", NULL, "%s() missing 1 required positional argument: '%s'",
			     fn, name);
	return a ? a : k;
}

/* Reject arguments beyond the signature, as Python would. */
static bool arity(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs, size_t n,
		  const char *const *names, const char *fn)
{
	if (json_array_size(args) > n) {
		cw_task_fail(ctx, "TypeError", NULL, "%s() takes %zu positional arguments but %zu were given",
			     fn, n, json_array_size(args));
		return false;
	}
	const char *key;
	json_t *v;
	json_object_foreach(kwargs, key, v) {
		bool ok = false;
		for (size_t i = 0; i < n; i++)
			ok |= !strcmp(key, names[i]);
		if (!ok) {
			cw_task_fail(ctx, "TypeError", NULL, "%s() got an unexpected keyword argument '%s'",
				     fn, key);
			return false;
		}
	}
	return true;
}

static enum cw_task_status t_noop(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	if (!arity(ctx, args, kwargs, 0, NULL, "noop"))
		return CW_TASK_FAILURE;
	*result = NULL;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_echo(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	static const char *const names[] = {"value"};
	if (!arity(ctx, args, kwargs, 1, names, "echo"))
		return CW_TASK_FAILURE;
	json_t *v = param(ctx, args, kwargs, 0, "value", true, "echo");
	if (!v)
		return CW_TASK_FAILURE;
	*result = json_incref(v);
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_add(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				 json_t **result)
{
	static const char *const names[] = {"a", "b"};
	if (!arity(ctx, args, kwargs, 2, names, "add"))
		return CW_TASK_FAILURE;
	json_t *a = param(ctx, args, kwargs, 0, "a", true, "add");
	json_t *b = a ? param(ctx, args, kwargs, 1, "b", true, "add") : NULL;
	if (!a || !b)
		return CW_TASK_FAILURE;
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

static bool seconds_arg(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs, const char *fn,
			double *out)
{
	static const char *const names[] = {"seconds", "value"};
	/* sleep(seconds, value=None) also takes the value it returns */
	if (!arity(ctx, args, kwargs, strcmp(fn, "sleep") ? 1 : 2, names, fn))
		return false;
	json_t *v = param(ctx, args, kwargs, 0, "seconds", true, fn);
	if (!v)
		return false;
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
	if (!seconds_arg(ctx, args, kwargs, "sleep", &secs))
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
	json_t *value = param(ctx, args, kwargs, 1, "value", false, "sleep");
	*result = value ? json_incref(value) : NULL;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_getpid(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	if (!arity(ctx, args, kwargs, 0, NULL, "getpid"))
		return CW_TASK_FAILURE;
	*result = json_integer(getpid());
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_fail(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	static const char *const names[] = {"exc_type", "message"};
	(void)result;
	if (!arity(ctx, args, kwargs, 2, names, "fail"))
		return CW_TASK_FAILURE;
	json_t *t = param(ctx, args, kwargs, 0, "exc_type", false, "fail");
	json_t *m = param(ctx, args, kwargs, 1, "message", false, "fail");
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
	if (!seconds_arg(ctx, args, kwargs, "spin", &secs))
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
	static const char *const names[] = {"mib", "seconds", "leak"};
	if (!arity(ctx, args, kwargs, 3, names, "alloc"))
		return CW_TASK_FAILURE;
	json_t *m = param(ctx, args, kwargs, 0, "mib", true, "alloc");
	json_t *s = m ? param(ctx, args, kwargs, 1, "seconds", false, "alloc") : NULL;
	if (!m)
		return CW_TASK_FAILURE;
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
	json_t *leak = param(ctx, args, kwargs, 2, "leak", false, "alloc");
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
	static const char *const names[] = {"n"};
	if (!arity(ctx, args, kwargs, 1, names, "retry_until"))
		return CW_TASK_FAILURE;
	json_t *n = param(ctx, args, kwargs, 0, "n", true, "retry_until");
	if (!n)
		return CW_TASK_FAILURE;
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
	static const char *const names[] = {"max_retries", "exc_type"};
	(void)result;
	if (!arity(ctx, args, kwargs, 2, names, "retry_max"))
		return CW_TASK_FAILURE;
	json_t *m = param(ctx, args, kwargs, 0, "max_retries", true, "retry_max");
	json_t *e = m ? param(ctx, args, kwargs, 1, "exc_type", false, "retry_max") : NULL;
	if (!m)
		return CW_TASK_FAILURE;
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
	if (json_array_size(args) || json_object_size(kwargs))
		return cw_task_fail(ctx, "TypeError", NULL, "backend_cleanup() takes no arguments");
	if (cw_backend_cleanup(cw_task_backend(ctx), &deleted, &err) != CW_OK)
		return cw_task_fail(ctx, "OperationalError", "cworker.exceptions", "%s", err.msg);
	*result = NULL;
	return CW_TASK_SUCCESS;
}

#define TASK(n, f, d, diag) {CW_ABI_VERSION, n, f, d, diag, NULL}
static const struct cw_task_def builtin[] = {
	TASK("cworker.noop", t_noop, "Do nothing; returns None", false),
	TASK("celery.backend_cleanup", t_backend_cleanup,
	     "backend_cleanup(): delete expired rows of a database result backend", false),
	TASK("cworker.echo", t_echo, "echo(value): return value unchanged", false),
	TASK("cworker.add", t_add, "add(a, b): a + b (numbers, strings, lists)", false),
	TASK("cworker.sleep", t_sleep, "sleep(seconds, value=None): sleep (honouring soft time limits), return value", false),
	TASK("cworker.getpid", t_getpid, "getpid(): process id of the executing process", false),
	TASK("cworker.fail", t_fail, "fail(exc_type, message): fail with that exception", false),
	TASK("cworker.spin", t_spin, "spin(seconds): busy CPU, ignores soft limits", true),
	TASK("cworker.crash", t_crash, "crash(): the executing process dies by SIGSEGV", true),
	TASK("cworker.retry_until", t_retry_until, "retry_until(n): retry until retries == n, return n", true),
	TASK("cworker.retry_max", t_retry_max, "retry_max(max_retries, exc_type=None): always retry", true),
	TASK("cworker.alloc", t_alloc, "alloc(mib, seconds, leak=False): hold mib MiB resident", true),
};

int cw_tasks_register_builtin(struct cw_registry *r, bool diagnostic)
{
	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
		if (builtin[i].diagnostic && !diagnostic)
			continue;
		int rc = cw_registry_add(r, &builtin[i]);
		if (rc)
			return rc;
	}
	return CW_OK;
}
