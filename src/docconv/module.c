/*
 * docconv as a task module: the descriptor, the settings (read once by the
 * configure hook, in the master before the pool forks, so every child
 * inherits them), and the conversion engine each process keeps warm across
 * tasks: started on first use, dropped by the exit hook.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cworker/log.h"
#include "cworker/module.h"
#include "docconv.h"
#include "module.h"
#include "tasks_int.h"
#ifdef DOCCONV_HAVE_DOCSTORE
#include "docstore.h"
#endif

#ifndef DOCCONV_VERSION
#define DOCCONV_VERSION "0"
#endif

/* The defaults and ranges of the worker's option table (src/config/config.c). */
static struct cw_docconv_settings settings = {
	.memory_mib = 512,
	.max_pages = 10000,
	.inline_max = 8388608,
};
static char *database_url;             /* the string settings.database_url points to */
static struct cw_doc_engine *engine;   /* one per process */

const struct cw_docconv_settings *cw_docconv_settings(void)
{
	return &settings;
}

/*
 * An integer setting in [min, max]; unset or empty = def.  The worker checks
 * its own values, but a [module:docconv] section reaches us unchecked.
 */
static int long_setting(const struct cw_settings *s, const char *key, long def, long min,
			long max, long *out, char *err, size_t errlen)
{
	const char *v = cw_setting(s, key);
	char *end;
	long n;

	*out = def;
	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max) {
		snprintf(err, errlen, "docconv: %s = '%.64s' is not an integer in %ld..%ld", key, v,
			 min, max);
		return -1;
	}
	*out = n;
	return 0;
}

static int configure(const struct cw_settings *s, char *err, size_t errlen)
{
	long mem, pages, inline_max;
	if (long_setting(s, "docconv_memory_limit", 512, 16, 1048576, &mem, err, errlen) ||
	    long_setting(s, "docconv_max_pages", 10000, 1, 10000000, &pages, err, errlen) ||
	    long_setting(s, "docconv_inline_max", 8388608, 0, 1L << 40, &inline_max, err, errlen))
		return -1;
	const char *url = cw_setting(s, "database_url");
	char *copy = NULL;
	if (url && *url) {
#ifdef DOCCONV_HAVE_DOCSTORE
		struct cw_docstore_error e = {0};
		if (cw_docstore_check_url(url, &e) != CW_DOCSTORE_OK) {
			snprintf(err, errlen, "docconv: %s", e.msg);
			return -1;
		}
#endif
		copy = strdup(url);
		if (!copy) {
			snprintf(err, errlen, "docconv: out of memory");
			return -1;
		}
	}
	free(database_url);
	database_url = copy;
	settings = (struct cw_docconv_settings){.memory_mib = (size_t)mem, .max_pages = (int)pages,
						.inline_max = (size_t)inline_max,
						.database_url = database_url};
	return 0;
}

static void module_exit(void)
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

static const struct cw_task_def *const tasks[] = {
	&cw_docconv_convert_def, &cw_docconv_info_def, &cw_docconv_render_def, NULL,
};

const struct cw_module cw_docconv_module = {
	.abi_version = CW_ABI_VERSION,
	.size = sizeof(struct cw_module),
	.name = "docconv",
	.version = DOCCONV_VERSION,
	.tasks = tasks,
	.configure = configure,
	.init = NULL,
	.exit = module_exit,
};
