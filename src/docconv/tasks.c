/*
 * The docconv.* Celery tasks: arguments in Celery's calling convention,
 * sources and outputs through the storage layer, work done by the engine
 * kept warm in each pool child.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docconv/docconv.h"
#include "docconv/tasks.h"
#include "storage/storage.h"
#include "tasks/exec_cancel.h"

static struct cw_docconv_conf conf;
static const char **roots;
static char *roots_copy;               /* the strings roots[] points into */
static struct cw_doc_engine *engine;   /* one per process, created on first use */

int cw_docconv_configure(const struct cw_docconv_conf *c)
{
	conf = *c;
	free(roots);
	free(roots_copy);
	roots = NULL;
	roots_copy = NULL;
	int n = 0;
	for (const char *s = c->roots; s && *s; s++)
		n += *s == ',';
	roots = calloc((size_t)n + 2, sizeof(char *));
	if (!roots)
		return -1;
	if (c->roots && *c->roots) {
		char *copy = strdup(c->roots), *save = NULL;
		if (!copy)
			return -1;
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
	}
	return 0;
}

static struct cw_storage_conf storage_conf(void)
{
	return (struct cw_storage_conf){
		.roots = roots,
		.max_download = conf.max_download,
		.timeout = conf.timeout,
		.s3_endpoint = conf.s3_endpoint && *conf.s3_endpoint ? conf.s3_endpoint : NULL,
		.s3_region = conf.s3_region && *conf.s3_region ? conf.s3_region : NULL,
		.s3_path_style = conf.s3_path_style,
	};
}

static struct cw_doc_engine *get_engine(struct cw_task_ctx *ctx)
{
	if (!engine) {
		struct cw_doc_limits lim = {.memory = conf.memory_mib << 20,
					    .max_pages = conf.max_pages};
		engine = cw_doc_engine_new(&lim);
		if (!engine)
			cw_task_fail(ctx, "MemoryError", NULL, "cannot start the MuPDF engine");
	}
	return engine;
}

/* Argument i / name, Python-style: positional or keyword, not both. */
static json_t *param(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs, size_t i,
		     const char *name, const char *fn, bool *bad)
{
	json_t *a = i < json_array_size(args) ? json_array_get(args, i) : NULL;
	json_t *k = json_object_get(kwargs, name);
	if (a && k) {
		cw_task_fail(ctx, "TypeError", NULL, "%s() got multiple values for argument '%s'", fn,
			     name);
		*bad = true;
		return NULL;
	}
	json_t *v = a ? a : k;
	return json_is_null(v) ? NULL : v;
}

static bool check_kwargs(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
			 const char *const *names, size_t n, const char *fn)
{
	const char *key;
	json_t *v;
	if (json_array_size(args) > n) {
		cw_task_fail(ctx, "TypeError", NULL, "%s() takes %zu positional arguments but %zu were "
			     "given", fn, n, json_array_size(args));
		return false;
	}
	json_object_foreach(kwargs, key, v) {
		size_t i;
		for (i = 0; i < n && strcmp(names[i], key); i++)
			;
		if (i == n) {
			cw_task_fail(ctx, "TypeError", NULL,
				     "%s() got an unexpected keyword argument '%s'", fn, key);
			return false;
		}
	}
	return true;
}

/* Python's binding of a call to names[0..n-1] into v[]; false (task failed) on a bad call. */
static bool unpack(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
		   const char *const *names, size_t n, const char *fn, json_t **v)
{
	bool bad = false;
	if (!check_kwargs(ctx, args, kwargs, names, n, fn))
		return false;
	for (size_t i = 0; i < n; i++)
		v[i] = param(ctx, args, kwargs, i, names[i], fn, &bad);
	return !bad;
}

static enum cw_task_status doc_fail(struct cw_task_ctx *ctx, struct cw_doc_result r)
{
	if (r.status == CW_DOC_CANCELLED)
		return cw_task_fail(ctx, "SoftTimeLimitExceeded", "celery.exceptions", "%s",
				    r.message);
	return cw_task_fail(ctx, cw_doc_status_exc(r.status),
			    r.status == CW_DOC_ARGS ? "builtins" : "cworker.exceptions", "%s",
			    r.message);
}

static enum cw_task_status storage_fail(struct cw_task_ctx *ctx, int rc, const struct cw_error *e)
{
	const char *type = rc == CW_ENOTFOUND ? "FileNotFoundError"
			   : rc == CW_EINVAL  ? "PermissionError"
			   : rc == CW_ELIMIT  ? "ResourceLimit"
					      : "StorageError";
	return cw_task_fail(ctx, type, rc == CW_ELIMIT || rc == CW_EIO ? "cworker.exceptions" : NULL,
			    "%s", e->msg);
}

