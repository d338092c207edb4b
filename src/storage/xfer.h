/*
 * One libcurl transfer, shared by the network backends (http.c, s3.c).
 * Private to src/storage.
 */
#ifndef CW_STORAGE_XFER_H
#define CW_STORAGE_XFER_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "storage/storage_int.h"

/*
 * libcurl is opened on first use (util/lazylib.h), by the first http(s):// or
 * s3:// transfer: a worker that only reads local files never maps it nor what
 * it pulls in (GnuTLS, Kerberos, LDAP, SSH, ...).  Calls go through
 * cw_curl.NAME for curl_NAME, typed by curl.h's own declarations.
 */
#define CW_CURL_SYMBOLS(X) X(easy_cleanup) X(easy_getinfo) X(easy_init) X(easy_perform) \
	X(easy_setopt) X(easy_strerror) X(global_cleanup) X(global_init) X(slist_append) X(slist_free_all)
#define CW_CURL_SLOT(f) __typeof__(curl_##f) *f;
struct cw_curl_fns {
	CW_CURL_SYMBOLS(CW_CURL_SLOT)
};
extern struct cw_curl_fns cw_curl;
/* Load libcurl (once per process) into cw_curl: CW_OK, or CW_EIO with the reason. */
int cw_curl_load(struct cw_error *err) CW_MUST_CHECK;

#define CW_XFER_ERRBODY_MAX 16384 /* bytes of an error response kept to find the S3 Code */

struct cw_xfer {
	CURL *h;
	struct cw_storage_buf body;    /* 2xx body */
	struct cw_storage_buf errbody; /* start of a >= 300 body */
	size_t max;
	bool over, nomem;
	char errbuf[CURL_ERROR_SIZE];
};

/* curl_easy_setopt or goto setopt_fail (every option is set the same way) */
#define SETOPT(h, opt, val)                                           \
	do {                                                          \
		if (cw_curl.easy_setopt((h), (opt), (val)) != CURLE_OK) \
			goto setopt_fail;                             \
	} while (0)

/* A handle for url with the options every transfer shares; bodies over max fail. */
int cw_xfer_init(struct cw_xfer *x, const struct cw_storage_conf *c, const char *url, size_t max,
		 struct cw_error *err);
void cw_xfer_free(struct cw_xfer *x);
/*
 * Run the transfer and map the outcome.  what names the operation for messages
 * ("GET https://host/path", "S3 PUT s3://b/k"); secrets are scrubbed from curl's text.
 * s3: S3 semantics for an unexpected 3xx (never followed, so no "redirects are off").
 */
int cw_xfer_run(struct cw_xfer *x, const struct cw_storage_conf *c, const char *what, bool s3,
		const char *secret1, const char *secret2, struct cw_error *err);

#endif
