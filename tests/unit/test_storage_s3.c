/* S3 storage test driver: run by tests/s3/run_s3_test.sh against a loopback s3rver that
 * checks SigV4 signatures (CW_S3_PORT, CW_S3_BUCKET in the environment). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/storage.h"

#include "check.h"

#define BLOB_SIZE (3u << 20)

static char bucket[64], path_ep[64], vhost_ep[64];

static const char *s3url(const char *key)
{
	static char bufs[4][512];
	static int i;
	char *s = bufs[i++ % 4];

	snprintf(s, sizeof(bufs[0]), "s3://%s/%s", bucket, key);
	return s;
}

/* rc wanted; when must is set, err.msg must contain it; secrets never in err.msg. */
static void expect_get(const struct cw_storage_conf *c, const char *src, int rc,
		       const void *want, size_t wantlen, const char *must)
{
	struct cw_error err = { 0 };
	unsigned char *d = NULL;
	size_t n = 0;
	int got = cw_storage_get(c, src, &d, &n, &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  get %s: got %d (%s), want %d\n", src, got, err.msg, rc);
	if (got == CW_OK) {
		CHECK(d && d[n] == 0);
		if (want) {
			CHECK(n == wantlen && !memcmp(d, want, wantlen));
			if (n != wantlen)
				fprintf(stderr, "  get %s: %zu bytes, want %zu\n", src, n, wantlen);
		}
		free(d);
		return;
	}
	CHECK(!d && !n && err.code == rc);
	CHECK(!must || strstr(err.msg, must));
	CHECK(!strstr(err.msg, "wrong-secret") && !strstr(err.msg, "SESSIONTOKEN"));
	if (must && !strstr(err.msg, must))
		fprintf(stderr, "  get %s: message '%s' lacks '%s'\n", src, err.msg, must);
}

/*
 * s3rver answers a PUT when it has read the body, before its file is flushed to disk
 * (its filesystem store resolves on the hashing stream's end, not the file's): wait
 * until the object reads back at its full size before the exact checks.
 */
static void settle(const struct cw_storage_conf *c, const char *src, size_t size)
{
	for (int i = 0; i < 100; i++) {
		struct cw_error err = { 0 };
		unsigned char *d = NULL;
		size_t n = 0;
		int rc = cw_storage_get(c, src, &d, &n, &err);
		free(d);
		if (rc == CW_OK && n == size)
			return;
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	}
}

static void expect_put(const struct cw_storage_conf *c, const char *dst, const void *d, size_t n,
		       int rc, const char *must)
{
	struct cw_error err = { 0 };
	int got = cw_storage_put(c, dst, d, n, "application/x-test", &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  put %s: got %d (%s), want %d\n", dst, got, err.msg, rc);
	if (got == CW_OK) {
		settle(c, dst, n);
		return;
	}
	CHECK(err.code == rc);
	CHECK(!must || strstr(err.msg, must));
	CHECK(!strstr(err.msg, "wrong-secret") && !strstr(err.msg, "SESSIONTOKEN"));
	if (must && !strstr(err.msg, must))
		fprintf(stderr, "  put %s: message '%s' lacks '%s'\n", dst, err.msg, must);
}

int main(void)
{
	const char *port = getenv("CW_S3_PORT"), *b = getenv("CW_S3_BUCKET");
	unsigned char *blob;
	struct cw_storage_conf path, vhost, badsecret, badkey, token, capped, env, halfkeys;
	static const char odd_key[] = "odd key/\xc3\xbc+&=?;x(1)~.txt";

	if (!port || !b) {
		fprintf(stderr, "test_storage_s3: run me through tests/s3/run_s3_test.sh\n");
		return 77;
	}
	snprintf(bucket, sizeof(bucket), "%s", b);
	snprintf(path_ep, sizeof(path_ep), "http://127.0.0.1:%s", port);
	snprintf(vhost_ep, sizeof(vhost_ep), "http://s3.localhost:%s/", port);
	if (cw_storage_global_init()) {
		fprintf(stderr, "cw_storage_global_init failed\n");
		return 1;
	}
	blob = malloc(BLOB_SIZE);
	if (!blob)
		return 1;
	for (size_t i = 0; i < BLOB_SIZE; i++)          /* NULs and every byte value */
		blob[i] = (unsigned char)((i * 2654435761u) >> 13);
	memset(blob + 1000, 0, 4096);

	path = (struct cw_storage_conf){
		.timeout = 30, .s3_endpoint = path_ep, .s3_region = "us-east-1",
		.s3_path_style = true, .s3_access_key = "S3RVER", .s3_secret_key = "S3RVER",
	};
	vhost = path;
	vhost.s3_endpoint = vhost_ep;
	vhost.s3_path_style = false;
	badsecret = path;
	badsecret.s3_secret_key = "wrong-secret";
	badkey = path;
	badkey.s3_access_key = "NOSUCHKEY";
	token = path;
	token.s3_session_token = "SESSIONTOKEN/abc+def==";
	capped = path;
	capped.max_download = 1 << 20;
	env = path;
	env.s3_access_key = env.s3_secret_key = NULL;
	halfkeys = env;
	halfkeys.s3_access_key = "S3RVER";
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");

	/* path style round trip: 3 MiB of binary data */
	expect_put(&path, s3url("dir/blob.bin"), blob, BLOB_SIZE, CW_OK, NULL);
	expect_get(&path, s3url("dir/blob.bin"), CW_OK, blob, BLOB_SIZE, NULL);
	/* virtual-host style (cw-test.s3.localhost) reads the same object, writes its own */
	expect_get(&vhost, s3url("dir/blob.bin"), CW_OK, blob, BLOB_SIZE, NULL);
	expect_put(&vhost, s3url("vhost.txt"), "via vhost", 9, CW_OK, NULL);
	expect_get(&path, s3url("vhost.txt"), CW_OK, "via vhost", 9, NULL);
	/* keys are URI-encoded per S3 rules (the server rejects anything else) */
	expect_put(&path, s3url(odd_key), "odd", 3, CW_OK, NULL);
	expect_get(&vhost, s3url(odd_key), CW_OK, "odd", 3, NULL);
	expect_put(&path, s3url("empty"), NULL, 0, CW_OK, NULL);
	expect_get(&path, s3url("empty"), CW_OK, "", 0, NULL);
	/* overwrite */
	expect_put(&path, s3url("vhost.txt"), "v2", 2, CW_OK, NULL);
	expect_get(&vhost, s3url("vhost.txt"), CW_OK, "v2", 2, NULL);

	/* missing objects and buckets */
	expect_get(&path, s3url("no/such/key"), CW_ENOTFOUND, NULL, 0, "NoSuchKey");
	expect_get(&vhost, s3url("no-such-key"), CW_ENOTFOUND, NULL, 0, "NoSuchKey");
	expect_get(&path, "s3://no-such-bucket/key", CW_ENOTFOUND, NULL, 0, "NoSuchBucket");

	/* signing is real: a wrong secret or key is refused */
	expect_get(&badsecret, s3url("dir/blob.bin"), CW_EIO, NULL, 0, "SignatureDoesNotMatch");
	expect_get(&badsecret, s3url("dir/blob.bin"), CW_EIO, NULL, 0, "403");
	expect_put(&badsecret, s3url("bad.bin"), "x", 1, CW_EIO, "SignatureDoesNotMatch");
	expect_get(&path, s3url("bad.bin"), CW_ENOTFOUND, NULL, 0, "NoSuchKey");
	expect_get(&badkey, s3url("dir/blob.bin"), CW_EIO, NULL, 0, "InvalidAccessKeyId");

	/* session token: sent as a signed x-amz-security-token */
	expect_put(&token, s3url("token.txt"), "tok", 3, CW_OK, NULL);
	expect_get(&token, s3url("token.txt"), CW_OK, "tok", 3, NULL);
	token.s3_secret_key = "wrong-secret";
	expect_get(&token, s3url("token.txt"), CW_EIO, NULL, 0, "SignatureDoesNotMatch");

	/* size cap */
	expect_get(&capped, s3url("dir/blob.bin"), CW_ELIMIT, NULL, 0, "max_download");

	/* credentials from the environment; none at all = anonymous (refused here) */
	expect_get(&env, s3url("vhost.txt"), CW_EIO, NULL, 0, "AccessDenied");
	setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
	expect_get(&env, s3url("vhost.txt"), CW_OK, "v2", 2, NULL);
	setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret", 1);
	expect_get(&env, s3url("vhost.txt"), CW_EIO, NULL, 0, "SignatureDoesNotMatch");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	expect_get(&halfkeys, s3url("vhost.txt"), CW_EINVAL, NULL, 0, "secret key");

	/* malformed s3 URLs */
	expect_get(&path, "s3://", CW_EINVAL, NULL, 0, NULL);
	expect_get(&path, "s3://bucket-only", CW_EINVAL, NULL, 0, NULL);
	expect_get(&path, "s3://bucket/", CW_EINVAL, NULL, 0, NULL);
	expect_get(&path, "s3:///key", CW_EINVAL, NULL, 0, NULL);
	expect_get(&path, "s3://bad bucket/key", CW_EINVAL, NULL, 0, NULL);

	free(blob);
	cw_storage_global_cleanup();
	return check_summary();
}
