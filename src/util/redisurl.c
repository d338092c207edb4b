/* Redis URLs: schemes, rediss:// query parameters, sentinel:// lists. */
#include "util/redisurl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Percent-decode src[0..n) into dst (kombu unquotes the ssl_* values). */
static void unquote(char *dst, size_t dstsz, const char *src, size_t n)
{
	size_t w = 0;
	for (size_t i = 0; i < n && w + 1 < dstsz; i++) {
		if (src[i] == '%' && i + 2 < n) {
			char hex[3] = {src[i + 1], src[i + 2], 0}, *end;
			long v = strtol(hex, &end, 16);
			if (*end == '\0') {
				dst[w++] = (char)v;
				i += 2;
				continue;
			}
		}
		dst[w++] = src[i] == '+' ? ' ' : src[i];
	}
	dst[w] = '\0';
}

static void take_query(struct cw_redis_url *u, const char *q)
{
	static const struct {
		const char *name;
		size_t off, size;
	} keys[] = {
		{"ssl_cert_reqs", offsetof(struct cw_redis_url, ssl_cert_reqs), 32},
		{"ssl_ca_certs", offsetof(struct cw_redis_url, ssl_ca_certs), 512},
		{"ssl_certfile", offsetof(struct cw_redis_url, ssl_certfile), 512},
		{"ssl_keyfile", offsetof(struct cw_redis_url, ssl_keyfile), 512},
	};
	while (q && *q) {
		size_t len = strcspn(q, "&"), klen = strcspn(q, "=&");
		for (size_t i = 0; klen < len && i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strlen(keys[i].name) == klen && !strncmp(q, keys[i].name, klen))
				unquote((char *)u + keys[i].off, keys[i].size, q + klen + 1,
					len - klen - 1);
		q += len;
		if (*q == '&')
			q++;
	}
}

/* One URL of a list, its query cut off (into *query when wanted). */
static int parse_one(const char *s, size_t n, struct cw_url *out, const char **query,
		     struct cw_error *err)
{
	char buf[2048];
	if (n >= sizeof(buf)) {
		cw_error_set(err, CW_EINVAL, "URL too long");
		return CW_EINVAL;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	/* the query may hold paths with '/': cut it before cw_url_parse looks for the db */
	char *q = strchr(buf, '?');
	if (q)
		*q = '\0';
	if (query)
		*query = q ? s + (q - buf) + 1 : NULL;
	return cw_url_parse(buf, out, err);
}

int cw_redis_url_parse(const char *s, struct cw_redis_url *u, struct cw_error *err)
{
	const char *query = NULL;
	size_t n0 = strcspn(s, ";");

	memset(u, 0, sizeof(*u));
	if (!strncmp(s, "sentinel://", 11)) {
		for (const char *p = s; *p;) {
			size_t n = strcspn(p, ";");
			if (n && u->nsentinels == CW_REDIS_MAX_SENTINELS) {
				cw_error_set(err, CW_EINVAL, "more than %d sentinels",
					     CW_REDIS_MAX_SENTINELS);
				return CW_EINVAL;
			}
			if (n) {
				struct cw_url *x = &u->sentinels[u->nsentinels];
				if (parse_one(p, n, x, NULL, err) != CW_OK)
					return CW_EINVAL;
				if (strcmp(x->scheme, "sentinel")) {
					cw_error_set(err, CW_EINVAL,
						     "every URL of a sentinel list must be sentinel://");
					return CW_EINVAL;
				}
				if (!x->port)
					x->port = 26379; /* kombu's SentinelTransport.default_port */
				if (!x->host[0])
					snprintf(x->host, sizeof(x->host), "127.0.0.1");
				u->nsentinels++;
			}
			p += n;
			if (*p == ';')
				p++;
		}
		if (!u->nsentinels) {
			cw_error_set(err, CW_EINVAL, "no sentinel in the URL");
			return CW_EINVAL;
		}
	} else if (strncmp(s, "redis://", 8) && strncmp(s, "rediss://", 9)) {
		return CW_ENOTFOUND;
	}
	if (parse_one(s, n0, &u->url, &query, err) != CW_OK)
		return CW_EINVAL;
	u->tls = !strcmp(u->url.scheme, "rediss");
	take_query(u, query);
	return CW_OK;
}

int cw_redis_url_tls(const struct cw_redis_url *u, const char *ca, const char *cert,
		     const char *key, const char *cert_reqs, struct cw_tls_opts *out,
		     struct cw_error *err)
{
	const char *reqs = u->ssl_cert_reqs[0] ? u->ssl_cert_reqs : cert_reqs;

	out->ca_certs = u->ssl_ca_certs[0] ? u->ssl_ca_certs : ca;
	out->certfile = u->ssl_certfile[0] ? u->ssl_certfile : cert;
	out->keyfile = u->ssl_keyfile[0] ? u->ssl_keyfile : key;
	out->verify = true; /* CERT_REQUIRED unless told otherwise */
	if (reqs && cw_tls_parse_cert_reqs(reqs, &out->verify) != CW_OK) {
		cw_error_set(err, CW_EINVAL,
			     "ssl_cert_reqs '%s' is not required, optional or none (CERT_*)", reqs);
		return CW_EINVAL;
	}
	return CW_OK;
}
