/*
 * Document store URLs (docstore.h), without libpq: linked into the worker
 * with the docconv descriptor (its configure hook checks database_url) and
 * into cworker-docconv.so with the store.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docstore.h"

static void __attribute__((format(printf, 3, 4)))
url_error(struct cw_docstore_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* postgresql://rest for libpq from the accepted spellings; NULL when not one of them. */
char *cw_docstore_libpq_url(const char *url)
{
	static const char *const forms[] = {"db+postgresql://", "db+postgresql+", "postgresql://",
					    "postgres://"};
	char *out = NULL;
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (strncmp(url, forms[i], strlen(forms[i])))
			continue;
		const char *rest = strstr(url, "://");
		if (!rest || asprintf(&out, "postgresql%s", rest) < 0)
			return NULL;
		return out;
	}
	return NULL;
}

int cw_docstore_check_url(const char *url, struct cw_docstore_error *err)
{
	char *u = url ? cw_docstore_libpq_url(url) : NULL;
	if (!u) {
		char red[512];
		cw_docstore_redact(url ? url : "", red, sizeof(red));
		url_error(err, CW_DOCSTORE_EINVAL,
			  "database_url '%.180s' is not a postgresql:// or db+postgresql:// URL", red);
		return CW_DOCSTORE_EINVAL;
	}
	free(u);
	return CW_DOCSTORE_OK;
}

/*
 * The URL for messages, passwords masked: the userinfo's (scheme://user:**@host)
 * and libpq's ?password=... / &password=... query parameter.
 */
void cw_docstore_redact(const char *url, char *out, size_t outsz)
{
	const char *auth = strstr(url, "://");
	const char *at = NULL, *colon = NULL, *query = strchr(url, '?');
	size_t n = 0;

	if (auth) {
		auth += 3;
		/* up to the path: a password may hold '?', '#' or '@' (the last '@' ends it) */
		size_t hostlen = strcspn(auth, "/");
		for (const char *p = auth; p < auth + hostlen; p++)
			if (*p == '@')
				at = p;
		if (at)
			colon = memchr(auth, ':', (size_t)(at - auth));
	}
	if (query && at && query < at)
		query = strchr(at, '?');
	for (const char *p = url; *p && n + 1 < outsz;) {
		if (p == colon) {
			n += (size_t)snprintf(out + n, outsz - n, ":**");
			p = at;
			continue;
		}
		if (query && p > query && (p[-1] == '?' || p[-1] == '&') &&
		    !strncmp(p, "password=", 9)) {
			n += (size_t)snprintf(out + n, outsz - n, "password=**");
			p += strcspn(p, "&");
			continue;
		}
		out[n++] = *p++;
	}
	out[n < outsz ? n : outsz - 1] = '\0';
}
