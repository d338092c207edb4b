/*
 * What the docconv task files share, private to src/docconv:
 *
 *   impl.c     the entry points of cworker-docconv.so (impl.h), the settings
 *              the descriptor passed, the engine each process keeps warm,
 *              engine work under the soft limit
 *   tasks.c    docconv.convert, docconv.info and docconv.render
 *   store.c    convert(output="postgresql:TABLE"): the row and the batch
 *              record in the document store (docstore.c), with libpq only
 */
#ifndef CW_DOCCONV_TASKS_INT_H
#define CW_DOCCONV_TASKS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "cworker/task.h"
#include "docconv.h"
#include "impl.h"

/* This process's settings (impl.h), as the descriptor's configure hook read them. */
const struct cw_docconv_settings *cw_docconv_settings(void);

/* This process's engine, started on first use; NULL with the task failed (MemoryError). */
struct cw_doc_engine *cw_docconv_engine(struct cw_task_ctx *ctx);
/*
 * Around engine work: the soft limit reaches MuPDF's cookie straight from
 * the signal handler (the child may give the task up if it cannot stop),
 * and finished pages are reported as the task's progress.
 */
void cw_docconv_work_begin(struct cw_task_ctx *ctx, struct cw_doc_engine *e);
void cw_docconv_work_end(struct cw_task_ctx *ctx, struct cw_doc_engine *e);
/* The exception a failed engine call raises. */
void cw_docconv_doc_exc(const struct cw_doc_result *r, struct cw_exc *e);

/* The task functions; the descriptor (module.c) declares their parameters. */
enum cw_task_status cw_docconv_convert(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				       json_t **result);
enum cw_task_status cw_docconv_info(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result);
enum cw_task_status cw_docconv_render(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				      json_t **result);

#ifdef DOCCONV_HAVE_DOCSTORE
/* One convert(output="postgresql:TABLE") call. */
struct cw_docconv_store_job {
	const char *url, *table, *source, *format, *batch;
	long long total;           /* batch_total; -1 = not given */
	bool dedup;
	double started;            /* wall clock */
	char sha256[65];
};

/*
 * Check the table name, the database setting and the arguments only the
 * store takes (v: dedup, batch, batch_total; NULL = not given) into j; false
 * with the task failed.
 */
bool cw_docconv_store_args(struct cw_task_ctx *ctx, json_t *const *v,
			   struct cw_docconv_store_job *j);
/* Convert j->source and store one row; the result names the row instead of the content. */
enum cw_task_status cw_docconv_store(struct cw_task_ctx *ctx, struct cw_doc_engine *e,
				     struct cw_docconv_store_job *j,
				     const struct cw_doc_convert_opts *o, json_t **result);
/* Wall clock time for j->started. */
double cw_docconv_wall_now(void);
#endif

#endif
