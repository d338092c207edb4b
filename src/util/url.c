#include "util/url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int copy_part(char *dst, size_t dstsz, const char *src, size_t n)
{
	if (n >= dstsz)
		return -1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

/* Percent-decode in place (passwords may contain %40 and friends). */
static void pct_decode(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '%' && r[1] && r[2]) {
			char hex[3] = {r[1], r[2], 0};
			char *end;
			long v = strtol(hex, &end, 16);
			if (*end == '\0') {
				*w++ = (char)v;
				r += 2;
				continue;
			}
		}
		*w++ = *r;
	}
	*w = '\0';
}

int cw_url_parse(const char *s, struct cw_url *u, struct cw_error *err)
{
	const char *p, *auth_end, *hostp, *path;
	char port[16];

	memset(u, 0, sizeof(*u));
	p = strstr(s, "://");
	if (!p || p == s || copy_part(u->scheme, sizeof(u->scheme), s, (size_t)(p - s))) {
		cw_error_set(err, CW_EINVAL, "not a URL (expected scheme://...)");
		return CW_EINVAL;
	}
	p += 3;
	path = strchr(p, '/');
	if (!path)
		path = p + strlen(p);
	/* userinfo is everything up to the last '@' before the path */
	auth_end = NULL;
	for (const char *q = p; q < path; q++)
		if (*q == '@')
			auth_end = q;
	hostp = p;
	if (auth_end) {
		const char *colon = memchr(p, ':', (size_t)(auth_end - p));
		const char *uend = colon ? colon : auth_end;
		if (copy_part(u->user, sizeof(u->user), p, (size_t)(uend - p)) ||
		    (colon && copy_part(u->password, sizeof(u->password), colon + 1,
					(size_t)(auth_end - colon - 1)))) {
			cw_error_set(err, CW_EINVAL, "URL credentials too long");
			return CW_EINVAL;
		}
		pct_decode(u->user);
		pct_decode(u->password);
		hostp = auth_end + 1;
	}
	const char *colon = NULL;
	if (*hostp == '[') { /* [::1]:port */
		const char *rb = memchr(hostp, ']', (size_t)(path - hostp));
		if (!rb) {
			cw_error_set(err, CW_EINVAL, "URL has an unterminated IPv6 address");
			return CW_EINVAL;
		}
		if (copy_part(u->host, sizeof(u->host), hostp + 1, (size_t)(rb - hostp - 1)))
			goto toolong;
		if (rb + 1 < path && rb[1] == ':')
			colon = rb + 1;
	} else {
		colon = memchr(hostp, ':', (size_t)(path - hostp));
		if (copy_part(u->host, sizeof(u->host), hostp,
			      (size_t)((colon ? colon : path) - hostp)))
			goto toolong;
	}
	if (colon) {
		char *end;
		if (copy_part(port, sizeof(port), colon + 1, (size_t)(path - colon - 1)))
			goto badport;
		errno = 0;
		long v = strtol(port, &end, 10);
		if (errno || *end || end == port || v < 1 || v > 65535)
			goto badport;
		u->port = (int)v;
	}
	if (*path == '/')
		path++;
	if (copy_part(u->path, sizeof(u->path), path, strlen(path)))
		goto toolong;
	if (u->path[0]) {
		char *end;
		/* a query string after the db number is ignored */
		long v = strtol(u->path, &end, 10);
		if (end != u->path && (*end == '\0' || *end == '?') && v >= 0 && v < 100000)
			u->db = (int)v;
		else if (strncmp(u->scheme, "redis", 5) == 0 && u->path[0] != '?') {
			cw_error_set(err, CW_EINVAL, "redis URL database must be a number");
			return CW_EINVAL;
		}
	}
	return CW_OK;
toolong:
	cw_error_set(err, CW_EINVAL, "URL part too long");
	return CW_EINVAL;
badport:
	cw_error_set(err, CW_EINVAL, "URL port is not a number in 1..65535");
	return CW_EINVAL;
}

static void redact_one(const char *s, char *out, size_t outsz);

void cw_url_redact(const char *s, char *out, size_t outsz)
{
	/* a failover list "amqp://a;amqp://b": every URL of it */
	size_t w = 0;
	out[0] = '\0';
	for (;;) {
		const char *semi = strchr(s, ';');
		char one[1024], red[1024];
		snprintf(one, sizeof(one), "%.*s", semi ? (int)(semi - s) : (int)strlen(s), s);
		redact_one(one, red, sizeof(red));
		int r = snprintf(out + w, outsz - w, "%s%s", w ? ";" : "", red);
		if (r < 0 || (size_t)r >= outsz - w || !semi)
			return;
		w += (size_t)r;
		s = semi + 1;
	}
}

static void redact_one(const char *s, char *out, size_t outsz)
{
	const char *p = strstr(s, "://");
	const char *path, *at = NULL, *colon;

	snprintf(out, outsz, "%s", s);
	if (!p)
		return;
	p += 3;
	path = strchr(p, '/');
	if (!path)
		path = p + strlen(p);
	for (const char *q = p; q < path; q++)
		if (*q == '@')
			at = q;
	if (!at)
		return;
	colon = memchr(p, ':', (size_t)(at - p));
	if (!colon)
		return;
	snprintf(out, outsz, "%.*s:**%s", (int)(colon - s), s, at);
}
