/*
 * Storage backend for S3 (s3://bucket/key): path- or virtual-host-style URLs,
 * credentials from the configuration or the environment, GET and PUT.
 *
 * Requests are signed by libcurl's SigV4 (CURLOPT_AWS_SIGV4); curl 7.88 does
 * not send x-amz-content-sha256 by itself, so we hash the payload with
 * libcrypto and add the header, which curl then also uses as the signed
 * payload hash.
 */
#include "storage/xfer.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct s3_req {
	char *url;
	struct curl_slist *headers;
	const char *key_id, *secret, *token;
	char sigv4[96];
	char what[CW_STORAGE_MSG_URL_MAX + 16];
};

static void s3_req_free(struct s3_req *r)
{
	free(r->url);
	if (r->headers)   /* libcurl is loaded */
		cw_curl.slist_free_all(r->headers);
}

static bool s3_unreserved(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
	char *h = cw_storage_cat3(name, ": ", value);
	struct curl_slist *n;

	if (!h)
		return CW_ENOMEM;
	n = cw_curl.slist_append(*l, h);
	free(h);
	if (!n)
		return CW_ENOMEM;
	*l = n;
	return CW_OK;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
		out[0] = 0;
		return;
	}
	for (unsigned int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = 0;
}

/* Parse s3://bucket/key, build the URL and the signed headers for method. */
static int s3_prepare(const struct cw_storage_conf *c, const char *spec, const char *method,
		      const void *payload, size_t plen, const char *content_type,
		      struct s3_req *r, struct cw_error *err)
{
	const char *bucket = spec + 5, *key, *region, *endpoint, *rest;
	size_t blen, elen, klen;
	char defendpoint[128], hash[65];
	struct cw_storage_buf u = { 0 };

	memset(r, 0, sizeof(*r));
	if (cw_curl_load(err) != CW_OK)   /* the headers are a curl_slist */
		return CW_EIO;
	key = strchr(bucket, '/');
	blen = key ? (size_t)(key - bucket) : strlen(bucket);
	snprintf(r->what, sizeof(r->what), "S3 %s s3://%.*s/%.100s%s", method,
		 (int)(blen < 64 ? blen : 64), bucket, key ? key + 1 : "",
		 key && strlen(key + 1) > 100 ? "..." : "");
	if (!key || !key[1] || !blen || blen > 255) {
		cw_error_set(err, CW_EINVAL, "%s: expected s3://bucket/key", r->what);
		return CW_EINVAL;
	}
	key++;
	for (size_t i = 0; i < blen; i++) {
		if (!isalnum((unsigned char)bucket[i]) && !strchr(".-_", bucket[i])) {
			cw_error_set(err, CW_EINVAL, "%s: invalid bucket name", r->what);
			return CW_EINVAL;
		}
	}
	region = cw_storage_nonempty(c ? c->s3_region : NULL);
	if (!region)
		region = "us-east-1";
	if (strlen(region) > 64 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-_")
	    != strlen(region)) {
		cw_error_set(err, CW_EINVAL, "%s: invalid S3 region", r->what);
		return CW_EINVAL;
	}
	endpoint = cw_storage_nonempty(c ? c->s3_endpoint : NULL);
	if (!endpoint) {
		snprintf(defendpoint, sizeof(defendpoint), "https://s3.%s.amazonaws.com", region);
		endpoint = defendpoint;
	}
	if (!strncasecmp(endpoint, "http://", 7))
		rest = endpoint + 7;
	else if (!strncasecmp(endpoint, "https://", 8))
		rest = endpoint + 8;
	else {
		cw_error_set(err, CW_EINVAL, "%s: S3 endpoint must be http:// or https://",
			     r->what);
		return CW_EINVAL;
	}
	elen = strlen(endpoint);
	while (elen > (size_t)(rest - endpoint) && endpoint[elen - 1] == '/')
		elen--;
	if (elen == (size_t)(rest - endpoint)) {
		cw_error_set(err, CW_EINVAL, "%s: S3 endpoint has no host", r->what);
		return CW_EINVAL;
	}

	/* URL: endpoint/bucket/key (path style) or scheme://bucket.host/key */
	if (c && c->s3_path_style) {
		if (cw_storage_buf_add(&u, endpoint, elen) || cw_storage_buf_add(&u, "/", 1) ||
		    cw_storage_buf_add(&u, bucket, blen))
			goto nomem;
	} else {
		if (cw_storage_buf_add(&u, endpoint, (size_t)(rest - endpoint)) ||
		    cw_storage_buf_add(&u, bucket, blen) || cw_storage_buf_add(&u, ".", 1) ||
		    cw_storage_buf_add(&u, rest, elen - (size_t)(rest - endpoint)))
			goto nomem;
	}
	if (cw_storage_buf_add(&u, "/", 1))
		goto nomem;
	klen = strlen(key);
	for (size_t i = 0; i < klen; i++) {
		unsigned char ch = (unsigned char)key[i];
		char esc[4];

		if (s3_unreserved(ch) || ch == '/') {
			if (cw_storage_buf_add(&u, &ch, 1))
				goto nomem;
			continue;
		}
		snprintf(esc, sizeof(esc), "%%%02X", ch);
		if (cw_storage_buf_add(&u, esc, 3))
			goto nomem;
	}
	r->url = (char *)u.p;
	u.p = NULL;

