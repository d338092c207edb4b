/*
 * cworker public API: what a task sees.
 *
 * A task is a C function registered under a Celery task name.  It runs in a
 * pool child (or in the master with --pool solo), one task at a time, and
 * receives the decoded positional and keyword arguments as jansson values.
 * Everything a task may call is declared in this header and in log.h; a
 * task module (module.h) is built against these headers only.
 *
 * Memory: args and kwargs are borrowed for the call.  On CW_TASK_SUCCESS
 * *result holds a new reference the worker takes (NULL means None); a
 * *result left set on failure or retry is released by the worker.
 * Strings returned by cw_task_* stay valid until the task function returns.
 *
 * Big integers (outside int64) arrive as values for which
 * cw_task_is_bigint() is true; they are passed through unchanged when
 * returned.  CW_ABI_VERSION is bumped whenever a struct layout or a
 * function signature in these headers changes incompatibly.
 */
#ifndef CWORKER_TASK_H
#define CWORKER_TASK_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cworker/log.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CW_ABI_VERSION 2
/* kept for code written against version 1 of this header */
#define CW_TASK_ABI_VERSION CW_ABI_VERSION

struct cw_task_ctx;

enum cw_task_status {
	CW_TASK_SUCCESS = 0,
	CW_TASK_FAILURE = 1,  /* returned by cw_task_fail() / cw_task_raise() */
	CW_TASK_RETRY = 2,    /* returned by cw_task_retry() */
};

typedef enum cw_task_status (*cw_task_fn)(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
					  json_t **result);

/*
 * A declared parameter.  With params set, the worker binds each call the way
 * Python binds a call to `def task(p0, p1=..., *, k0, k1=...)` before the
 * task runs, and fails it with Python's TypeError text when the call does not
 * fit (missing, unexpected or duplicated arguments, too many positional
 * ones); the task then reads its values with cw_task_arg().
 */
struct cw_param {
	const char *name;
	unsigned flags;
};
#define CW_PARAM_OPTIONAL 0x1u   /* has a default: may be left out */
#define CW_PARAM_KWONLY 0x2u     /* keyword-only (declared after `*`) */

struct cw_task_def {
	unsigned abi_version;      /* CW_ABI_VERSION */
	const char *name;          /* Celery task name, e.g. "docconv.convert" */
	cw_task_fn fn;
	const char *doc;           /* one line, shown by `cworker --list-tasks` */
	bool diagnostic;           /* registered only with --diagnostic-tasks */
	/* parameters, ended by {NULL, 0}; NULL: the task takes args/kwargs as they come */
	const struct cw_param *params;
};

/*
 * The value bound to declared parameter i (0-based, in declaration order):
 * borrowed, NULL when an optional parameter was left out.  A None passed
 * explicitly is JSON null, not NULL.  NULL for a task without params.
 */
json_t *cw_task_arg(const struct cw_task_ctx *ctx, int i);

/*
 * Record a failure.  exc_type is the Python exception class name
 * ("ValueError", "KeyError", or a cworker name such as "DocumentError");
 * builtin names are raised by Python's AsyncResult.get() as the builtin
 * type.  exc_module may be NULL: "builtins" is used for Python builtin
 * exception names, "cworker.exceptions" otherwise.  Always returns
 * CW_TASK_FAILURE so a task can `return cw_task_fail(...)`.
 */
