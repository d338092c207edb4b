/*
 * One libcurl transfer for the network backends (http.c, s3.c): an easy
 * handle per call with the options every transfer shares, the body collected
 * under a size cap, and the outcome mapped to CW_* codes and messages.
 * Also the process-wide libcurl init.
 */
#include "storage/xfer.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_build.h"
#include "util/lazylib.h"

#if LIBCURL_VERSION_NUM < 0x074b00
#error "libcurl >= 7.75 is needed (CURLOPT_AWS_SIGV4)"
#endif

#define USER_AGENT "cworker/" CW_VERSION

struct cw_curl_fns cw_curl;

#define CURL_NAME(f) "curl_" #f,
static const char *const curl_names[] = {CW_CURL_SYMBOLS(CURL_NAME) NULL};
static void *curl_addr[sizeof(curl_names) / sizeof(curl_names[0]) - 1];
static struct cw_lazylib libcurl = {.soname = "libcurl.so.4", .names = curl_names,
				    .addr = curl_addr};

int cw_curl_load(struct cw_error *err)
{
	bool first = !libcurl.tried;
	if (cw_lazylib_open(&libcurl, err) != CW_OK)
		return CW_EIO;
	if (first) {
		size_t i = 0;
#define CURL_SET(f) memcpy(&cw_curl.f, &curl_addr[i++], sizeof(cw_curl.f));
		CW_CURL_SYMBOLS(CURL_SET)
	}
	return CW_OK;
}

/*
 * libcurl's process-wide init, for callers that want it before any
 * transfer (otherwise the first curl_easy_init does it): loads libcurl.
 */
int cw_storage_global_init(void)
{
	if (cw_curl_load(NULL) != CW_OK)
		return CW_EIO;
	return cw_curl.global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? CW_OK : CW_EIO;
}

void cw_storage_global_cleanup(void)
{
	if (libcurl.handle)
		cw_curl.global_cleanup();
}

/* Replace every occurrence of secret in msg by "**" (secrets of 3+ bytes only). */
static void scrub(char *msg, const char *secret)
{
	size_t sl = secret ? strlen(secret) : 0;
	char *p;

	if (sl < 3)
		return;
	while ((p = strstr(msg, secret))) {
		p[0] = '*';
		p[1] = '*';
		memmove(p + 2, p + sl, strlen(p + sl) + 1);
	}
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct cw_xfer *x = arg;
	size_t n = size * nmemb;
	long status = 0;

	cw_curl.easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 300) {           /* followed redirects deliver no body */
		size_t room = CW_XFER_ERRBODY_MAX - x->errbody.len;

		if (cw_storage_buf_add(&x->errbody, ptr, n < room ? n : room)) {
			x->nomem = true;
			return 0;
		}
		return n < room ? n : 0;     /* enough of an error page: stop */
	}
	if (n > x->max - x->body.len) {
		x->over = true;
		return 0;
	}
	if (cw_storage_buf_add(&x->body, ptr, n)) {
		x->nomem = true;
		return 0;
	}
	return n;
}

int cw_xfer_init(struct cw_xfer *x, const struct cw_storage_conf *c, const char *url, size_t max,
		 struct cw_error *err)
{
	memset(x, 0, sizeof(*x));
	x->max = max;
	int rc = cw_curl_load(err);
	if (rc != CW_OK)
		return rc;
	x->h = cw_curl.easy_init();
	if (!x->h) {
		cw_error_set(err, CW_ENOMEM, "cannot create a curl handle");
		return CW_ENOMEM;
	}
	SETOPT(x->h, CURLOPT_URL, url);
	SETOPT(x->h, CURLOPT_NOSIGNAL, 1L);
	SETOPT(x->h, CURLOPT_TIMEOUT_MS, (long)(cw_storage_timeout(c) * 1000.0));
	SETOPT(x->h, CURLOPT_ERRORBUFFER, x->errbuf);
	SETOPT(x->h, CURLOPT_WRITEFUNCTION, on_write);
	SETOPT(x->h, CURLOPT_WRITEDATA, x);
	SETOPT(x->h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(max > INT64_MAX ? INT64_MAX : max));
	SETOPT(x->h, CURLOPT_USERAGENT, USER_AGENT);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(x->h, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(x->h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SETOPT(x->h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(x->h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	return CW_OK;
setopt_fail:
	cw_curl.easy_cleanup(x->h);
	x->h = NULL;
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	return CW_ENOMEM;
}

void cw_xfer_free(struct cw_xfer *x)
{
	if (x->h)
		cw_curl.easy_cleanup(x->h);
	free(x->body.p);
	free(x->errbody.p);
	memset(x, 0, sizeof(*x));
}

/* The S3 <Code> of an error body, reduced to [A-Za-z0-9.]; "" if none. */
static void s3_error_code(const struct cw_storage_buf *b, char *out, size_t outsz)
{
	const char *p = b->p ? strstr((const char *)b->p, "<Code>") : NULL;
	size_t o = 0;

	out[0] = 0;
	if (!p)
		return;
	for (p += 6; *p && *p != '<' && o + 1 < outsz; p++)
		if (isalnum((unsigned char)*p) || *p == '.')
			out[o++] = *p;
	out[o] = 0;
}

int cw_xfer_run(struct cw_xfer *x, const struct cw_storage_conf *c, const char *what, bool s3,
		const char *secret1, const char *secret2, struct cw_error *err)
{
	CURLcode cc = cw_curl.easy_perform(x->h);
	long status = 0;
	char code[64], detail[CURL_ERROR_SIZE];
	int rc;

	cw_curl.easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (x->nomem || cc == CURLE_OUT_OF_MEMORY) {
		cw_error_set(err, CW_ENOMEM, "%s: out of memory", what);
		return CW_ENOMEM;
	}
	if (status >= 400) {
		s3_error_code(&x->errbody, code, sizeof(code));
		rc = status == 404 || status == 410 ? CW_ENOTFOUND : CW_EIO;
		cw_error_set(err, rc, "%s: HTTP %ld%s%s", what, status, code[0] ? " " : "", code);
		return rc;
	}
	if (x->over || cc == CURLE_FILESIZE_EXCEEDED) {
		cw_error_set(err, CW_ELIMIT, "%s: larger than max_download (%zu bytes)", what,
			     x->max);
		return CW_ELIMIT;
	}
	if (cc != CURLE_OK) {
		snprintf(detail, sizeof(detail), "%s",
			 x->errbuf[0] ? x->errbuf : cw_curl.easy_strerror(cc));
		scrub(detail, secret1);
		scrub(detail, secret2);
		switch (cc) {
		case CURLE_OPERATION_TIMEDOUT:
			cw_error_set(err, CW_EIO, "%s: timed out after %gs", what,
				     cw_storage_timeout(c));
			return CW_EIO;
		case CURLE_TOO_MANY_REDIRECTS:
			cw_error_set(err, CW_EIO, "%s: more than %ld redirects", what,
				     cw_storage_redirects(c));
			return CW_EIO;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			cw_error_set(err, CW_EINVAL, "%s: %s", what, detail);
			return CW_EINVAL;
		default:
			cw_error_set(err, CW_EIO, "%s: %s", what, detail);
			return CW_EIO;
		}
	}
	if (status < 200 || status > 299) {
		s3_error_code(&x->errbody, code, sizeof(code));
		cw_error_set(err, CW_EIO, "%s: unexpected HTTP %ld%s%s%s", what, status,
			     code[0] ? " " : "", code,
			     s3 || status < 300 || status > 399 ? "" : " (redirects are off)");
		return CW_EIO;
	}
	return CW_OK;
}
