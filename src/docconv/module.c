/*
 * docconv as a task module, the half linked into the worker (impl.h): the
 * descriptor, the docconv.* tasks' names, parameters and documentation, the
 * settings (read once by the configure hook, in the master before the pool
 * forks, so every child inherits them), and the loader of the other half.
 *
 * Nothing here links MuPDF, Tesseract or libpq.  The task functions
 * registered below are trampolines: the first docconv task a process runs
 * dlopen()s cworker-docconv.so (found by configure) and every call goes on
 * to the function of the same name there.  The master (prefork) and idle
 * children never map it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "cworker/log.h"
#include "cworker/module.h"
#include "impl.h"
#include "module.h"
#include "taskdefs.h"
#ifdef DOCCONV_HAVE_DOCSTORE
#include "docstore.h"
#endif

#ifndef DOCCONV_VERSION
#define DOCCONV_VERSION "0"
#endif
#ifndef DOCCONV_LIBDIR
#define DOCCONV_LIBDIR "/usr/local/lib/cworker"
#endif

/* The defaults and ranges of the worker's option table (src/config/config.c). */
static struct cw_docconv_settings settings = {
	.memory_mib = 512,
	.max_pages = 10000,
	.inline_max = 8388608,
};
static char *database_url;             /* the string settings.database_url points to */
static char library[PATH_MAX];         /* cworker-docconv.so, found by configure */

/* This process's view of the other half: loaded on first use, or why it could not be. */
static const struct cw_docconv_impl *impl;
static char load_error[PATH_MAX + 300];

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

/* A readable file at path; false with the reason in err. */
static bool readable(const char *path, char *err, size_t errlen)
{
	if (access(path, R_OK) == 0)
		return true;
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return false;
}

/* base/docconv/cworker-docconv.so, base being the directory of exe; false if none. */
static bool next_to(const char *exe, char *out, size_t outsz)
{
	const char *slash = exe ? strrchr(exe, '/') : NULL;
	if (!slash)
		return false;
	int n = snprintf(out, outsz, "%.*s/docconv/%s", (int)(slash - exe), exe,
			 CW_DOCCONV_LIBRARY_NAME);
	return n > 0 && (size_t)n < outsz && access(out, R_OK) == 0;
}

/*
 * Where cworker-docconv.so is: the docconv_library setting when given (it
 * must be readable); else docconv/ beside the executable, which is where a
 * build tree has it (build/src/cworker, build/src/docconv/); else
 * DOCCONV_LIBDIR, where it is installed.  0, or -1 with the reason in err.
 */
static int find_library(const char *set, char *out, size_t outsz, char *err, size_t errlen)
{
	if (set && *set) {
		if (strlen(set) >= outsz) {
			snprintf(err, errlen, "docconv_library is too long");
			return -1;
		}
		if (!readable(set, err, errlen))
			return -1;
		snprintf(out, outsz, "%s", set);
		return 0;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		if (next_to(exe, out, outsz))
			return 0;
	}
	/* the name the process was started with (under valgrind /proc/self/exe is the tool) */
	if (next_to((const char *)getauxval(AT_EXECFN), out, outsz))
		return 0;
	snprintf(out, outsz, "%s/%s", DOCCONV_LIBDIR, CW_DOCCONV_LIBRARY_NAME);
	if (access(out, R_OK) == 0)
		return 0;
	snprintf(err, errlen, "cannot find %s (looked beside the executable and in %s): set "
		 "docconv_library or CWORKER_DOCCONV_LIBRARY", CW_DOCCONV_LIBRARY_NAME,
		 DOCCONV_LIBDIR);
	return -1;
}

/*
 * Open cworker-docconv.so at path and check that it is this build's; NULL
 * with the reason in err.  Tesseract's OpenMP runtime sizes its thread pool
 * when it loads, from OMP_THREAD_LIMIT: one thread per process, unless the
 * caller chose, because more only adds contention between pool children.
 */
static const struct cw_docconv_impl *open_impl(const char *path, char *err, size_t errlen)
{
	if (!getenv("OMP_THREAD_LIMIT"))
		(void)setenv("OMP_THREAD_LIMIT", "1", 1);
	dlerror();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		snprintf(err, errlen, "cannot load %s: %s", path, why ? why : "unknown error");
		return NULL;
	}
	const struct cw_docconv_impl *i = dlsym(h, CW_DOCCONV_IMPL_SYMBOL);
	if (!i || i->version != CW_DOCCONV_IMPL_VERSION || i->size != sizeof(*i) || !i->build ||
	    strcmp(i->build, DOCCONV_VERSION)) {
		snprintf(err, errlen, "%s is not the docconv of this cworker %s (another build?)",
			 path, DOCCONV_VERSION);
		dlclose(h);
		return NULL;
	}
	return i;   /* never closed: the engine and its libraries stay until the process ends */
}

/* The implementation, loaded on this process's first docconv task; NULL with the task failed. */
static const struct cw_docconv_impl *get_impl(struct cw_task_ctx *ctx)
{
	if (!impl && !load_error[0]) {
		char why[sizeof(load_error)];
		impl = library[0] ? open_impl(library, why, sizeof(why)) : NULL;
		if (!library[0])
			snprintf(why, sizeof(why), "the worker was not configured");
		if (impl) {
			impl->configure(&settings);
			cw_log(CW_LOG_DEBUG, "docconv", "loaded %s", library);
		} else {
			snprintf(load_error, sizeof(load_error), "%s", why);
			cw_log(CW_LOG_ERROR, "docconv", "%s", load_error);
		}
	}
	if (!impl)
		cw_task_fail(ctx, "ImportError", NULL, "docconv: %s", load_error);
	return impl;
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
	char path[sizeof(library)];
	if (find_library(cw_setting(s, "docconv_library"), path, sizeof(path), err, errlen)) {
		char why[sizeof(load_error)];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "docconv: %s", why);
		free(copy);
		return -1;
	}
	memcpy(library, path, sizeof(library));
	free(database_url);
	database_url = copy;
	settings = (struct cw_docconv_settings){.memory_mib = (size_t)mem, .max_pages = (int)pages,
						.inline_max = (size_t)inline_max,
						.database_url = database_url};
	return 0;
}

