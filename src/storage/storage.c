/*
 * Storage: the backend table and the dispatch of cw_storage_get/put by the
 * scheme of the spec, plus the helpers the backends share (storage_int.h).
 * The backends live in local.c (files confined to roots), http.c (http(s)
 * reads) and s3.c (S3, SigV4); xfer.c runs their libcurl transfers.
 *
 * Error messages never carry credentials: URLs are shown without their
 * password, query and fragment, and curl's own messages are scrubbed of the
 * secrets handed to it.
 */
#include "storage/storage_int.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/url.h"

extern const struct cw_storage_ops cw_storage_local_ops;
extern const struct cw_storage_ops cw_storage_http_ops;
extern const struct cw_storage_ops cw_storage_s3_ops;

/* A new scheme: its file (listed in meson.build) and a row here.  Order does not matter: each
 * scheme is served by one backend. */
static const struct cw_storage_ops *const backends[] = {
	&cw_storage_local_ops,
	&cw_storage_http_ops,
	&cw_storage_s3_ops,
};

/* ---------------------------------------------------------------- helpers */

int cw_storage_buf_reserve(struct cw_storage_buf *b, size_t extra)
{
	size_t need, cap;
	unsigned char *p;

	if (extra > SIZE_MAX - 1 - b->len)
		return CW_ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return CW_OK;
	cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(b->p, cap);
	if (!p)
		return CW_ENOMEM;
	b->p = p;
	b->cap = cap;
	return CW_OK;
}

int cw_storage_buf_add(struct cw_storage_buf *b, const void *d, size_t n)
{
	if (cw_storage_buf_reserve(b, n))
		return CW_ENOMEM;
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = 0;
	return CW_OK;
}

int cw_storage_buf_take(struct cw_storage_buf *b, unsigned char **data, size_t *len)
{
	if (!b->p) {
		b->p = malloc(1);
		if (!b->p)
			return CW_ENOMEM;
		b->p[0] = 0;
	}
	*data = b->p;
	*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	return CW_OK;
}

char *cw_storage_cat3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	if (!s)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

size_t cw_storage_max(const struct cw_storage_conf *c)
{
	return c && c->max_download ? c->max_download : CW_STORAGE_DEFAULT_MAX_DOWNLOAD;
}

double cw_storage_timeout(const struct cw_storage_conf *c)
{
	if (!c || !(c->timeout > 0))
		return CW_STORAGE_DEFAULT_TIMEOUT;
	return c->timeout < 1e6 ? c->timeout : 1e6;
}

/* 0 = default; a negative value turns redirects off. */
long cw_storage_redirects(const struct cw_storage_conf *c)
{
	if (!c || !c->max_redirects)
		return CW_STORAGE_DEFAULT_REDIRECTS;
	return c->max_redirects < 0 ? 0 : c->max_redirects;
}

const char *cw_storage_nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

/* A URL fit for a message: no query or fragment (pre-signed URLs carry tokens there),
 * password replaced by "**". */
void cw_storage_url_for_msg(const char *url, char *out, size_t outsz)
{
	char tmp[512];
	size_t n = strcspn(url, "?#");

	snprintf(tmp, sizeof(tmp), "%.*s%s", (int)(n < 400 ? n : 400), url,
		 url[n] ? "?..." : (n >= 400 ? "..." : ""));
	cw_url_redact(tmp, out, outsz);
}

/* scheme "://" decides; anything without it is a local path (colons included). */
size_t cw_storage_scheme_len(const char *s)
{
	size_t n = 0;

	if (!isalpha((unsigned char)s[0]))
		return 0;
	while (isalnum((unsigned char)s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.')
		n++;
	if (strncmp(s + n, "://", 3))
		return 0;
	return n;
}

/* The backend serving spec's scheme, or NULL. */
static const struct cw_storage_ops *backend_for(const char *spec)
{
	size_t n = cw_storage_scheme_len(spec);

	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		for (const char *const *s = backends[i]->schemes; *s; s++)
			if (strlen(*s) == n && !strncasecmp(spec, *s, n))
				return backends[i];
	return NULL;
}

static int unsupported(const char *s, struct cw_error *err)
{
	size_t n = strcspn(s, ":");

	cw_error_set(err, CW_EINVAL, "unsupported scheme '%.*s' (use a path, file://, "
		     "http(s):// or s3://)", (int)(n < 32 ? n : 32), s);
	return CW_EINVAL;
}

/* ------------------------------------------------------------ entry points */

int cw_storage_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		   size_t *len, struct cw_error *err)
{
	const struct cw_storage_ops *ops;

	*data = NULL;
	*len = 0;
	if (!src || !*src) {
		cw_error_set(err, CW_EINVAL, "empty source");
		return CW_EINVAL;
	}
	ops = backend_for(src);
	if (!ops)
		return unsupported(src, err);
	return ops->get(c, src, data, len, err);
}

int cw_storage_put(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		   const char *content_type, struct cw_error *err)
{
	const struct cw_storage_ops *ops;

	if (!dst || !*dst) {
		cw_error_set(err, CW_EINVAL, "empty destination");
		return CW_EINVAL;
	}
	if (!data && len) {
		cw_error_set(err, CW_EINVAL, "no data");
		return CW_EINVAL;
	}
	ops = backend_for(dst);
	if (!ops)
		return unsupported(dst, err);
	return ops->put(c, dst, data, len, content_type, err);
}
