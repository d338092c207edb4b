/*
 * What the worker gives every task beyond its arguments: the storage
 * (cw_task_read / cw_task_write through src/storage with the worker's
 * roots, limits and S3 settings) with its errors mapped to the Python
 * exceptions a Celery user sees.
 */
#include "tasks/services.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cworker/task.h"
#include "util/err.h"
#ifdef CW_HAVE_STORAGE
#include "storage/storage.h"
#endif

#ifdef CW_HAVE_STORAGE
static struct cw_storage_conf conf;
static const char **roots;          /* NULL-terminated, pointing into roots_copy */
static char *roots_copy;
#endif

static void set_exc(struct cw_exc *e, const char *type, const char *module, const char *msg)
{
	if (!e)
		return;
	snprintf(e->type, sizeof(e->type), "%s", type);
	snprintf(e->module, sizeof(e->module), "%s", module ? module : "");
	snprintf(e->message, sizeof(e->message), "%s", msg);
}

#ifdef CW_HAVE_STORAGE
/* "a, b,c" -> {"a", "b", "c", NULL}; blanks around names dropped. */
static int parse_roots(const char *list)
{
	free(roots);
	free(roots_copy);
	roots = NULL;
	roots_copy = NULL;
	int n = 0;
	for (const char *s = list; s && *s; s++)
		n += *s == ',';
	roots = calloc((size_t)n + 2, sizeof(char *));
	if (!roots)
		return CW_ENOMEM;
	if (!list || !*list)
		return CW_OK;
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		return CW_ENOMEM;
	roots_copy = copy;
	int k = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		size_t len = strlen(t);
		while (len && t[len - 1] == ' ')
			t[--len] = '\0';
		if (*t)
			roots[k++] = t;
	}
	return CW_OK;
}

static void storage_exc(int rc, const char *msg, struct cw_exc *e)
{
	set_exc(e, rc == CW_ENOTFOUND ? "FileNotFoundError"
		: rc == CW_EINVAL     ? "PermissionError"
		: rc == CW_ELIMIT     ? "ResourceLimit"
				      : "StorageError",
		rc == CW_ELIMIT || rc == CW_EIO ? "cworker.exceptions" : NULL, msg);
}
#endif

int cw_services_configure(const struct cw_config *cfg)
{
#ifdef CW_HAVE_STORAGE
	if (parse_roots(cfg->docconv_roots) != CW_OK)
		return CW_ENOMEM;
	conf = (struct cw_storage_conf){
		.roots = roots,
		.max_download = (size_t)cfg->docconv_max_download << 20,
		.timeout = cfg->docconv_timeout,
		.s3_endpoint = cfg->s3_endpoint && *cfg->s3_endpoint ? cfg->s3_endpoint : NULL,
		.s3_region = cfg->s3_region && *cfg->s3_region ? cfg->s3_region : NULL,
		.s3_path_style = cfg->s3_path_style,
	};
#else
	(void)cfg;
#endif
	return CW_OK;
}

void cw_services_free(void)
{
#ifdef CW_HAVE_STORAGE
	free(roots);
	free(roots_copy);
	roots = NULL;
	roots_copy = NULL;
#endif
}

int cw_task_read(struct cw_task_ctx *ctx, const char *src, unsigned char **data, size_t *len,
		 struct cw_exc *e)
{
	(void)ctx;
#ifdef CW_HAVE_STORAGE
	struct cw_error err = {0};
	int rc = cw_storage_get(&conf, src, data, len, &err);
	if (rc == CW_OK)
		return 0;
	storage_exc(rc, err.msg, e);
#else
	(void)src;
	*data = NULL;
	*len = 0;
	set_exc(e, "StorageError", "cworker.exceptions", "this cworker was built without storage");
#endif
	return -1;
}

int cw_task_write(struct cw_task_ctx *ctx, const char *dst, const void *data, size_t len,
		  const char *content_type, struct cw_exc *e)
{
	(void)ctx;
#ifdef CW_HAVE_STORAGE
	struct cw_error err = {0};
	int rc = cw_storage_put(&conf, dst, data, len, content_type, &err);
	if (rc == CW_OK)
		return 0;
	storage_exc(rc, err.msg, e);
#else
	(void)dst;
	(void)data;
	(void)len;
	(void)content_type;
	set_exc(e, "StorageError", "cworker.exceptions", "this cworker was built without storage");
#endif
	return -1;
}
