/*
 * Positions of the declared parameters of the docconv.* tasks: the
 * descriptor (module.c) declares them in this order and the tasks (tasks.c)
 * read cw_task_arg(ctx, i) by these indices.  Change both together.
 */
#ifndef CW_DOCCONV_TASKDEFS_H
#define CW_DOCCONV_TASKDEFS_H

enum {
	CV_SOURCE, CV_FORMAT, CV_OCR, CV_PAGES, CV_OCR_LANG, CV_DPI, CV_PASSWORD, CV_OUTPUT,
	CV_DEDUP, CV_BATCH, CV_BATCH_TOTAL, CV_FURNITURE, CV_PAGE_SEPARATOR, CV_N
};

enum { INFO_SOURCE, INFO_PASSWORD, INFO_N };

enum { RD_SOURCE, RD_PAGES, RD_DPI, RD_FORMAT, RD_OUTPUT, RD_PASSWORD, RD_N };

#endif
