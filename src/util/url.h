/* Broker/backend URLs: parse redis://[user][:password@]host[:port][/db] and redact secrets. */
#ifndef CW_URL_H
#define CW_URL_H

#include "util/err.h"

struct cw_url {
	char scheme[16];
	char host[256];
	int port;         /* 0 = scheme default */
	char user[128];
	char password[256];
	int db;           /* redis database number */
	char path[256];   /* path after host, without the leading '/' */
};

/* Parse; CW_EINVAL with a message in *err when malformed. */
int cw_url_parse(const char *s, struct cw_url *u, struct cw_error *err) CW_MUST_CHECK;
/* Copy of s with any password replaced by "**"; writes into out (always NUL-terminated). */
void cw_url_redact(const char *s, char *out, size_t outsz);

#endif
