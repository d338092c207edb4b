/* Storage: read and write whole objects from local files (confined to configured roots),
 * http(s) URLs (read only) and S3 (SigV4 via libcurl).  Errors only through struct cw_error;
 * messages never carry credentials. */
#ifndef CW_STORAGE_H
#define CW_STORAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

struct cw_storage_conf {
	/* allowed local directories; NULL-terminated; NULL/empty = no local access */
	const char *const *roots;
	size_t max_download;        /* bytes; 0 = 256 MiB */
	double timeout;             /* seconds per transfer; 0 = 60 */
	int max_redirects;          /* http(s) inputs; 0 = 5 */
	/* "http://127.0.0.1:4568"; NULL = https://s3.<region>.amazonaws.com */
	const char *s3_endpoint;
	const char *s3_region;      /* NULL = "us-east-1" */
	bool s3_path_style;         /* endpoint/bucket/key instead of bucket.endpoint/key */
	/* NULL = from env AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN */
	const char *s3_access_key, *s3_secret_key, *s3_session_token;
};

/* Read a whole source into memory: a local path, file:///abs/path, http(s)://..., s3://bucket/key.
 * *data is malloc'd (NUL-terminated for convenience), *len excludes the NUL. */
int cw_storage_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		   size_t *len, struct cw_error *err) CW_MUST_CHECK;
/* Write data to a local path / file:// / s3://bucket/key (http(s) outputs: CW_EINVAL). Local
 * writes are atomic (temp file in the same dir + fsync + rename) and create missing parent
 * directories inside the root. */
int cw_storage_put(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		   const char *content_type, struct cw_error *err) CW_MUST_CHECK;
/* Resolve a local path (plain or file://) against the roots: *out (malloc'd) is the canonical
 * absolute path. for_write: the file may not exist yet (its parent is resolved). */
int cw_storage_local_path(const struct cw_storage_conf *c, const char *path, bool for_write,
			  char **out, struct cw_error *err) CW_MUST_CHECK;
/* Global init/cleanup of libcurl (call once in the parent before fork). */
int cw_storage_global_init(void);
void cw_storage_global_cleanup(void);

#endif
