/*
 * Opening an AMQP connection (rabbitmq-c), shared by the AMQP transport and
 * the rpc:// result backend: URL -> target (host, port, vhost, credentials,
 * TLS), then socket, TLS, timeouts and login.
 */
#ifndef CW_AMQP_CONN_H
#define CW_AMQP_CONN_H

#include <stdbool.h>

#include <amqp.h>

#include "util/err.h"
#include "util/url.h"

struct cw_amqp_target {
	struct cw_url url;          /* host and port filled in (5672, or 5671 with TLS) */
	char vhost[256];            /* "/" for an empty path or "//" */
	char redacted[512];         /* the URL without its password, for logs */
	bool tls, verify;
	const char *ca, *cert, *key; /* PEM files (borrowed), NULL = none */
	int heartbeat;              /* seconds, 0 = off */
	double connect_timeout;     /* TCP + TLS + login */
};

/*
 * amqp://, amqps:// or pyamqp:// URL into *t (of a list "a;b", the first) (TLS from amqps:// or force_tls;
 * verify on, no files, heartbeat 0, 4 s timeout: the caller adjusts).
 */
int cw_amqp_target_parse(const char *url, bool force_tls, struct cw_amqp_target *t,
			 struct cw_error *err) CW_MUST_CHECK;

/*
 * A logged-in connection, or NULL with *err (TLS: the certificate is checked
 * against the host name, or for an IP literal against its IP addresses): CW_EIO when the broker cannot be
 * reached (worth retrying quietly), CW_EINVAL for unusable TLS files,
 * CW_EPROTO when the broker refused the login.
 */
amqp_connection_state_t cw_amqp_connect(const struct cw_amqp_target *t, int frame_max,
					double rpc_timeout, struct cw_error *err);

#endif