static bool load(struct cw_task_ctx *ctx, const char *src, unsigned char **data, size_t *len,
		 enum cw_task_status *st)
{
	struct cw_storage_conf sc = storage_conf();
	struct cw_error err = {0};
	int rc = cw_storage_get(&sc, src, data, len, &err);
	if (rc != CW_OK) {
		*st = storage_fail(ctx, rc, &err);
		return false;
	}
	return true;
}

/*
 * Around engine work: the soft limit reaches MuPDF's cookie straight from
 * the signal handler, and the child may abandon the task if it cannot stop.
 */
static void work_begin(struct cw_task_ctx *ctx, struct cw_doc_engine *e)
{
	cw_doc_engine_set_cancel(e, cw_task_cancel_flag(ctx));
	cw_exec_cancel_target = cw_doc_engine_abort_flag(e);
	cw_exec_abandon_ok = 1;
}

static void work_end(void)
{
	cw_exec_abandon_ok = 0;
	cw_exec_cancel_target = NULL;
}

static const char *str_or(json_t *v, const char *def)
{
	return json_is_string(v) ? json_string_value(v) : def;
}

static enum cw_task_status t_convert(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				     json_t **result)
{
	static const char *const names[] = {"source", "format", "ocr", "pages", "ocr_lang",
					    "dpi", "password", "output"};
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[8];
	if (!unpack(ctx, args, kwargs, names, 8, "convert", v))
		return CW_TASK_FAILURE;
	if (!json_is_string(v[0]))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "convert() missing required argument 'source' (a string)");
	struct cw_doc_convert_opts o = {.format = CW_FMT_MARKDOWN, .ocr = CW_OCR_AUTO,
					.ocr_lang = str_or(v[4], "eng"), .dpi = 300,
					.password = str_or(v[6], NULL), .pages = v[3]};
	const char *fmt = str_or(v[1], "markdown"), *ocr = str_or(v[2], "auto");
	if (!strcmp(fmt, "text"))
		o.format = CW_FMT_TEXT;
	else if (!strcmp(fmt, "json"))
		o.format = CW_FMT_JSON;
	else if (!strcmp(fmt, "html"))
		o.format = CW_FMT_HTML;
	else if (strcmp(fmt, "markdown"))
		return cw_task_fail(ctx, "ValueError", NULL,
				    "format must be text, markdown, json or html, not '%s'", fmt);
	if (!strcmp(ocr, "always"))
		o.ocr = CW_OCR_ALWAYS;
	else if (!strcmp(ocr, "never"))
		o.ocr = CW_OCR_NEVER;
	else if (strcmp(ocr, "auto"))
		return cw_task_fail(ctx, "ValueError", NULL, "ocr must be auto, always or never");
	if (v[5]) {
		if (!json_is_integer(v[5]) || json_integer_value(v[5]) < 50 ||
		    json_integer_value(v[5]) > 1200)
			return cw_task_fail(ctx, "ValueError", NULL, "dpi must be an integer 50..1200");
		o.dpi = (int)json_integer_value(v[5]);
	}
	if (v[7] && !json_is_string(v[7]))
		return cw_task_fail(ctx, "TypeError", NULL, "output must be a string");
	struct cw_doc_engine *e = get_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
	unsigned char *data = NULL;
	size_t len = 0;
	if (!load(ctx, json_string_value(v[0]), &data, &len, &st))
		return st;
	work_begin(ctx, e);
	json_t *out = NULL;
	struct cw_doc_result r = cw_doc_convert(e, data, len, json_string_value(v[0]), &o, &out);
	work_end();
	free(data);
	if (r.status != CW_DOC_OK)
		return doc_fail(ctx, r);
	json_t *content = json_object_get(out, "content");
	size_t clen = 0;
	char *text = NULL;
	if (json_is_string(content)) {
		clen = json_string_length(content);
	} else {
		text = json_dumps(content, JSON_COMPACT);
		clen = text ? strlen(text) : 0;
	}
	if (v[7]) {
		struct cw_storage_conf sc = storage_conf();
		struct cw_error err = {0};
		static const char *const types[] = {"text/plain; charset=utf-8",
						    "text/markdown; charset=utf-8",
						    "application/json", "text/html; charset=utf-8"};
		int rc = cw_storage_put(&sc, json_string_value(v[7]),
					text ? text : json_string_value(content), clen,
					types[o.format], &err);
		free(text);
		if (rc != CW_OK) {
			json_decref(out);
			return storage_fail(ctx, rc, &err);
		}
		json_object_del(out, "content");
		json_object_set(out, "output", v[7]);
		json_object_set_new(out, "bytes", json_integer((json_int_t)clen));
	} else {
		free(text);
		if (conf.inline_max && clen > conf.inline_max) {
			json_decref(out);
			return cw_task_fail(ctx, "ResourceLimit", "cworker.exceptions",
					    "the %s output is %zu bytes, over docconv_inline_max "
					    "(%zu): pass output=... to write it to storage",
					    fmt, clen, conf.inline_max);
		}
	}
	cw_task_count_pages(ctx, (long)json_integer_value(json_object_get(out, "pages")),
			    (long)json_array_size(json_object_get(out, "ocr_pages")));
	*result = out;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_info(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	static const char *const names[] = {"source", "password"};
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[2];
	if (!unpack(ctx, args, kwargs, names, 2, "info", v))
		return CW_TASK_FAILURE;
	json_t *src = v[0], *pw = v[1];
	if (!json_is_string(src))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "info() missing required argument 'source' (a string)");
	struct cw_doc_engine *e = get_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
	unsigned char *data = NULL;
	size_t len = 0;
	if (!load(ctx, json_string_value(src), &data, &len, &st))
		return st;
	json_t *out = NULL;
	struct cw_doc_result r =
		cw_doc_info(e, data, len, json_string_value(src), str_or(pw, NULL), &out);
	free(data);
	if (r.status != CW_DOC_OK)
		return doc_fail(ctx, r);
	*result = out;
	return CW_TASK_SUCCESS;
}

