/*
 * The two halves of the docconv module and the one seam between them.
 *
 *   module.c (the descriptor) is linked into the worker: task names, their
 *   parameters and documentation, the settings read by the configure hook.
 *   It links nothing of MuPDF, Tesseract or libpq, so the master and idle
 *   pool children never map them.
 *
 *   impl.c and the rest of this directory are cworker-docconv.so, which a
 *   process (a pool child, or the master with --pool solo) dlopen()s the
 *   first time it runs a docconv task, and `cworker batch` when it starts.
 *
 * Both halves come from one build: the loader refuses an implementation
 * whose version, interface version or struct size differ.
 */
#ifndef CW_DOCCONV_IMPL_H
#define CW_DOCCONV_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "cworker/task.h"

/* The settings, fixed by the configure hook in the master before the pool forks. */
struct cw_docconv_settings {
	size_t memory_mib;        /* docconv_memory_limit: MuPDF memory cap per document */
	int max_pages;            /* docconv_max_pages */
	size_t inline_max;        /* docconv_inline_max: bytes returned inline; 0 = no limit */
	const char *database_url; /* document store for output="postgresql:TABLE"; NULL = none */
};

#define CW_DOCCONV_IMPL_SYMBOL "cworker_docconv_impl"
#define CW_DOCCONV_IMPL_VERSION 1u
#define CW_DOCCONV_LIBRARY_NAME "cworker-docconv.so"

struct cw_docconv_impl {
	unsigned version;         /* CW_DOCCONV_IMPL_VERSION */
	size_t size;              /* sizeof(struct cw_docconv_impl) */
	const char *build;        /* DOCCONV_VERSION of the build */
	/* settings for this process (copied; the strings must outlive the process) */
	void (*configure)(const struct cw_docconv_settings *s);
	cw_task_fn convert, info, render;
	/* drop the engine and the document store connection (a process that ran tasks ends) */
	void (*exit)(void);
	/* `cworker batch ...` (argv[0] = "batch"); NULL without the document store */
	int (*batch_main)(int argc, char **argv);
};

#endif
