/* Shared by the two envelope readers (envelope.c, envscan.c). */
#ifndef CW_PROTOCOL_ENVELOPE_INT_H
#define CW_PROTOCOL_ENVELOPE_INT_H

#include "protocol/protocol.h"

/*
 * env->body from the "body" string b[0..blen), base64-decoded when the
 * properties say so.  On failure env is cleared and the code returned.
 */
int cw_envelope_take_body(struct cw_envelope *env, const char *b, size_t blen, bool base64,
			  struct cw_error *err);

#endif