static enum cw_task_status t_render(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	static const char *const names[] = {"source", "pages", "dpi", "format", "output",
					    "password"};
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[6];
	if (!unpack(ctx, args, kwargs, names, 6, "render", v))
		return CW_TASK_FAILURE;
	if (!json_is_string(v[0]) || !json_is_string(v[4]))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "render() needs source and output (strings)");
	if (v[3] && strcmp(str_or(v[3], ""), "png"))
		return cw_task_fail(ctx, "ValueError", NULL, "render() writes format='png' only");
	int dpi = 150;
	if (v[2]) {
		if (!json_is_integer(v[2]) || json_integer_value(v[2]) < 10 ||
		    json_integer_value(v[2]) > 1200)
			return cw_task_fail(ctx, "ValueError", NULL, "dpi must be an integer 10..1200");
		dpi = (int)json_integer_value(v[2]);
	}
	struct cw_doc_engine *e = get_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
	unsigned char *data = NULL;
	size_t len = 0;
	if (!load(ctx, json_string_value(v[0]), &data, &len, &st))
		return st;
	struct cw_doc_page_image *img = NULL;
	int n = 0;
	work_begin(ctx, e);
	struct cw_doc_result r = cw_doc_render(e, data, len, json_string_value(v[0]),
					       str_or(v[5], NULL), v[1], dpi, &img, &n);
	work_end();
	free(data);
	if (r.status != CW_DOC_OK)
		return doc_fail(ctx, r);
	json_t *list = json_array();
	struct cw_storage_conf sc = storage_conf();
	const char *base = json_string_value(v[4]);
	size_t blen = strlen(base);
	for (int i = 0; i < n; i++) {
		char *dst = NULL;
		struct cw_error err = {0};
		if (asprintf(&dst, "%s%spage-%04d.png", base,
			     blen && base[blen - 1] == '/' ? "" : "/", img[i].page) < 0) {
			st = cw_task_fail(ctx, "MemoryError", NULL, "render");
			goto fail;
		}
		int rc = cw_storage_put(&sc, dst, img[i].png, img[i].png_len, "image/png", &err);
		if (rc != CW_OK) {
			free(dst);
			st = storage_fail(ctx, rc, &err);
			goto fail;
		}
		json_array_append_new(list, json_pack("{s:i,s:i,s:i,s:s}", "page", img[i].page,
						      "width", img[i].width, "height",
						      img[i].height, "output", dst));
		free(dst);
	}
	cw_doc_images_free(img, n);
	cw_task_count_pages(ctx, n, 0);
	*result = json_pack("{s:o,s:i}", "pages", list, "dpi", dpi);
	return CW_TASK_SUCCESS;
fail:
	cw_doc_images_free(img, n);
	json_decref(list);
	return st;
}

#define TASK(n, f, d) {CW_TASK_ABI_VERSION, n, f, d, false}
static const struct cw_task_def docconv_tasks[] = {
	TASK("docconv.convert", t_convert,
	     "convert(source, format='markdown', ocr='auto', pages=None, ocr_lang='eng', dpi=300, "
	     "password=None, output=None): text/markdown/json/html with OCR of image-only pages"),
	TASK("docconv.info", t_info, "info(source, password=None): metadata and page count"),
	TASK("docconv.render", t_render,
	     "render(source, pages=None, dpi=150, format='png', output, password=None): page "
	     "images written under output"),
};

int cw_docconv_register(struct cw_registry *r)
{
	for (size_t i = 0; i < sizeof(docconv_tasks) / sizeof(docconv_tasks[0]); i++)
		if (cw_registry_add(r, &docconv_tasks[i]) != CW_OK)
			return CW_EINVAL;
	return CW_OK;
}

void cw_docconv_shutdown(void)
{
	cw_doc_engine_free(engine);
	engine = NULL;
	free(roots);
	free(roots_copy);
	roots = NULL;
	roots_copy = NULL;
}
