/*
 * cworker task API: what a task implementation sees.
 *
 * A task is a C function registered under a Celery task name.  It runs in a
 * pool child (or in the master with --pool solo), one task at a time, and
 * receives the decoded positional and keyword arguments as jansson values.
 *
 * Big integers (outside int64) arrive as values for which
 * cw_task_is_bigint() is true; they are passed through unchanged when
 * returned.  The ABI version is bumped whenever struct layouts or
 * function signatures in this header change.
 */
#ifndef CWORKER_TASK_H
#define CWORKER_TASK_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#define CW_TASK_ABI_VERSION 1

struct cw_task_ctx;

/*
 * Outcome of a task function.  On CW_TASK_SUCCESS *result holds a new
 * reference (NULL means JSON null).  On CW_TASK_FAILURE the function has
 * called cw_task_fail() first.
 */
enum cw_task_status {
	CW_TASK_SUCCESS = 0,
	CW_TASK_FAILURE = 1,
	CW_TASK_RETRY = 2,    /* returned by cw_task_retry() */
};

typedef enum cw_task_status (*cw_task_fn)(struct cw_task_ctx *ctx,
					  json_t *args, json_t *kwargs,
					  json_t **result);

struct cw_task_def {
	unsigned abi_version;      /* CW_TASK_ABI_VERSION */
	const char *name;          /* Celery task name, e.g. "docconv.convert" */
	cw_task_fn fn;
	const char *doc;           /* one line, shown by `cworker --list-tasks` */
	bool diagnostic;           /* registered only with --diagnostic-tasks */
};

/*
 * Record a failure.  exc_type is the Python exception class name
 * ("ValueError", "KeyError", or a cworker name such as "TaskError");
 * builtin names are raised by Python's AsyncResult.get() as the builtin
 * type.  exc_module may be NULL: "builtins" is used for Python builtin
 * exception names, "cworker.exceptions" otherwise.  Always returns
 * CW_TASK_FAILURE so a task can `return cw_task_fail(...)`.
 */
enum cw_task_status cw_task_fail(struct cw_task_ctx *ctx, const char *exc_type,
				 const char *exc_module, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

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

/* Task id, name and retry count of the running request. */
const char *cw_task_id(const struct cw_task_ctx *ctx);
const char *cw_task_name(const struct cw_task_ctx *ctx);
int64_t cw_task_retries(const struct cw_task_ctx *ctx);

/*
 * True once the soft time limit has passed (or the task was asked to stop).
 * Long-running task code polls this and returns
 * cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions", ...).
 */
bool cw_task_cancelled(const struct cw_task_ctx *ctx);

/*
 * Add n (> 0) to the task's counter named counter (1..31 characters of
 * [a-z0-9_]; others are ignored) when the task succeeds; the master exports
 * it as the Prometheus counter cworker_<counter>_total{task="..."}.  A run
 * reports up to 4 distinct counters; failed and retried runs report none.
 */
void cw_task_count(struct cw_task_ctx *ctx, const char *counter, long n);

/* Big integers preserved from the message text (see header comment). */
bool cw_task_is_bigint(const json_t *v);

#endif
