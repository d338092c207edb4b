/*
 * What the parts of the conversion engine share, private to src/docconv:
 *
 *   engine.c     the MuPDF context (capped allocator, warnings, cancellation),
 *                opening a document within the limits, its metadata
 *   paths.c      a device that collects a page's rulings (straight vector lines
 *                and rectangles) while forwarding text and images to another
 *   structure.c  the text model: a page's blocks and lines with their style and
 *                spans, figures, and the classification of lines (body size,
 *                heading levels, list items)
 *   tables.c     ruled tables from the rulings, unruled ones from text alignment
 *   furniture.c  running headers, footers and page numbers across the pages
 *   flow.c       reading order on a page (columns) and paragraphs that continue
 *                past a column or page break
 *   writers.c    the output formats: text, markdown, html and json from the model
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

/* ---- rulings (paths.c) ------------------------------------------------------- */

/* A straight horizontal (y fixed, a..b along x) or vertical (x fixed, a..b along y) line. */
struct ruling {
	float at, a, b;
};

struct rulings {
	struct ruling *h, *v;
	int nh, nv, caph, capv;
	bool full;          /* stopped collecting at the cap: a drawing, not a table */
};

/* A device that records rulings into r and forwards text and images to target (which the
 * caller closes and drops itself). */
fz_device *cw_doc_new_rulings_device(fz_context *ctx, fz_device *target, struct rulings *r);
void cw_doc_rulings_free(struct rulings *r);

/* ---- text model (structure.c) ---------------------------------------------- */

/* A run of one font and size, kept for the json format only. */
struct tspan {
	char *text;
	char font[64];
	float size;
	bool bold, italic, mono;
	fz_rect bbox;
};

struct tline {
	char *text;
	float size;
	bool bold;
	bool furniture;     /* a running header, footer or page number (furniture.c) */
	fz_rect bbox;
	float baseline;
	struct tspan *spans;
	int nspans;
};

struct tcell {
	char *text;         /* NULL: empty, or covered by a spanning cell to its left */
	fz_rect bbox;
};

struct ttable {
	int rows, cols;
	bool ruled;
	struct tcell *cells;   /* rows * cols, row-major */
};

enum tkind { TB_TEXT, TB_TABLE, TB_FIGURE };

struct tblock {
	enum tkind kind;
	struct tline *lines;   /* TB_TEXT */
	int n;
	struct ttable *table;  /* TB_TABLE */
	fz_rect bbox;
	bool furniture;        /* every line is furniture (or a repeated image) */
	bool cont;             /* its last paragraph continues in the next block (flow.c) */
	int figure;            /* TB_FIGURE: 1-based number on its page */
};

struct tpage {
	struct tblock *blocks;
	int n;
	int number;         /* 1-based page number in the document */
	int chars;          /* non-space characters */
	bool ocr;
	double ocr_conf;
	char *ocr_text;     /* OCR pages: Tesseract's text */
	json_t *ocr_json;   /* OCR pages: blocks for the json format */
	bool has_images;
	float w, h;
	int columns;        /* columns found by the reading order (flow.c) */
};

/* What the structure pass does, from the task's options. */
struct layout_opts {
	bool keep_furniture;
	const char *page_separator;  /* NULL: the format's own (--- or form feed) */
};

/* The document's text sizes: body text and the heading levels above it. */
struct styles {
	float body;           /* most common text size */
	float heads[3];       /* sizes of heading levels 1..3 */
	int nheads;
};

/* fz_load_page without resolving the links of a page whose annotations draw nothing (docconv.c) */
fz_page *cw_doc_load_page(fz_context *ctx, fz_document *doc, int number);

void cw_doc_page_free(struct tpage *p);
/* The page's tables (tables.c), then the lines of each text block outside them in reading
 * order (baseline, then x) with their dominant style (and spans when spans is set), and
 * figures.  false: out of memory. */
bool cw_doc_page_model(fz_context *ctx, fz_stext_page *sp, const struct rulings *r, bool spans,
		       struct tpage *p);
/* Plain comparisons: fminf/fmaxf are library calls (NaN rules) in the per-character paths. */
#define CW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CW_MAX(a, b) ((a) > (b) ? (a) : (b))

