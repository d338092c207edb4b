/*
 * docconv.convert(output="postgresql:TABLE"): one row per converted
 * document in the document store (docstore.c), found again by its SHA-256
 * with dedup=True, and each task recorded in its batch (batch=, or the
 * Celery group) for `cworker batch status`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cworker/log.h"
#include "cworker/task.h"
#include "docconv.h"
#include "docstore.h"
#include "tasks_int.h"

double cw_docconv_wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Record the task in its batch (if any); a failure to record is logged, not raised. */
static void note(struct cw_task_ctx *ctx, const struct cw_docconv_store_job *j, bool failed,
		 long long id, const char *error)
{
	if (!j->batch)
		return;
	struct cw_docstore_item it = {.batch = j->batch, .task_id = cw_task_id(ctx),
				      .source = j->source, .failed = failed, .table = j->table,
				      .doc_id = id, .error = error, .total = j->total,
				      .started = j->started};
	struct cw_docstore_error err = {0};
	if (cw_docstore_note(j->url, &it, &err) != CW_DOCSTORE_OK)
		cw_log(CW_LOG_WARNING, "docconv", "batch %s: %s", j->batch, err.msg);
}

/* Fail the task with e and record the failure in its batch. */
static enum cw_task_status item_fail(struct cw_task_ctx *ctx, const struct cw_docconv_store_job *j,
				     const struct cw_exc *e)
{
	char *line = NULL;
	if (asprintf(&line, "%s: %s", e->type, e->message) < 0)
		line = NULL;
	note(ctx, j, true, 0, line ? line : e->message);
	free(line);
	return cw_task_raise(ctx, e);
}

static enum cw_task_status db_fail(struct cw_task_ctx *ctx, const struct cw_docconv_store_job *j,
				   int rc, const struct cw_docstore_error *err)
{
	struct cw_exc e = {.type = "DatabaseError", .module = "cworker.exceptions"};
	snprintf(e.message, sizeof(e.message), "%s", err->msg);
	if (rc == CW_DOCSTORE_EIO) /* unreachable: recording the failure there would fail too */
		return cw_task_raise(ctx, &e);
	return item_fail(ctx, j, &e);
}

bool cw_docconv_store_args(struct cw_task_ctx *ctx, json_t *const *v,
			   struct cw_docconv_store_job *j)
{
	struct cw_docstore_error err = {0};
	const char *url = cw_docconv_settings()->database_url;
	if (cw_docstore_check_table(j->table, &err) != CW_DOCSTORE_OK) {
		cw_task_fail(ctx, "ValueError", NULL, "output: %s", err.msg);
		return false;
	}
	if (!url || !*url) {
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
	j->url = url;
	j->dedup = json_is_true(v[0]);
	j->batch = v[1] ? json_string_value(v[1]) : cw_task_group(ctx);
	j->total = v[2] ? (long long)json_integer_value(v[2]) : -1;
	return true;
}

static json_t *stored_result(const struct cw_docconv_store_job *j, long long id, bool dedup)
{
	return json_pack("{s:s,s:I,s:s,s:b,s:s,s:s,s:s?}", "table", j->table, "id",
			 (json_int_t)id, "sha256", j->sha256, "deduplicated", dedup, "format",
			 j->format, "source", j->source, "batch", j->batch);
}

/* The row for a converted document; its content as text (*text: a copy to free, or NULL). */
static struct cw_docstore_doc row_of(struct cw_task_ctx *ctx,
				     const struct cw_docconv_store_job *j, json_t *out,
				     char **text)
{
	json_t *content = json_object_get(out, "content");
	*text = json_is_string(content) ? NULL : json_dumps(content, JSON_COMPACT);
	return (struct cw_docstore_doc){
		.source = j->source, .sha256 = j->sha256, .format = j->format,
		.content = *text ? *text : json_string_value(content),
		.content_len = *text ? strlen(*text) : json_string_length(content),
		.metadata = json_object_get(out, "metadata"),
		.ocr_pages = json_object_get(out, "ocr_pages"),
		.warnings = json_object_get(out, "warnings"),
		.page_count = (int)json_integer_value(json_object_get(out, "pages")),
		.batch = j->batch, .task_id = cw_task_id(ctx)};
}

/* Store the conversion out (consumed) as a row. */
static enum cw_task_status put_row(struct cw_task_ctx *ctx, struct cw_docconv_store_job *j,
				   json_t *out, json_t **result)
{
	struct cw_docstore_error err = {0};
	char *text = NULL;
	long long id = 0;
	bool existing = false;
	struct cw_docstore_doc d = row_of(ctx, j, out, &text);
	if (!d.content) {
		free(text);
		json_decref(out);
		return cw_task_fail(ctx, "MemoryError", NULL, "cannot encode the content");
	}
	int rc = cw_docstore_put(j->url, j->table, &d, !j->dedup, &id, &existing, &err);
	size_t clen = d.content_len;
	free(text);
	if (rc != CW_DOCSTORE_OK) {
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

enum cw_task_status cw_docconv_store(struct cw_task_ctx *ctx, struct cw_doc_engine *e,
				     struct cw_docconv_store_job *j,
				     const struct cw_doc_convert_opts *o, json_t **result)
{
	struct cw_docstore_error err = {0};
	struct cw_exc exc = {.type = ""};
	unsigned char *data = NULL;
	size_t len = 0;
	long long id = 0;
	if (cw_task_read(ctx, j->source, &data, &len, &exc) != 0)
		return item_fail(ctx, j, &exc);
	cw_docstore_sha256(data, len, j->sha256);
	if (j->dedup) {
		int rc = cw_docstore_find(j->url, j->table, j->sha256, j->format, &id, &err);
		if (rc == CW_DOCSTORE_OK) {
			free(data);
			note(ctx, j, false, id, NULL);
			*result = stored_result(j, id, true);
			return CW_TASK_SUCCESS;
		}
		if (rc != CW_DOCSTORE_ENOTFOUND) {
			free(data);
			return db_fail(ctx, j, rc, &err);
		}
	}
	json_t *out = NULL;
	cw_docconv_work_begin(ctx, e);
	struct cw_doc_result r = cw_doc_convert(e, data, len, j->source, o, &out);
	cw_docconv_work_end(ctx, e);
	free(data);
	if (r.status != CW_DOC_OK) {
		cw_docconv_doc_exc(&r, &exc);
		return item_fail(ctx, j, &exc);
	}
	return put_row(ctx, j, out, result);
}
