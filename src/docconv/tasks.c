/*
 * The docconv.* Celery tasks: arguments in Celery's calling convention,
 * sources and outputs through the storage layer, work done by the engine
 * kept warm in each pool child.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "docconv/docconv.h"
#include "docconv/tasks.h"
#ifdef CW_HAVE_POSTGRES
#include "docconv/docstore.h"
#endif
#include "storage/storage.h"
#include "tasks/exec_cancel.h"
#include "util/log.h"

static struct cw_docconv_conf conf;
static const char **roots;
static char *roots_copy;               /* the strings roots[] points into */
static struct cw_doc_engine *engine;   /* one per process, created on first use */

int cw_docconv_configure(const struct cw_docconv_conf *c)
{
	conf = *c;
#ifdef CW_HAVE_POSTGRES
	struct cw_error err = {0};
	if (c->database_url && *c->database_url &&
	    cw_docstore_check_url(c->database_url, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "docconv", "%s", err.msg);
		return -1;
	}
#endif
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

/* The exception a failed engine call raises: *type and *module. */
static void doc_exc(const struct cw_doc_result *r, const char **type, const char **module)
{
	if (r->status == CW_DOC_CANCELLED) {
		*type = "SoftTimeLimitExceeded";
		*module = "celery.exceptions";
		return;
	}
	*type = cw_doc_status_exc(r->status);
	*module = r->status == CW_DOC_ARGS ? "builtins" : "cworker.exceptions";
}

static enum cw_task_status doc_fail(struct cw_task_ctx *ctx, struct cw_doc_result r)
{
	const char *type, *module;
	doc_exc(&r, &type, &module);
	return cw_task_fail(ctx, type, module, "%s", r.message);
}

static void storage_exc(int rc, const char **type, const char **module)
{
	*type = rc == CW_ENOTFOUND ? "FileNotFoundError"
		: rc == CW_EINVAL  ? "PermissionError"
		: rc == CW_ELIMIT  ? "ResourceLimit"
				   : "StorageError";
	*module = rc == CW_ELIMIT || rc == CW_EIO ? "cworker.exceptions" : NULL;
}

static enum cw_task_status storage_fail(struct cw_task_ctx *ctx, int rc, const struct cw_error *e)
{
	const char *type, *module;
	storage_exc(rc, &type, &module);
	return cw_task_fail(ctx, type, module, "%s", e->msg);
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

#ifdef CW_HAVE_POSTGRES
/* One convert(output="postgresql:TABLE") call. */
struct store_job {
	const char *url, *table, *source, *format, *batch;
	long long total;           /* batch_total; -1 = not given */
	bool dedup;
	double started;            /* wall clock */
	char sha256[65];
};

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Record the task in its batch (if any); a failure to record is logged, not raised. */
static void note(struct cw_task_ctx *ctx, const struct store_job *j, bool failed,
		 long long id, const char *error)
{
	if (!j->batch)
		return;
	struct cw_docstore_item it = {.batch = j->batch, .task_id = cw_task_id(ctx),
				      .source = j->source, .failed = failed, .table = j->table,
				      .doc_id = id, .error = error, .total = j->total,
				      .started = j->started};
	struct cw_error err = {0};
	if (cw_docstore_note(j->url, &it, &err) != CW_OK)
		cw_log(CW_LOG_WARNING, "docconv", "batch %s: %s", j->batch, err.msg);
}

/* Fail the task and record the failure in its batch. */
static enum cw_task_status item_fail(struct cw_task_ctx *ctx, const struct store_job *j,
				     const char *type, const char *module, const char *msg)
{
	char *line = NULL;
	if (asprintf(&line, "%s: %s", type, msg) < 0)
		line = NULL;
	note(ctx, j, true, 0, line ? line : msg);
	free(line);
	return cw_task_fail(ctx, type, module, "%s", msg);
}

static enum cw_task_status db_fail(struct cw_task_ctx *ctx, const struct store_job *j, int rc,
				   const struct cw_error *e)
{
	if (rc == CW_EIO) /* unreachable: recording the failure there would fail too */
		return cw_task_fail(ctx, "DatabaseError", "cworker.exceptions", "%s", e->msg);
	return item_fail(ctx, j, "DatabaseError", "cworker.exceptions", e->msg);
}

/* The arguments only the document store takes: dedup, batch, batch_total. */
static bool store_args(struct cw_task_ctx *ctx, json_t *const *v, struct store_job *j)
{
	struct cw_error err = {0};
	if (cw_docstore_check_table(j->table, &err) != CW_OK) {
		cw_task_fail(ctx, "ValueError", NULL, "output: %s", err.msg);
		return false;
	}
	if (!conf.database_url || !*conf.database_url) {
		cw_task_fail(ctx, "ValueError", NULL,
			     "output=\"postgresql:%s\" needs a database: set database_url in the "
			     "config file or CWORKER_DATABASE_URL", j->table);
		return false;
	}
	if (v[0] && !json_is_boolean(v[0])) {
		cw_task_fail(ctx, "TypeError", NULL, "dedup must be True or False");
		return false;
	}
	if (v[1] && !json_is_string(v[1])) {
		cw_task_fail(ctx, "TypeError", NULL, "batch must be a string");
		return false;
	}
	if (v[2] && (!json_is_integer(v[2]) || json_integer_value(v[2]) < 0)) {
		cw_task_fail(ctx, "ValueError", NULL, "batch_total must be a non-negative integer");
		return false;
	}
	j->url = conf.database_url;
	j->dedup = json_is_true(v[0]);
	j->batch = v[1] ? json_string_value(v[1]) : cw_task_group(ctx);
	j->total = v[2] ? (long long)json_integer_value(v[2]) : -1;
	return true;
}

static json_t *stored_result(const struct store_job *j, long long id, bool dedup)
{
	return json_pack("{s:s,s:I,s:s,s:b,s:s,s:s,s:s?}", "table", j->table, "id",
			 (json_int_t)id, "sha256", j->sha256, "deduplicated", dedup, "format",
			 j->format, "source", j->source, "batch", j->batch);
}

/* Convert and store one row; the result names the row instead of carrying the content. */
static enum cw_task_status convert_to_store(struct cw_task_ctx *ctx, struct cw_doc_engine *e,
					    struct store_job *j,
					    const struct cw_doc_convert_opts *o, json_t **result)
{
	struct cw_storage_conf sc = storage_conf();
	struct cw_error err = {0};
	const char *type, *module;
	unsigned char *data = NULL;
	size_t len = 0;
	long long id = 0;
	int rc = cw_storage_get(&sc, j->source, &data, &len, &err);
	if (rc != CW_OK) {
		storage_exc(rc, &type, &module);
		return item_fail(ctx, j, type, module, err.msg);
	}
	cw_docstore_sha256(data, len, j->sha256);
	if (j->dedup) {
		rc = cw_docstore_find(j->url, j->table, j->sha256, j->format, &id, &err);
		if (rc == CW_OK) {
			free(data);
			note(ctx, j, false, id, NULL);
			*result = stored_result(j, id, true);
			return CW_TASK_SUCCESS;
		}
		if (rc != CW_ENOTFOUND) {
			free(data);
			return db_fail(ctx, j, rc, &err);
		}
	}
	json_t *out = NULL;
	work_begin(ctx, e);
	struct cw_doc_result r = cw_doc_convert(e, data, len, j->source, o, &out);
	work_end();
	free(data);
	if (r.status != CW_DOC_OK) {
		doc_exc(&r, &type, &module);
		return item_fail(ctx, j, type, module, r.message);
	}
	json_t *content = json_object_get(out, "content");
	char *text = json_is_string(content) ? NULL : json_dumps(content, JSON_COMPACT);
	struct cw_docstore_doc d = {
		.source = j->source, .sha256 = j->sha256, .format = j->format,
		.content = text ? text : json_string_value(content),
		.content_len = text ? strlen(text) : json_string_length(content),
		.metadata = json_object_get(out, "metadata"),
		.ocr_pages = json_object_get(out, "ocr_pages"),
		.warnings = json_object_get(out, "warnings"),
		.page_count = (int)json_integer_value(json_object_get(out, "pages")),
		.batch = j->batch, .task_id = cw_task_id(ctx)};
	bool existing = false;
	if (!d.content) {
		free(text);
		json_decref(out);
		return cw_task_fail(ctx, "MemoryError", NULL, "cannot encode the content");
	}
	rc = cw_docstore_put(j->url, j->table, &d, !j->dedup, &id, &existing, &err);
	size_t clen = d.content_len;
	free(text);
	if (rc != CW_OK) {
		json_decref(out);
		return db_fail(ctx, j, rc, &err);
	}
	note(ctx, j, false, id, NULL);
	json_t *res = stored_result(j, id, existing);
	json_object_set(res, "pages", json_object_get(out, "pages"));
	json_object_set(res, "ocr_pages", json_object_get(out, "ocr_pages"));
	json_object_set(res, "warnings", json_object_get(out, "warnings"));
	json_object_set_new(res, "bytes", json_integer((json_int_t)clen));
	json_decref(out);
	*result = res;
	return CW_TASK_SUCCESS;
}
#endif

static enum cw_task_status t_convert(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				     json_t **result)
{
	static const char *const names[] = {"source", "format", "ocr", "pages", "ocr_lang",
					    "dpi", "password", "output", "dedup", "batch",
					    "batch_total"};
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[11];
	if (!unpack(ctx, args, kwargs, names, 11, "convert", v))
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
	bool to_db = v[7] && !strncmp(json_string_value(v[7]), "postgresql:", 11);
	if (!to_db && (v[8] || v[9] || v[10]))
		return cw_task_fail(ctx, "TypeError", NULL, "dedup, batch and batch_total need "
				    "output=\"postgresql:TABLE\"");
#ifdef CW_HAVE_POSTGRES
	struct store_job job = {.table = to_db ? json_string_value(v[7]) + 11 : NULL,
				.source = json_string_value(v[0]), .format = fmt,
				.started = wall_now()};
	if (to_db && !store_args(ctx, v + 8, &job))
		return CW_TASK_FAILURE;
#else
	if (to_db)
		return cw_task_fail(ctx, "ValueError", NULL, "this cworker was built without "
				    "PostgreSQL: output=\"postgresql:...\" is not available");
#endif
	struct cw_doc_engine *e = get_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
#ifdef CW_HAVE_POSTGRES
	if (to_db)
		return convert_to_store(ctx, e, &job, &o, result);
#endif
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
	cw_task_count(ctx, "docconv_pages", (long)json_integer_value(json_object_get(out, "pages")));
	cw_task_count(ctx, "docconv_ocr_pages",
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
	cw_task_count(ctx, "docconv_pages", n);
	*result = json_pack("{s:o,s:i}", "pages", list, "dpi", dpi);
	return CW_TASK_SUCCESS;
fail:
	cw_doc_images_free(img, n);
	json_decref(list);
	return st;
}

#define TASK(n, f, d) {CW_ABI_VERSION, n, f, d, false, NULL}
static const struct cw_task_def docconv_tasks[] = {
	TASK("docconv.convert", t_convert,
	     "convert(source, format='markdown', ocr='auto', pages=None, ocr_lang='eng', dpi=300, "
	     "password=None, output=None, dedup=False, batch=None, batch_total=None): "
	     "text/markdown/json/html with OCR of image-only pages; output='postgresql:TABLE' "
	     "stores a row"),
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
#ifdef CW_HAVE_POSTGRES
	cw_docstore_close();
#endif
	cw_doc_engine_free(engine);
	engine = NULL;
	free(roots);
	free(roots_copy);
	roots = NULL;
	roots_copy = NULL;
}
