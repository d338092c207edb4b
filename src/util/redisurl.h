/*
 * Redis URLs as kombu and Celery read them, for the transport and the
 * result backend alike: redis://, rediss:// (TLS) with the ssl_* query
 * parameters, and sentinel://h1:p1;sentinel://h2:p2 lists.
 */
#ifndef CW_REDISURL_H
#define CW_REDISURL_H

#include <stdbool.h>

#include "util/err.h"
#include "util/tls.h"
#include "util/url.h"

#define CW_REDIS_MAX_SENTINELS 16

struct cw_redis_url {
	struct cw_url url;         /* the (first) URL without its query: credentials and db */
	bool tls;                  /* rediss:// */
	int nsentinels;            /* sentinel://: how many; url.host/port is the first */
	struct cw_url sentinels[CW_REDIS_MAX_SENTINELS];
	/* query parameters, percent-decoded; "" when absent */
	char ssl_cert_reqs[32], ssl_ca_certs[512], ssl_certfile[512], ssl_keyfile[512];
};

/* Parse; CW_ENOTFOUND when the scheme is not a Redis one, CW_EINVAL with a message. */
int cw_redis_url_parse(const char *s, struct cw_redis_url *u, struct cw_error *err) CW_MUST_CHECK;
/*
 * The TLS options to use: each query parameter of the URL, else the
 * setting (ca, cert, key, cert_reqs; any may be NULL), else verification on
 * and the system's CAs.  Strings point into u or the settings.
 */
int cw_redis_url_tls(const struct cw_redis_url *u, const char *ca, const char *cert,
		     const char *key, const char *cert_reqs, struct cw_tls_opts *out,
		     struct cw_error *err) CW_MUST_CHECK;

#endif
