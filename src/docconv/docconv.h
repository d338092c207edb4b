/*
 * Document conversion engine: MuPDF for parsing, text and rendering,
 * Tesseract for OCR.  One engine per process (pool child), kept warm across
 * tasks: the MuPDF context with its capped allocator, and a Tesseract
 * engine per language loaded once.
 *
 * Everything here works on bytes in memory; where they come from and where
 * results go is the caller's business (the tasks read and write them through
 * the worker's storage).
 */
#ifndef CW_DOCCONV_H
#define CW_DOCCONV_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct cw_doc_engine;

struct cw_doc_limits {
	size_t memory;       /* bytes MuPDF may hold at once; 0 = 512 MiB */
	int max_pages;       /* documents with more pages fail (ResourceLimit); 0 = 10000 */
	double max_pixels;   /* render/OCR bitmap cap in pixels; 0 = 200e6 */
};

/* Failure classes, reported to Celery as these exception names. */
enum cw_doc_status {
	CW_DOC_OK = 0,
	CW_DOC_ERROR,        /* DocumentError: corrupt, truncated, unsupported */
	CW_DOC_PASSWORD,     /* PasswordRequired: encrypted, no or wrong password */
	CW_DOC_LIMIT,        /* ResourceLimit: pages, memory, bitmap size */
	CW_DOC_CANCELLED,    /* the soft time limit asked us to stop */
	CW_DOC_ARGS,         /* ValueError: bad arguments */
};

struct cw_doc_result {
	enum cw_doc_status status;
	char message[512];
};

enum cw_doc_format { CW_FMT_TEXT, CW_FMT_MARKDOWN, CW_FMT_JSON, CW_FMT_HTML };
enum cw_doc_ocr { CW_OCR_AUTO, CW_OCR_ALWAYS, CW_OCR_NEVER };

struct cw_doc_convert_opts {
	enum cw_doc_format format;
	enum cw_doc_ocr ocr;
	const char *ocr_lang;  /* "eng", "eng+deu" */
	int dpi;               /* OCR rendering */
	const char *password;
	json_t *pages;         /* NULL = all; else array of 1-based page numbers or [from, to] pairs */
	bool keep_furniture;   /* keep running headers, footers, page numbers in text/markdown/html */
	const char *page_separator;  /* between pages in text and markdown; NULL = \f or --- */
};

struct cw_doc_engine *cw_doc_engine_new(const struct cw_doc_limits *lim);
void cw_doc_engine_free(struct cw_doc_engine *e);

/*
 * Where cancellation comes from: *flag becomes non-zero when the task must
 * stop (set from a signal handler).  The engine copies it into MuPDF's
 * cookie and Tesseract's cancel callback.
 */
void cw_doc_engine_set_cancel(struct cw_doc_engine *e, volatile sig_atomic_t *flag);
/* MuPDF's cookie abort field, for a signal handler to set directly. */
volatile int *cw_doc_engine_abort_flag(struct cw_doc_engine *e);

/*
 * Called by convert and render after each selected page is done, with the
 * pages done so far and the pages selected; fn NULL = no reports.  The
 * callback must be cheap: it runs once per page.
 */
typedef void (*cw_doc_progress_fn)(void *user, int done, int total);
void cw_doc_engine_set_progress(struct cw_doc_engine *e, cw_doc_progress_fn fn, void *user);

/* Metadata and page count, no text extraction.  *out: new object. */
struct cw_doc_result cw_doc_info(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				 const char *name, const char *password, json_t **out);

/*
 * Convert: *out = {"format", "pages", "content", "metadata", "ocr_pages",
 * "warnings"} (content is a string; for json it is the document object).
 */
struct cw_doc_result cw_doc_convert(struct cw_doc_engine *e, const unsigned char *data,
				    size_t len, const char *name,
				    const struct cw_doc_convert_opts *o, json_t **out);

/* Render pages to PNG: *images, *nimages entries, each with its PNG bytes (malloc'd). */
struct cw_doc_page_image {
	int page;
	int width, height;
	unsigned char *png;
	size_t png_len;
};
struct cw_doc_result cw_doc_render(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				   const char *name, const char *password, json_t *pages, int dpi,
				   struct cw_doc_page_image **images, int *nimages);
void cw_doc_images_free(struct cw_doc_page_image *images, int n);

const char *cw_doc_status_exc(enum cw_doc_status s);

#endif
