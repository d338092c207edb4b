/*
 * What the storage backends share, private to src/storage: the backend ops
 * table, the configuration defaults, a growable byte buffer and the helpers
 * that keep credentials out of error messages.
 *
 * A backend is one file defining a struct cw_storage_ops and one row in the
 * table in storage.c; the dispatcher picks it by the scheme of the spec.
 */
#ifndef CW_STORAGE_INT_H
#define CW_STORAGE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "storage/storage.h"

#define CW_STORAGE_DEFAULT_MAX_DOWNLOAD ((size_t)256 << 20)
#define CW_STORAGE_DEFAULT_TIMEOUT 60.0
#define CW_STORAGE_DEFAULT_REDIRECTS 5
#define CW_STORAGE_MSG_URL_MAX 160 /* a URL inside an error message */

struct cw_storage_ops {
	const char *name;
	/*
	 * Schemes served ("s3" serves "s3://..."), matched without case; "" serves specs with
	 * no "scheme://" at all (plain paths).  NULL-terminated.
	 */
	const char *const *schemes;
	/* cw_storage_get/put after the common argument checks; *data and *len are zeroed. */
	int (*get)(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		   size_t *len, struct cw_error *err);
	/* Backends that cannot write say so here, in their own words. */
	int (*put)(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		   const char *content_type, struct cw_error *err);
};

/* Length of the scheme of "scheme://...", 0 when s has none (then it is a local path). */
size_t cw_storage_scheme_len(const char *s);

/* Growable byte buffer, always NUL-terminated once non-empty. */
struct cw_storage_buf {
	unsigned char *p;
	size_t len, cap;
};

int cw_storage_buf_reserve(struct cw_storage_buf *b, size_t extra);
int cw_storage_buf_add(struct cw_storage_buf *b, const void *d, size_t n);
/* Hand the buffer to the caller as a NUL-terminated block (an empty one too). */
int cw_storage_buf_take(struct cw_storage_buf *b, unsigned char **data, size_t *len);

/* a + b + c, malloc'd; NULL when out of memory. */
char *cw_storage_cat3(const char *a, const char *b, const char *c);
/* The configuration with its defaults applied (c may be NULL). */
size_t cw_storage_max(const struct cw_storage_conf *c);
double cw_storage_timeout(const struct cw_storage_conf *c);
long cw_storage_redirects(const struct cw_storage_conf *c);
/* s when it is a non-empty string, else NULL. */
const char *cw_storage_nonempty(const char *s);
/* A URL fit for a message: no query, fragment or password. */
void cw_storage_url_for_msg(const char *url, char *out, size_t outsz);

#endif
