/*
 * The docconv.* Celery tasks: declared parameters (the worker binds each
 * call the way Python would), sources and outputs through the worker's
 * storage, the work done by the engine each process keeps warm (impl.c).
 * Their names, parameters and documentation are the descriptor's (module.c),
 * linked into the worker; these functions live in cworker-docconv.so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cworker/task.h"
#include "docconv.h"
#include "taskdefs.h"
#include "tasks_int.h"

/* Argument i; None counts as not given, as it always has for these tasks. */
static json_t *arg(struct cw_task_ctx *ctx, int i)
{
	json_t *v = cw_task_arg(ctx, i);
	return json_is_null(v) ? NULL : v;
}

static const char *str_or(json_t *v, const char *def)
{
	return json_is_string(v) ? json_string_value(v) : def;
}

void cw_docconv_doc_exc(const struct cw_doc_result *r, struct cw_exc *e)
{
	bool cancelled = r->status == CW_DOC_CANCELLED;
	snprintf(e->type, sizeof(e->type), "%s", cw_doc_status_exc(r->status));
	snprintf(e->module, sizeof(e->module), "%s",
		 cancelled ? "celery.exceptions"
			   : r->status == CW_DOC_ARGS ? "builtins" : "cworker.exceptions");
	snprintf(e->message, sizeof(e->message), "%s", r->message);
}

static enum cw_task_status doc_fail(struct cw_task_ctx *ctx, const struct cw_doc_result *r)
{
	struct cw_exc e = {.type = ""};
	cw_docconv_doc_exc(r, &e);
	return cw_task_raise(ctx, &e);
}

/* The source's bytes into *data (malloc'd); false with the task failed. */
static bool load(struct cw_task_ctx *ctx, const char *src, unsigned char **data, size_t *len,
		 enum cw_task_status *st)
{
	struct cw_exc e = {.type = ""};
	if (cw_task_read(ctx, src, data, len, &e) == 0)
		return true;
	*st = cw_task_raise(ctx, &e);
	return false;
}

/* ---- docconv.convert ---------------------------------------------------------- */


/* furniture= and page_separator= into o; false with the task failed. */
static bool layout_opts(struct cw_task_ctx *ctx, json_t *furniture, json_t *sep,
			struct cw_doc_convert_opts *o)
{
	const char *f = str_or(furniture, "drop");
	if (furniture && !json_is_string(furniture)) {
		cw_task_fail(ctx, "TypeError", NULL, "furniture must be a string");
		return false;
	}
	if (strcmp(f, "drop") && strcmp(f, "keep")) {
		cw_task_fail(ctx, "ValueError", NULL, "furniture must be drop or keep, not '%s'", f);
		return false;
	}
	o->keep_furniture = !strcmp(f, "keep");
	if (sep && !json_is_string(sep)) {
		cw_task_fail(ctx, "TypeError", NULL, "page_separator must be a string");
		return false;
	}
	o->page_separator = sep ? json_string_value(sep) : NULL;
	return true;
}

/* format= and ocr= into o; false with the task failed. */
static bool convert_modes(struct cw_task_ctx *ctx, const char *fmt, const char *ocr,
			  struct cw_doc_convert_opts *o)
{
	static const char *const formats[] = {"text", "markdown", "json", "html"};
	static const enum cw_doc_format fvals[] = {CW_FMT_TEXT, CW_FMT_MARKDOWN, CW_FMT_JSON,
						   CW_FMT_HTML};
	size_t i;
	for (i = 0; i < 4 && strcmp(fmt, formats[i]); i++)
		;
	if (i == 4) {
		cw_task_fail(ctx, "ValueError", NULL,
			     "format must be text, markdown, json or html, not '%s'", fmt);
		return false;
	}
	o->format = fvals[i];
	if (!strcmp(ocr, "always")) {
		o->ocr = CW_OCR_ALWAYS;
	} else if (!strcmp(ocr, "never")) {
		o->ocr = CW_OCR_NEVER;
	} else if (strcmp(ocr, "auto")) {
		cw_task_fail(ctx, "ValueError", NULL, "ocr must be auto, always or never");
		return false;
	}
	return true;
}

