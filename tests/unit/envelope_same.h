/*
 * Does the task-queue reader (cw_proto_decode_task_envelope, which may scan)
 * read a text exactly as the tree reader (cw_proto_decode_envelope) does?
 * Shared by the unit tests and the message fuzz target.
 */
#ifndef CW_TEST_ENVELOPE_SAME_H
#define CW_TEST_ENVELOPE_SAME_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

static inline bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static inline bool same_err(int ra, const struct cw_error *ea, int rb, const struct cw_error *eb)
{
	return ra == rb && (ra == CW_OK || (ea->code == eb->code && !strcmp(ea->msg, eb->msg)));
}

static inline bool same_json(const json_t *a, const json_t *b)
{
	return (!a && !b) || (a && b && json_equal((json_t *)a, (json_t *)b));
}

static inline const char *same_requests(const struct cw_request *a, const struct cw_request *b)
{
	if (a->proto != b->proto || a->retries != b->retries || a->group_index != b->group_index ||
	    a->time_limit != b->time_limit || a->soft_time_limit != b->soft_time_limit ||
	    a->ignore_result != b->ignore_result || a->utc != b->utc)
		return "request numbers";
	const char *const sa[] = {a->id, a->task, a->root_id, a->parent_id, a->group, a->shadow,
				  a->origin, a->eta, a->expires, a->argsrepr, a->kwargsrepr,
				  a->reply_to, a->correlation_id};
	const char *const sb[] = {b->id, b->task, b->root_id, b->parent_id, b->group, b->shadow,
				  b->origin, b->eta, b->expires, b->argsrepr, b->kwargsrepr,
				  b->reply_to, b->correlation_id};
	for (size_t i = 0; i < sizeof(sa) / sizeof(sa[0]); i++)
		if (!same_str(sa[i], sb[i]))
			return "request strings";
	if (!same_json(a->args, b->args) || !same_json(a->kwargs, b->kwargs) ||
	    !same_json(a->embed, b->embed))
		return "request arguments";
	return NULL;
}

/*
 * NULL when both readers agree on buf (outcome, error, every envelope field,
 * the task name and id, the whole request), else what differs.  *scanned:
 * the scanner read it.
 */
static inline const char *envelope_readings_differ(const char *buf, size_t len,
						   const struct cw_proto_limits *lim,
						   bool *scanned)
{
	struct cw_envelope t, s;
	struct cw_error et = {0}, es = {0};
	const char *why = NULL;

	int rt = cw_proto_decode_envelope(buf, len, lim, &t, &et);
	int rs = cw_proto_decode_task_envelope(buf, len, lim, &s, &es);
	*scanned = rs == CW_OK && s.task != NULL;
	if (!same_err(rt, &et, rs, &es))
		return rt == CW_OK ? "envelope refused by the scanning reader only"
				   : "envelope outcome";
	if (rt != CW_OK)
		return NULL;
	if (!same_str(t.content_type, s.content_type) ||
	    !same_str(t.content_encoding, s.content_encoding) ||
	    !same_str(t.delivery_tag, s.delivery_tag) || !same_str(t.exchange, s.exchange) ||
	    !same_str(t.routing_key, s.routing_key) ||
	    !same_str(t.correlation_id, s.correlation_id) || !same_str(t.reply_to, s.reply_to) ||
	    t.priority != s.priority || t.redelivered != s.redelivered)
		why = "envelope fields";
	else if (t.body_len != s.body_len || memcmp(t.body, s.body, t.body_len) != 0 ||
		 s.body[s.body_len] != '\0')
		why = "body";
	if (!why) {
		char *nt = NULL, *it = NULL, *ns = NULL, *is = NULL;
		rt = cw_proto_peek_task(&t, lim, &nt, &it, &et);
		rs = cw_proto_peek_task(&s, lim, &ns, &is, &es);
		if (!same_err(rt, &et, rs, &es) || !same_str(nt, ns) || !same_str(it, is))
			why = "task name or id";
		free(nt);
		free(it);
		free(ns);
		free(is);
	}
	if (!why) {
		struct cw_request qt, qs;
		rt = cw_proto_decode_request(&t, lim, &qt, &et);
		rs = cw_proto_decode_request(&s, lim, &qs, &es);
		if (!same_err(rt, &et, rs, &es))
			why = "request outcome";
		else if (rt == CW_OK)
			why = same_requests(&qt, &qs);
		if (rt == CW_OK)
			cw_request_clear(&qt);
		if (rs == CW_OK)
			cw_request_clear(&qs);
	}
	cw_envelope_clear(&t);
	cw_envelope_clear(&s);
	return why;
}

#endif
