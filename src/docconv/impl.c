/*
 * cworker-docconv.so's entry points (impl.h): the settings the descriptor
 * passes in, the conversion engine each process keeps warm across tasks
 * (started on first use, dropped by exit), and the one exported symbol.
 */
#include <stdlib.h>
#include <string.h>

#include "cworker/log.h"
#include "cworker/task.h"
#include "docconv.h"
#include "impl.h"
#include "tasks_int.h"
#ifdef DOCCONV_HAVE_DOCSTORE
#include "docstore.h"
#endif

#ifndef DOCCONV_VERSION
#define DOCCONV_VERSION "0"
#endif

/* The descriptor's defaults, until configure says otherwise (`cworker batch` never does). */
static struct cw_docconv_settings settings = {
	.memory_mib = 512,
	.max_pages = 10000,
	.inline_max = 8388608,
};
static struct cw_doc_engine *engine;   /* one per process */

const struct cw_docconv_settings *cw_docconv_settings(void)
{
	return &settings;
}

static void configure(const struct cw_docconv_settings *s)
{
	settings = *s;
}

static void impl_exit(void)
{
#ifdef DOCCONV_HAVE_DOCSTORE
	cw_docstore_close();
#endif
	cw_doc_engine_free(engine);
	engine = NULL;
}

struct cw_doc_engine *cw_docconv_engine(struct cw_task_ctx *ctx)
{
	if (!engine) {
		struct cw_doc_limits lim = {.memory = settings.memory_mib << 20,
					    .max_pages = settings.max_pages};
		engine = cw_doc_engine_new(&lim);
		if (!engine) {
			cw_log(CW_LOG_ERROR, "docconv", "cannot start the MuPDF engine");
			cw_task_fail(ctx, "MemoryError", NULL, "cannot start the MuPDF engine");
			return NULL;
		}
	}
	/* this task's flag: a soft limit that passed before the work starts stops it */
	cw_doc_engine_set_cancel(engine, cw_task_cancel_flag(ctx));
	return engine;
}

static void page_done(void *user, int done, int total)
{
	cw_task_progress(user, done, total);  /* throttled by the worker */
}

void cw_docconv_work_begin(struct cw_task_ctx *ctx, struct cw_doc_engine *e)
{
	cw_doc_engine_set_cancel(e, cw_task_cancel_flag(ctx));
	cw_doc_engine_set_progress(e, page_done, ctx);
	cw_task_uninterruptible_begin(ctx, cw_doc_engine_abort_flag(e));
}

void cw_docconv_work_end(struct cw_task_ctx *ctx, struct cw_doc_engine *e)
{
	cw_task_uninterruptible_end(ctx);
	cw_doc_engine_set_progress(e, NULL, NULL);
}

/* The only symbol cworker-docconv.so exports (docconv.map). */
extern const struct cw_docconv_impl cworker_docconv_impl;
const struct cw_docconv_impl cworker_docconv_impl = {
	.version = CW_DOCCONV_IMPL_VERSION,
	.size = sizeof(struct cw_docconv_impl),
	.build = DOCCONV_VERSION,
	.configure = configure,
	.convert = cw_docconv_convert,
	.info = cw_docconv_info,
	.render = cw_docconv_render,
	.exit = impl_exit,
#ifdef DOCCONV_HAVE_DOCSTORE
	.batch_main = cw_docstore_batch_main,
#else
	.batch_main = NULL,
#endif
};