/* A character's box (fz_rect_from_quad, inlined: it runs for every character). */
static inline fz_rect cw_doc_char_box(const fz_stext_char *c)
{
	const fz_quad *q = &c->quad;
	fz_rect r = {CW_MIN(CW_MIN(q->ul.x, q->ur.x), CW_MIN(q->ll.x, q->lr.x)),
		     CW_MIN(CW_MIN(q->ul.y, q->ur.y), CW_MIN(q->ll.y, q->lr.y)),
		     CW_MAX(CW_MAX(q->ul.x, q->ur.x), CW_MAX(q->ll.x, q->lr.x)),
		     CW_MAX(CW_MAX(q->ul.y, q->ur.y), CW_MAX(q->ll.y, q->lr.y))};
	return r;
}

/* a grown to cover b (fz_union_rect without the checks for empty and infinite rects) */
static inline void cw_doc_grow(fz_rect *a, fz_rect b)
{
	a->x0 = CW_MIN(a->x0, b.x0);
	a->y0 = CW_MIN(a->y0, b.y0);
	a->x1 = CW_MAX(a->x1, b.x1);
	a->y1 = CW_MAX(a->y1, b.y1);
}

/* Append a block to the page; NULL: out of memory. */
struct tblock *cw_doc_add_block(struct tpage *p);
/* True when the character's centre is inside one of the page's tables. */
bool cw_doc_in_table(const struct tpage *p, const fz_stext_char *c);
void cw_doc_find_styles(struct tpage *pages, int n, struct styles *st);
/* 1..3 for a heading line, 0 for body text. */
int cw_doc_heading_level(const struct styles *st, const struct tline *t);
/* A list item marker at the start of a line: "- " for bullets, the number for "1." / "1)";
 * *rest is the text after it.  NULL: not a list item. */
const char *cw_doc_list_marker(const char *t, char num[16], const char **rest);

/* ---- tables (tables.c) ---------------------------------------------------------- */

/* Find the page's ruled and unruled tables and add them as TB_TABLE blocks (before any
 * other block).  false: out of memory. */
bool cw_doc_find_tables(fz_stext_page *sp, const struct rulings *r, struct tpage *p);
void cw_doc_table_free(struct ttable *t);

/* ---- furniture (furniture.c) ------------------------------------------------------ */

/* Mark lines repeated at the same place on most pages (digits may change) as furniture. */
void cw_doc_mark_furniture(struct tpage *pages, int n);

/* ---- flow (flow.c) -------------------------------------------------------------- */

/* Put each page's blocks in reading order (columns), then mark the text blocks whose last
 * paragraph continues in the next one (across a column or page break). */
void cw_doc_flow(struct tpage *pages, int n, const struct styles *st, bool keep_furniture);
#define MAX_COLS 8
/* Column boundaries (at most MAX_COLS - 1) of boxes weighted by their lines; with min_share,
 * each column's boxes must cover that share of the boxes' height.  0: one column. */
int cw_doc_columns(const fz_rect *box, const int *weight, int n, float min_share, float *bnd);
/* True when a line of text ends a sentence (or a heading-like fragment). */
bool cw_doc_ends_sentence(const char *t);

/* ---- writers (writers.c) ------------------------------------------------------ */

void cw_doc_write_text(struct sbuf *b, struct tpage *pages, int n, const struct layout_opts *lo);
/* Markdown or HTML from the same classification (headings, paragraphs, list items, tables,
 * figures). */
void cw_doc_write_rich(struct sbuf *b, struct tpage *pages, int n, bool html,
		       const struct styles *st, const struct layout_opts *lo);
/* The json format's blocks of a page: blocks -> lines -> spans, tables, images. */
json_t *cw_doc_json_blocks(const struct tpage *p);

/* ---- OCR (ocr.c) ---------------------------------------------------------------- */

/* OCR one page: render gray at dpi, recognise, keep text and (for json) word boxes. */
struct cw_doc_result cw_doc_ocr_page(struct cw_doc_engine *e, fz_page *page, int dpi,
				     const char *lang, bool want_json, struct tpage *p);

#endif
