/* Task registry: Celery task name -> C function.  Built before children fork. */
#ifndef CW_REGISTRY_H
#define CW_REGISTRY_H

#include <stdbool.h>
#include <signal.h>

#include "cworker/task.h"
#include "protocol/protocol.h"

struct cw_registry;

struct cw_registry *cw_registry_new(void);
void cw_registry_free(struct cw_registry *r);
/* Adds def (borrowed, must outlive the registry); CW_EINVAL on duplicate or bad ABI. */
int cw_registry_add(struct cw_registry *r, const struct cw_task_def *def);
const struct cw_task_def *cw_registry_find(const struct cw_registry *r, const char *name);
size_t cw_registry_count(const struct cw_registry *r);
const struct cw_task_def *cw_registry_at(const struct cw_registry *r, size_t i);
/* The built-in cworker.* tasks; diagnostic ones only when asked. */
int cw_tasks_register_builtin(struct cw_registry *r, bool diagnostic);

/* What executing one message produced, for the master's log and events. */
struct cw_outcome {
	enum cw_state state;     /* SUCCESS, FAILURE or RETRY */
	double retry_in;         /* RETRY: seconds until the new message is due */
	size_t publish_len;      /* bytes of a serialised cw_outbox that follow the outcome */
	double runtime;          /* seconds */
	char exc_type[128];
	char exc_message[512];   /* truncated for logs; the backend gets it whole */
	char result_repr[512];   /* truncated JSON of the result, for logs */
	long rss_kib;            /* the executing process's RSS after the task */
	long doc_pages;          /* pages a docconv task converted or rendered (SUCCESS only) */
	long ocr_pages;          /* ... of which went through OCR */
};

struct cw_exec_env {
	const struct cw_registry *reg;
	struct cw_backend *backend;
	const char *hostname;
	bool result_extended;
	struct cw_proto_limits limits;
	volatile sig_atomic_t *cancel;   /* set when the task must stop (soft limit) */
	const char *default_queue;       /* where callbacks go when they name no queue */
};

struct cw_outbox;

/*
 * Decode one envelope, run its task, store the result.  Never fails: every
 * problem becomes a FAILURE outcome (and a stored FAILURE when the task id
 * is known).  Messages the run asks for (a retry, callbacks, the next
 * chain step, a chord body) are added to *ob for the master to publish.
 */
void cw_exec_message(const struct cw_exec_env *env, const char *raw, size_t len,
		     const char *queue, struct cw_outcome *out, struct cw_outbox *ob);

/*
 * The envelope of a retry of the message raw: retries + 1, eta = now + countdown
 * (ISO-8601 with +00:00), delivery tag tag, no redelivered marks.  malloc'd.
 */
char *cw_exec_retry_envelope(const char *raw, size_t len, const struct cw_proto_limits *lim,
			     double eta, const char *tag, size_t *out_len);

/*
 * Store the state of a task the master handled itself (unknown, expired,
 * lost, timed out): m->task_id, group/parent and the extended fields are
 * filled from req when it is non-NULL.
 */
void cw_exec_store(const struct cw_exec_env *env, const struct cw_request *req, const char *queue,
		   struct cw_result_meta *m);

#endif
