/*
 * Storage backend for http(s) URLs: whole-object reads through libcurl,
 * following up to max_redirects redirects.  Writes are refused.
 */
#include "storage/xfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The password of scheme://user:password@host/..., for scrubbing (NULL if none). */
static char *url_password(const char *url)
{
	const char *p = strstr(url, "://"), *host_end, *at = NULL, *colon;

	if (!p)
		return NULL;
	p += 3;
	host_end = p + strcspn(p, "/?#");
	for (const char *q = p; q < host_end; q++)
		if (*q == '@')
			at = q;
	if (!at)
		return NULL;
	colon = memchr(p, ':', (size_t)(at - p));
	if (!colon)
		return NULL;
	return strndup(colon + 1, (size_t)(at - colon - 1));
}

static int http_get(const struct cw_storage_conf *c, const char *url, unsigned char **data,
		    size_t *len, struct cw_error *err)
{
	struct cw_xfer x;
	char shown[CW_STORAGE_MSG_URL_MAX], what[CW_STORAGE_MSG_URL_MAX + 8];
	char *pw = url_password(url);
	long redirs = cw_storage_redirects(c);
	int rc;

	cw_storage_url_for_msg(url, shown, sizeof(shown));
	snprintf(what, sizeof(what), "GET %s", shown);
	rc = cw_xfer_init(&x, c, url, cw_storage_max(c), err);
	if (rc)
		goto out;
	if (cw_curl.easy_setopt(x.h, CURLOPT_FOLLOWLOCATION, redirs ? 1L : 0L) ||
	    cw_curl.easy_setopt(x.h, CURLOPT_MAXREDIRS, redirs)) {
		cw_error_set(err, CW_ENOMEM, "cannot set curl options");
		rc = CW_ENOMEM;
		goto out;
	}
	rc = cw_xfer_run(&x, c, what, false, pw, NULL, err);
	if (!rc && cw_storage_buf_take(&x.body, data, len)) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		rc = CW_ENOMEM;
	}
out:
	cw_xfer_free(&x);
	free(pw);
	return rc;
}

static int http_put(const struct cw_storage_conf *c, const char *dst, const void *data,
		    size_t len, const char *content_type, struct cw_error *err)
{
	char shown[CW_STORAGE_MSG_URL_MAX];

	(void)c;
	(void)data;
	(void)len;
	(void)content_type;
	cw_storage_url_for_msg(dst, shown, sizeof(shown));
	cw_error_set(err, CW_EINVAL, "%s: http(s) outputs are not supported", shown);
	return CW_EINVAL;
}

static const char *const http_schemes[] = { "http", "https", NULL };

const struct cw_storage_ops cw_storage_http_ops = {
	.name = "http",
	.schemes = http_schemes,
	.get = http_get,
	.put = http_put,
};
