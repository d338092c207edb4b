/* The docconv.* tasks (document conversion) and their settings. */
#ifndef CW_DOCCONV_TASKS_H
#define CW_DOCCONV_TASKS_H

#include <stdbool.h>
#include <stddef.h>

#include "tasks/registry.h"

struct cw_docconv_conf {
	const char *roots;        /* comma-separated local directories tasks may read/write */
	size_t max_download;      /* bytes of one http(s)/s3 input; 0 = storage default */
	double timeout;           /* seconds per transfer; 0 = storage default */
	const char *s3_endpoint, *s3_region;
	bool s3_path_style;
	size_t memory_mib;        /* MuPDF memory cap per task */
	int max_pages;
	size_t inline_max;        /* bytes of content returned inline; 0 = no limit */
	const char *database_url; /* document store for output="postgresql:TABLE"; NULL = none */
};

/* Call in the master before the pool forks. */
int cw_docconv_configure(const struct cw_docconv_conf *c);
int cw_docconv_register(struct cw_registry *r);
void cw_docconv_shutdown(void);

#endif
