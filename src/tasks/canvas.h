/*
 * What happens after a task ends, beyond storing its result: the embed of
 * protocol v2 (callbacks, errbacks, chain, chord), as Celery's worker does
 * it in celery/app/trace.py and the Redis backend's on_chord_part_return.
 *
 * Messages to publish are collected in an outbox; in prefork children the
 * outbox travels back to the master with the outcome, and the master
 * publishes (children never talk to the broker).
 */
#ifndef CW_CANVAS_H
#define CW_CANVAS_H

#include <stdbool.h>
#include <stddef.h>

#include "protocol/protocol.h"
#include "tasks/exec.h"

/* Serialised list of messages: [u32 len, bytes] x 4 (queue, tag, priority, envelope) per message. */
struct cw_outbox {
	char *buf;
	size_t len, cap;
	bool lost;        /* a message could not be added (ENOMEM) */
};

struct cw_outmsg {
	const char *queue, *tag, *env;
	size_t queue_len, tag_len, env_len;
	int priority;
};

int cw_outbox_add(struct cw_outbox *o, const char *queue, const char *tag, int priority,
		  const char *env, size_t len);
/* Next message of a serialised outbox at *off; false at the end or on malformed bytes. */
bool cw_outbox_next(const char *buf, size_t len, size_t *off, struct cw_outmsg *m);
void cw_outbox_free(struct cw_outbox *o);

/*
 * After req ended in state m->state (its result already stored):
 *  SUCCESS  -> callbacks(retval), next chain step(retval), chord part
 *  FAILURE  -> chord part, errbacks(task_id)
 *  REVOKED  -> chord part
 * retval: the success value (borrowed, may be NULL for null).
 * Errors are logged; they never change the task's own state.
 */
void cw_canvas_after(const struct cw_exec_env *env, const struct cw_request *req,
		     const struct cw_result_meta *m, json_t *retval, struct cw_outbox *ob);

#endif