enum cw_task_status cw_task_fail(struct cw_task_ctx *ctx, const char *exc_type,
				 const char *exc_module, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* An exception described in a buffer, e.g. by cw_task_read(); module "" = as cw_task_fail. */
struct cw_exc {
	char type[64];
	char module[64];
	char message[1024];
};
enum cw_task_status cw_task_raise(struct cw_task_ctx *ctx, const struct cw_exc *e);

/*
 * Ask for the task to run again later, as Celery's Task.retry(): the same
 * task id and arguments are sent again with retries + 1 and an ETA of now +
 * countdown seconds; the state becomes RETRY.  When the request has already
 * been retried max_retries times (max_retries < 0: unlimited), the task
 * fails instead: with exc_type/message when exc_type is given (Celery
 * re-raises the exception passed to retry), else with
 * celery.exceptions.MaxRetriesExceededError.  Returns the status the task
 * function must return.
 */
enum cw_task_status cw_task_retry(struct cw_task_ctx *ctx, double countdown, int max_retries,
				  const char *exc_type, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* The running request: task id, task name, retries so far, group id (NULL if none), worker. */
const char *cw_task_id(const struct cw_task_ctx *ctx);
const char *cw_task_name(const struct cw_task_ctx *ctx);
int64_t cw_task_retries(const struct cw_task_ctx *ctx);
const char *cw_task_group(const struct cw_task_ctx *ctx);
const char *cw_task_hostname(const struct cw_task_ctx *ctx);

/*
 * Soft time limit.  cw_task_cancelled() turns true once the limit has passed
 * (SIGUSR1 from the master); long-running code polls it and returns
 * cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions", ...).
 * Code that polls a flag of its own (a library's abort cookie) can poll the
 * flag cw_task_cancel_flag() returns instead.
 */
bool cw_task_cancelled(const struct cw_task_ctx *ctx);
volatile sig_atomic_t *cw_task_cancel_flag(struct cw_task_ctx *ctx);
/*
 * Around one call that cannot poll in time (a huge image decode, OCR layout
 * analysis): while inside, the soft limit also stores 1 into *abort (may be
 * NULL) from the signal handler, and when the call has not returned within
 * 100 ms after the limit, the child gives the task up: it exits, the task
 * ends FAILURE SoftTimeLimitExceeded and a new child takes the slot.
 */
void cw_task_uninterruptible_begin(struct cw_task_ctx *ctx, volatile int *abort);
void cw_task_uninterruptible_end(struct cw_task_ctx *ctx);

/*
 * Progress, as Celery's Task.update_state(state=..., meta=...): stores the
 * custom state with meta (a JSON object, stolen; NULL = {}) in the result
 * backend, so AsyncResult.state / .info show it, and sends the task event
 * `task-<state in lower case>` with the meta's fields, so Flower and
 * celery.events.state show it.  Returns 0, or -1 when it could not be stored
 * (the task goes on).
 */
int cw_task_update_state(struct cw_task_ctx *ctx, const char *state, json_t *meta);
/*
 * update_state("PROGRESS", {"current": current, "total": total}), at most
 * a few times a second (calls in between are skipped, except the one that
 * reaches total).
 */
void cw_task_progress(struct cw_task_ctx *ctx, long current, long total);

/*
 * Add n (> 0) to the task's counter named counter (1..31 characters of
 * [a-z0-9_]; others are ignored) when the task succeeds; the master exports
 * it as the Prometheus counter cworker_<counter>_total{task="..."}.  A run
 * reports up to 4 distinct counters; failed and retried runs report none.
 */
void cw_task_count(struct cw_task_ctx *ctx, const char *counter, long n);

/*
 * Objects through the worker's storage: a path under the configured roots
 * (docconv_roots) or file:///abs, http(s)://... (read only), s3://bucket/key.
 * read: *data is malloc'd (the caller frees it), NUL-terminated, *len excludes
 * the NUL.  write: local writes are atomic.  0, or -1 with *e set to the
 * exception Celery users would see (FileNotFoundError, PermissionError,
 * cworker.exceptions.ResourceLimit or StorageError); messages never carry
 * credentials.
 */
int cw_task_read(struct cw_task_ctx *ctx, const char *src, unsigned char **data, size_t *len,
		 struct cw_exc *e);
int cw_task_write(struct cw_task_ctx *ctx, const char *dst, const void *data, size_t len,
		  const char *content_type, struct cw_exc *e);

/* Big integers preserved from the message text (see header comment), and making one. */
bool cw_task_is_bigint(const json_t *v);
json_t *cw_task_bigint(const char *digits);

#ifdef __cplusplus
}
#endif

#endif
