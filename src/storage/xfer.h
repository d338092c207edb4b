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
		if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK) \
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
