/*
 * A Lua script sent to Redis by its SHA1 (EVALSHA) rather than its text:
 * the hot scripts (take, ack, result store) run once per task, and EVAL
 * makes Redis hash and read the whole text each time.  The digest is
 * computed on first use.  A server that does not have the script (a
 * restart, SCRIPT FLUSH, a failover to a node that never saw it) answers
 * NOSCRIPT and changes nothing: the caller sends that one call again with
 * EVAL, which also caches the script for the next EVALSHA.
 */
#ifndef CW_SCRIPT_H
#define CW_SCRIPT_H

#include <stdbool.h>

struct cw_script {
	const char *text;
	char sha[41];   /* lowercase hex; "" until first use */
};

#define CW_SCRIPT(t) {(t), ""}

/* The script's SHA1 as Redis names it (computed once). */
const char *cw_script_sha(struct cw_script *s);
/* Is this error reply Redis saying it does not have the script? */
bool cw_script_missing(const char *err);

#endif