/* The converted content where output= says, or inline within docconv_inline_max. */
static enum cw_task_status deliver(struct cw_task_ctx *ctx, const struct cw_doc_convert_opts *o,
				   const char *fmt, json_t *output, json_t *out,
				   json_t **result)
{
	static const char *const types[] = {"text/plain; charset=utf-8",
					    "text/markdown; charset=utf-8", "application/json",
					    "text/html; charset=utf-8"};
	json_t *content = json_object_get(out, "content");
	size_t clen = 0, inline_max = cw_docconv_settings()->inline_max;
	char *text = NULL;
	if (json_is_string(content)) {
		clen = json_string_length(content);
	} else {
		text = json_dumps(content, JSON_COMPACT);
		clen = text ? strlen(text) : 0;
	}
	if (output) {
		struct cw_exc e = {.type = ""};
		int rc = cw_task_write(ctx, json_string_value(output),
				       text ? text : json_string_value(content), clen,
				       types[o->format], &e);
		free(text);
		if (rc != 0) {
			json_decref(out);
			return cw_task_raise(ctx, &e);
		}
		json_object_del(out, "content");
		json_object_set(out, "output", output);
		json_object_set_new(out, "bytes", json_integer((json_int_t)clen));
	} else {
		free(text);
		if (inline_max && clen > inline_max) {
			json_decref(out);
			return cw_task_fail(ctx, "ResourceLimit", "cworker.exceptions",
					    "the %s output is %zu bytes, over docconv_inline_max "
					    "(%zu): pass output=... to write it to storage",
					    fmt, clen, inline_max);
		}
	}
	cw_task_count(ctx, "docconv_pages", (long)json_integer_value(json_object_get(out, "pages")));
	cw_task_count(ctx, "docconv_ocr_pages",
		      (long)json_array_size(json_object_get(out, "ocr_pages")));
	*result = out;
	return CW_TASK_SUCCESS;
}

enum cw_task_status cw_docconv_convert(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				       json_t **result)
{
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[CV_N];
	(void)args;
	(void)kwargs;
	for (int i = 0; i < CV_N; i++)
		v[i] = arg(ctx, i);
	if (!json_is_string(v[CV_SOURCE]))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "convert() missing required argument 'source' (a string)");
	const char *source = json_string_value(v[CV_SOURCE]);
	struct cw_doc_convert_opts o = {.format = CW_FMT_MARKDOWN, .ocr = CW_OCR_AUTO,
					.ocr_lang = str_or(v[CV_OCR_LANG], "eng"), .dpi = 300,
					.password = str_or(v[CV_PASSWORD], NULL),
					.pages = v[CV_PAGES]};
	const char *fmt = str_or(v[CV_FORMAT], "markdown");
	if (!convert_modes(ctx, fmt, str_or(v[CV_OCR], "auto"), &o) ||
	    !layout_opts(ctx, v[CV_FURNITURE], v[CV_PAGE_SEPARATOR], &o))
		return CW_TASK_FAILURE;
	json_t *dpi = v[CV_DPI];
	if (dpi) {
		if (!json_is_integer(dpi) || json_integer_value(dpi) < 50 ||
		    json_integer_value(dpi) > 1200)
			return cw_task_fail(ctx, "ValueError", NULL, "dpi must be an integer 50..1200");
		o.dpi = (int)json_integer_value(dpi);
	}
	json_t *output = v[CV_OUTPUT];
	if (output && !json_is_string(output))
		return cw_task_fail(ctx, "TypeError", NULL, "output must be a string");
	bool to_db = output && !strncmp(json_string_value(output), "postgresql:", 11);
	if (!to_db && (v[CV_DEDUP] || v[CV_BATCH] || v[CV_BATCH_TOTAL]))
		return cw_task_fail(ctx, "TypeError", NULL, "dedup, batch and batch_total need "
				    "output=\"postgresql:TABLE\"");
#ifdef DOCCONV_HAVE_DOCSTORE
	struct cw_docconv_store_job job = {
		.table = to_db ? json_string_value(output) + 11 : NULL, .source = source,
		.format = fmt, .started = cw_docconv_wall_now()};
	if (to_db && !cw_docconv_store_args(ctx, v + CV_DEDUP, &job))
		return CW_TASK_FAILURE;
#else
	if (to_db)
		return cw_task_fail(ctx, "ValueError", NULL, "this cworker was built without "
				    "PostgreSQL: output=\"postgresql:...\" is not available");
#endif
	struct cw_doc_engine *e = cw_docconv_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
#ifdef DOCCONV_HAVE_DOCSTORE
	if (to_db)
		return cw_docconv_store(ctx, e, &job, &o, result);
