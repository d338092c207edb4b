/*
 * A Lua script sent to Redis by its SHA1 (EVALSHA) rather than its text:
 * the hot scripts (take, ack, result store) run once per task, and EVAL
 * makes Redis read and hash the whole text each time.  The digest is the
 * one Redis answers to SCRIPT LOAD, asked once per process (hashing here
 * would initialise OpenSSL's digest machinery, about 2 MiB per process).
 * Until it is known the script goes as EVAL.  A server that does not have
 * the script (a restart, SCRIPT FLUSH, a failover to a node that never saw
 * it) answers NOSCRIPT and changes nothing: the caller sends that call
 * again with EVAL, which also caches the script for the next EVALSHA.
 */
#ifndef CW_SCRIPT_H
#define CW_SCRIPT_H

#include <stdbool.h>
#include <stddef.h>

struct cw_script {
	const char *text;
	char sha[41];   /* lowercase hex from SCRIPT LOAD; "" until then */
	bool loading;   /* a SCRIPT LOAD is out */
	bool refused;   /* SCRIPT LOAD got an error (an ACL): always EVAL */
};

#define CW_SCRIPT(t) {(t), "", false, false}

/* The script's digest, or NULL until a SCRIPT LOAD answered. */
const char *cw_script_sha(const struct cw_script *s);
/* Ask SCRIPT LOAD now?  Not while one is out, once known, or after a refusal. */
bool cw_script_should_load(const struct cw_script *s);
/*
 * SCRIPT LOAD's reply: error (Redis refused it) stops asking for good; the
 * digest str/len is kept; a lost reply (str NULL) lets a later call ask again.
 */
void cw_script_loaded(struct cw_script *s, bool error, const char *str, size_t len);
/* Is this error reply Redis saying it does not have the script? */
bool cw_script_missing(const char *err);

#endif