	/* credentials: the configuration, else the environment; none = anonymous */
	r->key_id = cw_storage_nonempty(c ? c->s3_access_key : NULL);
	if (!r->key_id)
		r->key_id = cw_storage_nonempty(getenv("AWS_ACCESS_KEY_ID"));
	r->secret = cw_storage_nonempty(c ? c->s3_secret_key : NULL);
	if (!r->secret)
		r->secret = cw_storage_nonempty(getenv("AWS_SECRET_ACCESS_KEY"));
	r->token = cw_storage_nonempty(c ? c->s3_session_token : NULL);
	if (!r->token)
		r->token = cw_storage_nonempty(getenv("AWS_SESSION_TOKEN"));
	if (!r->key_id != !r->secret) {
		cw_error_set(err, CW_EINVAL, "%s: S3 %s is set but not the %s", r->what,
			     r->key_id ? "access key" : "secret key",
			     r->key_id ? "secret key" : "access key");
		return CW_EINVAL;
	}
	if (r->token && strpbrk(r->token, "\r\n")) {
		cw_error_set(err, CW_EINVAL, "%s: S3 session token has a line break", r->what);
		return CW_EINVAL;
	}
	if (content_type && strpbrk(content_type, "\r\n")) {
		cw_error_set(err, CW_EINVAL, "%s: content type has a line break", r->what);
		return CW_EINVAL;
	}
	snprintf(r->sigv4, sizeof(r->sigv4), "aws:amz:%s:s3", region);

	sha256_hex(payload, plen, hash);
	if (!hash[0]) {
		cw_error_set(err, CW_EIO, "%s: SHA-256 failed", r->what);
		return CW_EIO;
	}
	if (add_header(&r->headers, "x-amz-content-sha256", hash))
		goto nomem;
	if (r->key_id && r->token && add_header(&r->headers, "x-amz-security-token", r->token))
		goto nomem;
	if (payload && add_header(&r->headers, "Content-Type",
				  cw_storage_nonempty(content_type) ? content_type :
				  "application/octet-stream"))
		goto nomem;
	return CW_OK;
nomem:
	free(u.p);
	cw_error_set(err, CW_ENOMEM, "out of memory");
	return CW_ENOMEM;
}

static int s3_xfer_init(struct cw_xfer *x, const struct cw_storage_conf *c, struct s3_req *r,
			size_t max, struct cw_error *err)
{
	int rc = cw_xfer_init(x, c, r->url, max, err);

	if (rc)
		return rc;
	/* keys may hold "./" or "../": send the path exactly as encoded (and signed) */
	SETOPT(x->h, CURLOPT_PATH_AS_IS, 1L);
	SETOPT(x->h, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(x->h, CURLOPT_HTTPHEADER, r->headers);
	if (r->key_id) {
		SETOPT(x->h, CURLOPT_AWS_SIGV4, r->sigv4);
		SETOPT(x->h, CURLOPT_USERNAME, r->key_id);
		SETOPT(x->h, CURLOPT_PASSWORD, r->secret);
	}
	return CW_OK;
setopt_fail:
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	return CW_ENOMEM;
}

static int s3_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		  size_t *len, struct cw_error *err)
{
	struct s3_req r;
	struct cw_xfer x = { 0 };
	int rc;

	rc = s3_prepare(c, src, "GET", NULL, 0, NULL, &r, err);
	if (rc)
		goto out;
	rc = s3_xfer_init(&x, c, &r, cw_storage_max(c), err);
	if (rc)
		goto out;
	rc = cw_xfer_run(&x, c, r.what, true, r.secret, r.token, err);
	if (!rc && cw_storage_buf_take(&x.body, data, len)) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		rc = CW_ENOMEM;
	}
out:
	cw_xfer_free(&x);
	s3_req_free(&r);
	return rc;
}

static int s3_put(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		  const char *content_type, struct cw_error *err)
{
	struct s3_req r;
	struct cw_xfer x = { 0 };
	const void *body = data ? data : "";
	int rc;

	rc = s3_prepare(c, dst, "PUT", body, len, content_type, &r, err);
	if (rc)
		goto out;
	rc = s3_xfer_init(&x, c, &r, CW_XFER_ERRBODY_MAX, err);
	if (rc)
		goto out;
	SETOPT(x.h, CURLOPT_CUSTOMREQUEST, "PUT");
	SETOPT(x.h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	SETOPT(x.h, CURLOPT_POSTFIELDS, body);
	rc = cw_xfer_run(&x, c, r.what, true, r.secret, r.token, err);
	goto out;
setopt_fail:
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	rc = CW_ENOMEM;
out:
	cw_xfer_free(&x);
	s3_req_free(&r);
	return rc;
}

static const char *const s3_schemes[] = { "s3", NULL };

const struct cw_storage_ops cw_storage_s3_ops = {
	.name = "s3",
	.schemes = s3_schemes,
	.get = s3_get,
	.put = s3_put,
};