#endif
	unsigned char *data = NULL;
	size_t len = 0;
	if (!load(ctx, source, &data, &len, &st))
		return st;
	json_t *out = NULL;
	cw_docconv_work_begin(ctx, e);
	struct cw_doc_result r = cw_doc_convert(e, data, len, source, &o, &out);
	cw_docconv_work_end(ctx, e);
	free(data);
	if (r.status != CW_DOC_OK)
		return doc_fail(ctx, &r);
	return deliver(ctx, &o, fmt, output, out, result);
}

/* ---- docconv.info ------------------------------------------------------------- */


enum cw_task_status cw_docconv_info(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *src = arg(ctx, INFO_SOURCE), *pw = arg(ctx, INFO_PASSWORD);
	(void)args;
	(void)kwargs;
	if (!json_is_string(src))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "info() missing required argument 'source' (a string)");
	struct cw_doc_engine *e = cw_docconv_engine(ctx);
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
		return doc_fail(ctx, &r);
	*result = out;
	return CW_TASK_SUCCESS;
}

/* ---- docconv.render ----------------------------------------------------------- */



/* Write the page images under base; *list gets one entry per page. */
static enum cw_task_status write_pages(struct cw_task_ctx *ctx, const char *base,
				       const struct cw_doc_page_image *img, int n, json_t *list)
{
	size_t blen = strlen(base);
	for (int i = 0; i < n; i++) {
		char *dst = NULL;
		struct cw_exc e = {.type = ""};
		if (asprintf(&dst, "%s%spage-%04d.png", base,
			     blen && base[blen - 1] == '/' ? "" : "/", img[i].page) < 0)
			return cw_task_fail(ctx, "MemoryError", NULL, "render");
		if (cw_task_write(ctx, dst, img[i].png, img[i].png_len, "image/png", &e) != 0) {
			free(dst);
			return cw_task_raise(ctx, &e);
		}
		json_array_append_new(list, json_pack("{s:i,s:i,s:i,s:s}", "page", img[i].page,
						      "width", img[i].width, "height",
						      img[i].height, "output", dst));
		free(dst);
	}
	return CW_TASK_SUCCESS;
}

enum cw_task_status cw_docconv_render(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				      json_t **result)
{
	enum cw_task_status st = CW_TASK_FAILURE;
	json_t *v[RD_N];
	(void)args;
	(void)kwargs;
	for (int i = 0; i < RD_N; i++)
		v[i] = arg(ctx, i);
	if (!json_is_string(v[RD_SOURCE]) || !json_is_string(v[RD_OUTPUT]))
		return cw_task_fail(ctx, "TypeError", NULL,
				    "render() needs source and output (strings)");
	if (v[RD_FORMAT] && strcmp(str_or(v[RD_FORMAT], ""), "png"))
		return cw_task_fail(ctx, "ValueError", NULL, "render() writes format='png' only");
	int dpi = 150;
	if (v[RD_DPI]) {
		if (!json_is_integer(v[RD_DPI]) || json_integer_value(v[RD_DPI]) < 10 ||
		    json_integer_value(v[RD_DPI]) > 1200)
			return cw_task_fail(ctx, "ValueError", NULL, "dpi must be an integer 10..1200");
		dpi = (int)json_integer_value(v[RD_DPI]);
	}
	struct cw_doc_engine *e = cw_docconv_engine(ctx);
	if (!e)
		return CW_TASK_FAILURE;
	const char *source = json_string_value(v[RD_SOURCE]);
	unsigned char *data = NULL;
	size_t len = 0;
	if (!load(ctx, source, &data, &len, &st))
		return st;
	struct cw_doc_page_image *img = NULL;
	int n = 0;
	cw_docconv_work_begin(ctx, e);
	struct cw_doc_result r = cw_doc_render(e, data, len, source, str_or(v[RD_PASSWORD], NULL),
					       v[RD_PAGES], dpi, &img, &n);
	cw_docconv_work_end(ctx, e);
	free(data);
	if (r.status != CW_DOC_OK)
		return doc_fail(ctx, &r);
	json_t *list = json_array();
	st = write_pages(ctx, json_string_value(v[RD_OUTPUT]), img, n, list);
	cw_doc_images_free(img, n);
	if (st != CW_TASK_SUCCESS) {
		json_decref(list);
		return st;
	}
	cw_task_count(ctx, "docconv_pages", n);
	*result = json_pack("{s:o,s:i}", "pages", list, "dpi", dpi);
	return CW_TASK_SUCCESS;
}
