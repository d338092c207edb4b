/*
 * probe: a cworker task module that fingerprints stored files.
 *
 *   probe.stat(source)        -> {"size": N, "sha256": "<hex>", "mime": "type/subtype"}
 *   probe.stat_many(sources)  -> [the same for each source, in order], with progress
 *
 * source is anything the worker's storage reads: a path under docconv_roots,
 * file:///abs, http(s)://..., s3://bucket/key.  SHA-256 comes from OpenSSL's
 * EVP interface, the MIME type from libmagic.  Opening a magic database is
 * slow (it parses the whole compiled database), so every pool child opens
 * one cookie in the init hook and reuses it for all its tasks.
 *
 * Settings ([module:probe] in the worker's config file):
 *   magic_file = PATH    a compiled magic database instead of the system one
 *
 * Build: see Makefile, meson.build and README.md next to this file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cworker/module.h>
#include <magic.h>
#include <openssl/evp.h>

#define COMPONENT "probe"

/*
 * From configure, in the master; "" = the system database.  A static buffer
 * rather than strdup(): no hook runs in the master at the end to free it.
 */
static char magic_db[4096];
static magic_t cookie;     /* one per process, from init */

/* Lowercase hex SHA-256 of data into hex (65 bytes); 0 or -1. */
static int sha256_hex(const unsigned char *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const char digits[] = "0123456789abcdef";

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return -1;
	for (unsigned int i = 0; i < mdlen; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[64] = '\0';
	return 0;
}

/*
 * Read one object and describe it.  On failure *e holds the exception the
 * caller raises (the storage's own: FileNotFoundError, PermissionError, ...).
 */
static json_t *probe_one(struct cw_task_ctx *ctx, const char *src, struct cw_exc *e)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char hex[65];

	if (cw_task_read(ctx, src, &data, &len, e) != 0)
		return NULL;
	if (sha256_hex(data, len, hex) != 0) {
		free(data);
		snprintf(e->type, sizeof(e->type), "RuntimeError");
		e->module[0] = '\0';
		snprintf(e->message, sizeof(e->message), "SHA-256 failed for %.900s", src);
		return NULL;
	}
	/* libmagic reads only the first bytes it needs; a failure is not fatal */
	const char *mime = magic_buffer(cookie, data, len);
	if (!mime)
		cw_log(CW_LOG_WARNING, COMPONENT, "no MIME type for %s: %s", src,
		       magic_error(cookie) ? magic_error(cookie) : "unknown error");
	json_t *out = json_pack("{s:I,s:s,s:s?}", "size", (json_int_t)len, "sha256", hex,
				"mime", mime);
	free(data);
	if (!out) {
		snprintf(e->type, sizeof(e->type), "MemoryError");
		e->module[0] = '\0';
		snprintf(e->message, sizeof(e->message), "out of memory");
		return NULL;
	}
	cw_task_count(ctx, "probe_bytes", (long)len);
	return out;
}

static enum cw_task_status t_stat(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	json_t *src = cw_task_arg(ctx, 0);   /* bound by the worker: always present */
	struct cw_exc e;

	(void)args;
	(void)kwargs;
	if (!json_is_string(src))
		return cw_task_fail(ctx, "TypeError", NULL, "stat(): source must be a str");
	*result = probe_one(ctx, json_string_value(src), &e);
	return *result ? CW_TASK_SUCCESS : cw_task_raise(ctx, &e);
}

/*
 * Many objects in one task: reports PROGRESS after each, and stops between
 * two objects once the soft time limit has passed.
 */
static enum cw_task_status t_stat_many(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				       json_t **result)
{
	json_t *srcs = cw_task_arg(ctx, 0), *out, *v;
	size_t i;
	struct cw_exc e;

	(void)args;
	(void)kwargs;
	if (!json_is_array(srcs))
		return cw_task_fail(ctx, "TypeError", NULL, "stat_many(): sources must be a list");
	if (!(out = json_array()))
		return cw_task_fail(ctx, "MemoryError", NULL, "out of memory");
	json_array_foreach(srcs, i, v) {
		if (cw_task_cancelled(ctx)) {
			json_decref(out);
			return cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions",
					    "stopped after %zu of %zu sources", i,
					    json_array_size(srcs));
		}
		if (!json_is_string(v)) {
			json_decref(out);
			return cw_task_fail(ctx, "TypeError", NULL,
					    "stat_many(): sources[%zu] is not a str", i);
		}
		json_t *one = probe_one(ctx, json_string_value(v), &e);
		if (!one) {
			json_decref(out);
			return cw_task_raise(ctx, &e);
		}
		json_array_append_new(out, one);
		cw_task_progress(ctx, (long)i + 1, (long)json_array_size(srcs));
	}
	*result = out;
	return CW_TASK_SUCCESS;
}

/* Master, before fork: remember settings (the strings cw_setting returns do not outlive this). */
static int probe_configure(const struct cw_settings *s, char *err, size_t errlen)
{
	const char *path = cw_setting(s, "magic_file");

	if (path && strlen(path) >= sizeof(magic_db)) {
		snprintf(err, errlen, "magic_file: path too long");
		return -1;
	}
	snprintf(magic_db, sizeof(magic_db), "%s", path ? path : "");
	return 0;
}

/* Every pool child, before its first task. */
static int probe_init(void)
{
	cookie = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
	if (!cookie) {
		cw_log(CW_LOG_ERROR, COMPONENT, "magic_open failed");
		return -1;
	}
	if (magic_load(cookie, magic_db[0] ? magic_db : NULL) != 0) {
		cw_log(CW_LOG_ERROR, COMPONENT, "cannot load the magic database %s: %s",
		       magic_db[0] ? magic_db : "(system)", magic_error(cookie));
		magic_close(cookie);
		cookie = NULL;
		return -1;
	}
	return 0;
}

static void probe_exit(void)
{
	if (cookie)
		magic_close(cookie);
	cookie = NULL;
}

static const struct cw_param p_stat[] = {{"source", 0}, {NULL, 0}};
static const struct cw_param p_stat_many[] = {{"sources", 0}, {NULL, 0}};

static const struct cw_task_def stat_task = {
	.abi_version = CW_ABI_VERSION,
	.name = "probe.stat",
	.fn = t_stat,
	.doc = "stat(source): size, SHA-256 and MIME type of a stored object",
	.params = p_stat,
};
static const struct cw_task_def stat_many_task = {
	.abi_version = CW_ABI_VERSION,
	.name = "probe.stat_many",
	.fn = t_stat_many,
	.doc = "stat_many(sources): stat() of each source, with PROGRESS",
	.params = p_stat_many,
};
static const struct cw_task_def *const tasks[] = {&stat_task, &stat_many_task, NULL};

CW_MODULE = {
	.abi_version = CW_ABI_VERSION,
	.size = sizeof(struct cw_module),
	.name = "probe",
	.version = "1.0.0",
	.tasks = tasks,
	.configure = probe_configure,
	.init = probe_init,
	.exit = probe_exit,
};