static void module_exit(void)
{
	if (impl)
		impl->exit();
}

/* ---- the tasks: declared here, run by cworker-docconv.so ----------------------- */

static enum cw_task_status t_convert(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				     json_t **result)
{
	const struct cw_docconv_impl *i = get_impl(ctx);
	return i ? i->convert(ctx, args, kwargs, result) : CW_TASK_FAILURE;
}

static enum cw_task_status t_info(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	const struct cw_docconv_impl *i = get_impl(ctx);
	return i ? i->info(ctx, args, kwargs, result) : CW_TASK_FAILURE;
}

static enum cw_task_status t_render(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				    json_t **result)
{
	const struct cw_docconv_impl *i = get_impl(ctx);
	return i ? i->render(ctx, args, kwargs, result) : CW_TASK_FAILURE;
}

/* In the order of taskdefs.h. */
static const struct cw_param convert_params[CV_N + 1] = {
	[CV_SOURCE] = {"source", 0},
	[CV_FORMAT] = {"format", CW_PARAM_OPTIONAL},
	[CV_OCR] = {"ocr", CW_PARAM_OPTIONAL},
	[CV_PAGES] = {"pages", CW_PARAM_OPTIONAL},
	[CV_OCR_LANG] = {"ocr_lang", CW_PARAM_OPTIONAL},
	[CV_DPI] = {"dpi", CW_PARAM_OPTIONAL},
	[CV_PASSWORD] = {"password", CW_PARAM_OPTIONAL},
	[CV_OUTPUT] = {"output", CW_PARAM_OPTIONAL},
	[CV_DEDUP] = {"dedup", CW_PARAM_OPTIONAL},
	[CV_BATCH] = {"batch", CW_PARAM_OPTIONAL},
	[CV_BATCH_TOTAL] = {"batch_total", CW_PARAM_OPTIONAL},
	[CV_FURNITURE] = {"furniture", CW_PARAM_OPTIONAL},
	[CV_PAGE_SEPARATOR] = {"page_separator", CW_PARAM_OPTIONAL},
	[CV_N] = {NULL, 0},
};

static const struct cw_param info_params[INFO_N + 1] = {
	[INFO_SOURCE] = {"source", 0},
	[INFO_PASSWORD] = {"password", CW_PARAM_OPTIONAL},
	[INFO_N] = {NULL, 0},
};

/*
 * output has no default but comes after parameters that have one, which a
 * Python signature cannot say: it is declared optional and checked by the task.
 */
static const struct cw_param render_params[RD_N + 1] = {
	[RD_SOURCE] = {"source", 0},
	[RD_PAGES] = {"pages", CW_PARAM_OPTIONAL},
	[RD_DPI] = {"dpi", CW_PARAM_OPTIONAL},
	[RD_FORMAT] = {"format", CW_PARAM_OPTIONAL},
	[RD_OUTPUT] = {"output", CW_PARAM_OPTIONAL},
	[RD_PASSWORD] = {"password", CW_PARAM_OPTIONAL},
	[RD_N] = {NULL, 0},
};

static const struct cw_task_def convert_def = {
	CW_ABI_VERSION, "docconv.convert", t_convert,
	"convert(source, format='markdown', ocr='auto', pages=None, ocr_lang='eng', dpi=300, "
	"password=None, output=None, dedup=False, batch=None, batch_total=None, "
	"furniture='drop', page_separator=None): text/markdown/json/html with tables, "
	"reading order and OCR of image-only pages; output='postgresql:TABLE' stores a row",
	false, convert_params,
};

static const struct cw_task_def info_def = {
	CW_ABI_VERSION, "docconv.info", t_info,
	"info(source, password=None): metadata and page count", false, info_params,
};

static const struct cw_task_def render_def = {
	CW_ABI_VERSION, "docconv.render", t_render,
	"render(source, pages=None, dpi=150, format='png', output, password=None): page "
	"images written under output",
	false, render_params,
};

static const struct cw_task_def *const tasks[] = {&convert_def, &info_def, &render_def, NULL};

const struct cw_module cw_docconv_module = {
	.abi_version = CW_ABI_VERSION,
	.size = sizeof(struct cw_module),
	.name = "docconv",
	.version = DOCCONV_VERSION,
	.tasks = tasks,
	.configure = configure,
	.init = NULL,   /* nothing before the first docconv task: see get_impl */
	.exit = module_exit,
};

int cw_docconv_batch_main(int argc, char **argv)
{
	char path[PATH_MAX], err[PATH_MAX + 300];
	const struct cw_docconv_impl *i = NULL;
	if (find_library(getenv("CWORKER_DOCCONV_LIBRARY"), path, sizeof(path), err,
			 sizeof(err)) == 0)
		i = open_impl(path, err, sizeof(err));
	if (i && !i->batch_main)
		snprintf(err, sizeof(err), "%s has no document store", path);
	if (!i || !i->batch_main) {
		fprintf(stderr, "cworker batch: %s\n", err);
		return 1;
	}
	return i->batch_main(argc, argv);
}
