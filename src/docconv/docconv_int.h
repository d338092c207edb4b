/*
 * What the parts of the conversion engine share, private to src/docconv:
 *
 *   engine.c     the MuPDF context (capped allocator, warnings, cancellation),
 *                opening a document within the limits, its metadata
 *   structure.c  the text model: a page's blocks and lines in reading order
 *                with their style, and the classification of lines (body size,
 *                heading levels, list items)
 *   writers.c    the output formats: text, markdown and html from the model,
 *                json blocks from MuPDF's structured text
 *   ocr.c        Tesseract: rendering a page and recognising it
 *   sbuf.c       the growable string the model and the writers build
 *   docconv.c    the entry points: page selection, convert and render loops
 */
#ifndef CW_DOCCONV_INT_H
#define CW_DOCCONV_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <mupdf/fitz.h>
#include <tesseract/capi.h>

#include "docconv.h"

/* ---- engine (engine.c) ---------------------------------------------------- */

/* Bytes MuPDF holds through the engine's allocator, against the cap. */
struct capalloc {
	size_t used, cap;
	unsigned refusals;
};

struct cw_doc_engine {
	fz_context *ctx;
	struct capalloc ca;
	fz_alloc_context alloc;
	struct cw_doc_limits lim;
	fz_cookie cookie;
	volatile sig_atomic_t *cancel;
	cw_doc_progress_fn progress;
	void *progress_user;
	unsigned warnings;
	char last_warning[200];
	TessBaseAPI *tess;
	char tess_lang[64];
	ETEXT_DESC *monitor;
};

/* An open document and its page count. */
struct opened {
	fz_document *doc;
	fz_stream *stm;
	int pages;
};

/* A result with its message formatted. */
struct cw_doc_result cw_doc_res(enum cw_doc_status st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* True once the task must stop (the cancel flag is copied into MuPDF's cookie). */
bool cw_doc_cancelled(struct cw_doc_engine *e);
/* Report done of total selected pages to the progress callback, if any. */
void cw_doc_progress(struct cw_doc_engine *e, int done, int total);
/* Open data (name only hints the type) and check password and page limit; resets the
 * per-document counters.  On failure nothing stays open. */
struct cw_doc_result cw_doc_open(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				 const char *name, const char *password, struct opened *o);
void cw_doc_close(struct cw_doc_engine *e, struct opened *o);
/* The document's metadata object (title, author, ..., encrypted, page_count). */
json_t *cw_doc_metadata(struct cw_doc_engine *e, struct opened *o);

/* ---- string buffer (sbuf.c) ------------------------------------------------ */

/* Always NUL-terminated once non-empty; oom sticks and later writes are dropped. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

void cw_sb_put(struct sbuf *b, const char *s, size_t n);
void cw_sb_str(struct sbuf *b, const char *s);
void cw_sb_rune(struct sbuf *b, int c);

/* ---- text model (structure.c) ---------------------------------------------- */

struct tline {
	char *text;
	float size;
	bool bold;
	fz_rect bbox;
	float baseline;
};

struct tblock {
	struct tline *lines;
	int n;
};

struct tpage {
	struct tblock *blocks;
	int n;
	int chars;          /* non-space characters */
	bool ocr;
	double ocr_conf;
	char *ocr_text;     /* OCR pages: Tesseract's text */
	json_t *ocr_json;   /* OCR pages: blocks for the json format */
	bool has_images;
	float w, h;
};

/* The document's text sizes: body text and the heading levels above it. */
struct styles {
	float body;           /* most common text size */
	float heads[3];       /* sizes of heading levels 1..3 */
	int nheads;
};

void cw_doc_page_free(struct tpage *p);
/* Lines of each text block, in reading order (baseline, then x), with their dominant style.
 * false: out of memory. */
bool cw_doc_page_model(fz_context *ctx, fz_stext_page *sp, struct tpage *p);
void cw_doc_find_styles(struct tpage *pages, int n, struct styles *st);
/* 1..3 for a heading line, 0 for body text. */
int cw_doc_heading_level(const struct styles *st, const struct tline *t);
/* A list item marker at the start of a line: "- " for bullets, the number for "1." / "1)";
 * *rest is the text after it.  NULL: not a list item. */
const char *cw_doc_list_marker(const char *t, char num[16], const char **rest);

/* ---- writers (writers.c) ------------------------------------------------------ */

void cw_doc_write_text(struct sbuf *b, struct tpage *pages, int n);
/* Markdown or HTML from the same classification (headings, paragraphs, list items). */
void cw_doc_write_rich(struct sbuf *b, struct tpage *pages, int n, bool html);
/* The json format's blocks of a page: pages -> blocks -> lines -> spans. */
json_t *cw_doc_json_blocks(fz_context *ctx, fz_stext_page *sp);

/* ---- OCR (ocr.c) ---------------------------------------------------------------- */

/* OCR one page: render gray at dpi, recognise, keep text and (for json) word boxes. */
struct cw_doc_result cw_doc_ocr_page(struct cw_doc_engine *e, fz_page *page, int dpi,
				     const char *lang, bool want_json, struct tpage *p);

#endif
