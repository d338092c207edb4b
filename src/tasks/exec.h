/*
 * The executor: running one task message (decode, look up, call, store the
 * result, collect follow-up messages) and what that run reports back to the
 * master.  Shared by prefork children and the solo pool.
 */
#ifndef CW_EXEC_H
#define CW_EXEC_H

#include <stdbool.h>
#include <signal.h>
#include <stddef.h>

#include "protocol/protocol.h"
#include "tasks/registry.h"

/*
 * Named counters a task reported with cw_task_count() (SUCCESS only).  The
 * outcome travels as bytes between processes, so the table is fixed: a few
 * names of [a-z0-9_], up to CW_COUNTER_NAME_MAX - 1 characters each.
 */
#define CW_OUTCOME_COUNTERS 4
#define CW_COUNTER_NAME_MAX 32

struct cw_counter {
	char name[CW_COUNTER_NAME_MAX];
	long value;
};

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
	int ncounters;           /* entries of counters[] in use */
	struct cw_counter counters[CW_OUTCOME_COUNTERS];
};

/* True if name is a valid counter name (1..31 characters of [a-z0-9_]). */
bool cw_counter_name_ok(const char *name);

struct cw_exec_env {
	const struct cw_registry *reg;
	struct cw_backend *backend;
	const char *hostname;
	bool result_extended;
	struct cw_proto_limits limits;
	volatile sig_atomic_t *cancel;   /* set when the task must stop (soft limit) */
	const char *default_queue;       /* where callbacks go when they name no queue */
	/* Celery's task_track_started for task (NULL = never) */
	bool (*track_started)(const void *arg, const char *task);
	const void *track_arg;
	/* a task event from inside a run (update_state); NULL = not sent */
	void (*emit)(void *arg, const char *type, const char *fields_json, size_t len);
	void *emit_arg;
	/* the task returned; its final result is about to be stored (NULL = not told) */
	void (*returned)(void *arg);
	void *returned_arg;
	/* once in each process that runs tasks, before its first task / when it ends */
	int (*process_init)(void);
	void (*process_exit)(void);
};

struct cw_outbox;

/*
 * Decode one envelope (or take the request the master packed, when packed
 * is not NULL), run its task, store the result.  Never fails: every
 * problem becomes a FAILURE outcome (and a stored FAILURE when the task id
 * is known).  Messages the run asks for (a retry, callbacks, the next
 * chain step, a chord body) are added to *ob for the master to publish.
 */
void cw_exec_message(const struct cw_exec_env *env, const char *raw, size_t len,
		     const char *packed, size_t packed_len, const char *queue,
		     struct cw_outcome *out, struct cw_outbox *ob);

/*
 * Call def's function with args/kwargs, binding them to its declared
 * parameters first (a TypeError failure when the call does not fit).  Used
 * for every task run, and by aliases calling their target.
 */
enum cw_task_status cw_exec_call(struct cw_task_ctx *ctx, const struct cw_task_def *def,
				 json_t *args, json_t *kwargs, json_t **result);

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
int cw_exec_store(const struct cw_exec_env *env, const struct cw_request *req, const char *queue,
		  struct cw_result_meta *m);

#endif
