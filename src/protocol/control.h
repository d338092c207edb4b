/*
 * Remote-control (pidbox) requests: kombu/pidbox.py Mailbox._publish and
 * Node.handle_message.  Pure: bytes in, struct out.
 */
#ifndef CW_CONTROL_H
#define CW_CONTROL_H

#include <stdbool.h>

#include "protocol/protocol.h"

struct cw_control {
	json_t *root;               /* decoded body; owns everything below */
	const char *method;
	json_t *arguments;          /* object (empty when absent) */
	json_t *destination;        /* array of node names, or NULL = everyone */
	const char *pattern;        /* with matcher: glob (default) or pcre */
	const char *matcher;
	const char *reply_exchange; /* NULL when no reply is wanted */
	const char *reply_routing_key;
	const char *ticket;
	double expires;             /* envelope header "expires" (epoch seconds); 0 = none */
	long long clock;            /* envelope header "clock" (Lamport); 0 = none */
};

/* CW_ECONTENT / CW_EDECODE / CW_EFORMAT (no method) on failure; *c is then cleared. */
int cw_proto_decode_control(const struct cw_envelope *env, const struct cw_proto_limits *lim,
			    struct cw_control *c, struct cw_error *err) CW_MUST_CHECK;
void cw_control_clear(struct cw_control *c);
/* Is the request addressed to this node (destination list, or pattern + matcher)? */
bool cw_control_for_me(const struct cw_control *c, const char *hostname);

#endif
