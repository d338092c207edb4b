/* Document conversion engine (see docconv.h). */
#include "docconv/docconv.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mupdf/fitz.h>
#include <mupdf/pdf.h>
#include <tesseract/capi.h>

/* ---- capped allocator ------------------------------------------------------ */

struct capalloc {
	size_t used, cap;
	unsigned refusals;
};

#define HDR 16

static void *ca_malloc(void *u, size_t n)
{
	struct capalloc *a = u;
	if (n > SIZE_MAX - HDR || (a->cap && a->used + n > a->cap)) {
		a->refusals++;
		return NULL;
	}
	unsigned char *p = malloc(n + HDR);
	if (!p)
		return NULL;
	memcpy(p, &n, sizeof(n));
	a->used += n;
	return p + HDR;
}

static void ca_free(void *u, void *ptr)
{
	struct capalloc *a = u;
	if (!ptr)
		return;
	unsigned char *p = (unsigned char *)ptr - HDR;
	size_t n;
	memcpy(&n, p, sizeof(n));
	a->used -= n;
	free(p);
}

static void *ca_realloc(void *u, void *ptr, size_t n)
{
	struct capalloc *a = u;
	if (!ptr)
		return ca_malloc(u, n);
	if (n == 0) {
		ca_free(u, ptr);
		return NULL;
	}
	unsigned char *p = (unsigned char *)ptr - HDR;
	size_t old;
	memcpy(&old, p, sizeof(old));
	if (n > SIZE_MAX - HDR || (a->cap && n > old && a->used + (n - old) > a->cap)) {
		a->refusals++;
		return NULL;
	}
	unsigned char *q = realloc(p, n + HDR);
	if (!q)
		return NULL;
	memcpy(q, &n, sizeof(n));
	a->used = a->used - old + n;
	return q + HDR;
}

/* ---- engine ---------------------------------------------------------------- */

struct cw_doc_engine {
	fz_context *ctx;
	struct capalloc ca;
	fz_alloc_context alloc;
	struct cw_doc_limits lim;
	fz_cookie cookie;
	volatile sig_atomic_t *cancel;
	unsigned warnings;
	char last_warning[200];
	TessBaseAPI *tess;
	char tess_lang[64];
	ETEXT_DESC *monitor;
};

static void on_warning(void *user, const char *msg)
{
	struct cw_doc_engine *e = user;
	e->warnings++;
	snprintf(e->last_warning, sizeof(e->last_warning), "%s", msg);
}

static void on_error(void *user, const char *msg)
{
	(void)user;
	(void)msg; /* reported through fz_caught_message */
}

struct cw_doc_engine *cw_doc_engine_new(const struct cw_doc_limits *lim)
{
	struct cw_doc_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->lim = *lim;
	if (!e->lim.memory)
		e->lim.memory = 512u << 20;
	if (!e->lim.max_pages)
		e->lim.max_pages = 10000;
	if (e->lim.max_pixels <= 0)
		e->lim.max_pixels = 200e6;
	e->ca.cap = e->lim.memory;
	e->alloc = (fz_alloc_context){&e->ca, ca_malloc, ca_realloc, ca_free};
	/* a small store: decoded images are not worth caching across tasks */
	e->ctx = fz_new_context(&e->alloc, NULL, 16u << 20);
	if (!e->ctx) {
		free(e);
		return NULL;
	}
	fz_var(e);
	fz_set_warning_callback(e->ctx, on_warning, e);
	fz_set_error_callback(e->ctx, on_error, e);
	fz_try(e->ctx)
		fz_register_document_handlers(e->ctx);
	fz_catch(e->ctx) {
		fz_drop_context(e->ctx);
		free(e);
		return NULL;
	}
	return e;
}

void cw_doc_engine_free(struct cw_doc_engine *e)
{
	if (!e)
		return;
	if (e->monitor)
		TessMonitorDelete(e->monitor);
	if (e->tess) {
		TessBaseAPIEnd(e->tess);
		TessBaseAPIDelete(e->tess);
	}
	fz_drop_context(e->ctx);
	free(e);
}

void cw_doc_engine_set_cancel(struct cw_doc_engine *e, volatile sig_atomic_t *flag)
{
	e->cancel = flag;
}

volatile int *cw_doc_engine_abort_flag(struct cw_doc_engine *e)
{
	return (volatile int *)&e->cookie.abort;
}

const char *cw_doc_status_exc(enum cw_doc_status s)
{
	switch (s) {
	case CW_DOC_PASSWORD:
		return "PasswordRequired";
	case CW_DOC_LIMIT:
		return "ResourceLimit";
	case CW_DOC_CANCELLED:
		return "SoftTimeLimitExceeded";
	case CW_DOC_ARGS:
		return "ValueError";
	default:
		return "DocumentError";
	}
}

static bool cancelled(struct cw_doc_engine *e)
{
	if (e->cancel && *e->cancel)
		e->cookie.abort = 1;
	return e->cookie.abort != 0;
}

static struct cw_doc_result result(enum cw_doc_status st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static struct cw_doc_result result(enum cw_doc_status st, const char *fmt, ...)
{
	struct cw_doc_result r = {.status = st};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r.message, sizeof(r.message), fmt, ap);
	va_end(ap);
	return r;
}

/* MuPDF 1.21 picks a handler by name only: tell it what the bytes are. */
static __attribute__((noinline)) const char *sniff(const unsigned char *d, size_t n, const char *name)
{
	if (!d || n == 0)
		return "application/pdf";
	if (n >= 5 && !memcmp(d, "%PDF-", 5))
		return "application/pdf";
	if (n >= 1024 && memmem(d, 1024, "%PDF-", 5))
		return "application/pdf";
	if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8))
		return "image/png";
	if (n >= 3 && !memcmp(d, "\xff\xd8\xff", 3))
		return "image/jpeg";
	if (n >= 4 && (!memcmp(d, "II*\0", 4) || !memcmp(d, "MM\0*", 4)))
		return "image/tiff";
	if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6)))
		return "image/gif";
	if (n >= 2 && !memcmp(d, "BM", 2))
		return "image/bmp";
	if (n >= 4 && !memcmp(d, "PK\3\4", 4)) {
		size_t m = n < 4096 ? n : 4096;
		if (memmem(d, m, "application/epub+zip", 20))
			return "application/epub+zip";
		if (memmem(d, n < 65536 ? n : 65536, "FixedDocumentSequence", 21) ||
		    memmem(d, m, "[Content_Types].xml", 19))
			return "application/oxps";
		return "application/x-cbz";
	}
	if (n >= 5 && memmem(d, n < 4096 ? n : 4096, "<FictionBook", 12))
		return "application/x-fictionbook";
	if (name) {
		const char *dot = strrchr(name, '.');
		if (dot)
			return dot;
	}
	return "application/pdf";
}

struct opened {
	fz_document *doc;
	fz_stream *stm;
	int pages;
};

static void close_doc(struct cw_doc_engine *e, struct opened *o)
{
	fz_drop_document(e->ctx, o->doc);
	fz_drop_stream(e->ctx, o->stm);
	o->doc = NULL;
	o->stm = NULL;
}

static struct cw_doc_result open_doc(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				     const char *name, const char *password, struct opened *o)
{
	fz_context *ctx = e->ctx;
	struct cw_doc_result r = {CW_DOC_OK, ""};
	const char *magic = sniff(data, len, name);

	fz_var(magic);
	memset(o, 0, sizeof(*o));
	e->warnings = 0;
	e->ca.refusals = 0;
	memset(&e->cookie, 0, sizeof(e->cookie));
	if (e->cancel && *e->cancel)
		e->cookie.abort = 1; /* the limit passed before we started */
	if (len == 0)
		return result(CW_DOC_ERROR, "empty document");
	fz_var(r);
	fz_try(ctx) {
		o->stm = fz_open_memory(ctx, data, len);
		o->doc = fz_open_document_with_stream(ctx, magic, o->stm);
		if (fz_needs_password(ctx, o->doc)) {
			if (!password || !*password)
				r = result(CW_DOC_PASSWORD, "the document is encrypted; pass password=...");
			else if (!fz_authenticate_password(ctx, o->doc, password))
				r = result(CW_DOC_PASSWORD, "wrong password for the encrypted document");
		}
		if (r.status == CW_DOC_OK) {
			if (fz_is_document_reflowable(ctx, o->doc))
				fz_layout_document(ctx, o->doc, 612, 792, 11);
			o->pages = fz_count_pages(ctx, o->doc);
			if (o->pages > e->lim.max_pages)
				r = result(CW_DOC_LIMIT, "%d pages, over the limit of %d", o->pages,
					   e->lim.max_pages);
			else if (o->pages <= 0)
				r = result(CW_DOC_ERROR, "the document has no pages");
		}
	}
	fz_catch(ctx) {
		if (fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals)
			r = result(CW_DOC_LIMIT, "opening the document needs more than %zu MiB",
				   e->lim.memory >> 20);
		else
			r = result(CW_DOC_ERROR, "cannot open document (%s): %s", magic,
				   fz_caught_message(ctx));
	}
	if (r.status != CW_DOC_OK)
		close_doc(e, o);
	return r;
}

static json_t *metadata(struct cw_doc_engine *e, struct opened *o)
{
	static const struct {
		const char *key, *name;
	} keys[] = {
		{FZ_META_INFO_TITLE, "title"},       {FZ_META_INFO_AUTHOR, "author"},
		{FZ_META_INFO_SUBJECT, "subject"},   {FZ_META_INFO_KEYWORDS, "keywords"},
		{FZ_META_INFO_CREATOR, "creator"},   {FZ_META_INFO_PRODUCER, "producer"},
		{FZ_META_INFO_CREATIONDATE, "creation_date"},
		{FZ_META_INFO_MODIFICATIONDATE, "modification_date"},
		{FZ_META_FORMAT, "format"},
	};
	json_t *m = json_object();
	char buf[1024];

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int n = -1;
		fz_var(n);
		fz_try(e->ctx)
			n = fz_lookup_metadata(e->ctx, o->doc, keys[i].key, buf, sizeof(buf));
		fz_catch(e->ctx)
			n = -1;
		json_object_set_new(m, keys[i].name, n > 0 ? json_string(buf) : json_null());
	}
	int n = -1;
	fz_var(n);
	fz_try(e->ctx)
		n = fz_lookup_metadata(e->ctx, o->doc, FZ_META_ENCRYPTION, buf, sizeof(buf));
	fz_catch(e->ctx)
		n = -1;
	json_object_set_new(m, "encrypted", json_boolean(n > 0 && strcmp(buf, "None")));
	json_object_set_new(m, "page_count", json_integer(o->pages));
	return m;
}

struct cw_doc_result cw_doc_info(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				 const char *name, const char *password, json_t **out)
{
	struct opened o;
	struct cw_doc_result r = open_doc(e, data, len, name, password, &o);
	*out = NULL;
	if (r.status != CW_DOC_OK)
		return r;
	*out = metadata(e, &o);
	close_doc(e, &o);
	return r;
}

/* ---- page selection --------------------------------------------------------- */

/* Selected pages (0-based) into sel[]; pages: null, [1, 3], [[1, 5], 9] (1-based, inclusive). */
static struct cw_doc_result select_pages(json_t *pages, int count, int **sel, int *nsel)
{
	size_t i;
	json_t *v;

	*sel = NULL;
	*nsel = 0;
	if (!pages || json_is_null(pages)) {
		*sel = malloc((size_t)count * sizeof(int));
		if (!*sel)
			return result(CW_DOC_LIMIT, "out of memory");
		for (int p = 0; p < count; p++)
			(*sel)[p] = p;
		*nsel = count;
		return result(CW_DOC_OK, "%s", "");
	}
	if (json_is_integer(pages)) {
		json_t *one = json_pack("[O]", pages);
		struct cw_doc_result r = select_pages(one, count, sel, nsel);
		json_decref(one);
		return r;
	}
	if (!json_is_array(pages))
		return result(CW_DOC_ARGS, "pages must be null, a page number or a list");
	int cap = 16, n = 0;
	int *s = malloc((size_t)cap * sizeof(int));
	if (!s)
		return result(CW_DOC_LIMIT, "out of memory");
	json_array_foreach(pages, i, v) {
		json_int_t a, b;
		if (json_is_integer(v)) {
			a = b = json_integer_value(v);
		} else if (json_is_array(v) && json_array_size(v) == 2 &&
			   json_is_integer(json_array_get(v, 0)) &&
			   json_is_integer(json_array_get(v, 1))) {
			a = json_integer_value(json_array_get(v, 0));
			b = json_integer_value(json_array_get(v, 1));
		} else {
			free(s);
			return result(CW_DOC_ARGS, "pages: entries are page numbers or [from, to]");
		}
		if (a < 1 || b < a || b > count) {
			free(s);
			return result(CW_DOC_ARGS, "pages: %lld..%lld is outside 1..%d", (long long)a,
				      (long long)b, count);
		}
		for (json_int_t p = a; p <= b; p++) {
			if (n == cap) {
				int *t = realloc(s, (size_t)(cap *= 2) * sizeof(int));
				if (!t) {
					free(s);
					return result(CW_DOC_LIMIT, "out of memory");
				}
				s = t;
			}
			s[n++] = (int)p - 1;
		}
	}
	*sel = s;
	*nsel = n;
	return result(CW_DOC_OK, "%s", "");
}

/* ---- text model ---------------------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_rune(struct sbuf *b, int c)
{
	char u[8];
	int n = fz_runetochar(u, c);
	sb_put(b, u, (size_t)n);
}

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

static void free_page(struct tpage *p)
{
	for (int b = 0; b < p->n; b++) {
		for (int l = 0; l < p->blocks[b].n; l++)
			free(p->blocks[b].lines[l].text);
		free(p->blocks[b].lines);
	}
	free(p->blocks);
	free(p->ocr_text);
	json_decref(p->ocr_json);
	memset(p, 0, sizeof(*p));
}

static int cmp_line(const void *a, const void *b)
{
	const struct tline *x = a, *y = b;
	if (fabsf(x->baseline - y->baseline) > 2)
		return x->baseline < y->baseline ? -1 : 1;
	return x->bbox.x0 < y->bbox.x0 ? -1 : x->bbox.x0 > y->bbox.x0;
}

/* Lines of each text block, in reading order (baseline, then x), with their dominant style. */
static bool page_model(fz_context *ctx, fz_stext_page *sp, struct tpage *p)
{
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type == FZ_STEXT_BLOCK_IMAGE) {
			p->has_images = true;
			continue;
		}
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		int nl = 0;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next)
			nl++;
		if (!nl)
			continue;
		struct tblock *nb = realloc(p->blocks, (size_t)(p->n + 1) * sizeof(*nb));
		if (!nb)
			return false;
		p->blocks = nb;
		struct tblock *tb = &p->blocks[p->n++];
		tb->n = 0;
		tb->lines = calloc((size_t)nl, sizeof(struct tline));
		if (!tb->lines)
			return false;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			struct sbuf s = {0};
			float size_sum = 0;
			int nchar = 0, nbold = 0;
			for (fz_stext_char *c = l->first_char; c; c = c->next) {
				sb_rune(&s, c->c);
				if (c->c != ' ') {
					p->chars++;
					nchar++;
					size_sum += c->size;
					nbold += fz_font_is_bold(ctx, c->font);
				}
			}
			if (s.oom) {
				free(s.p);
				return false;
			}
			if (!s.p || !nchar) {
				free(s.p);
				continue;
			}
			/* trailing spaces are layout, not text */
			while (s.len && s.p[s.len - 1] == ' ')
				s.p[--s.len] = '\0';
			struct tline *t = &tb->lines[tb->n++];
			t->text = s.p;
			t->size = size_sum / (float)nchar;
			t->bold = nbold * 2 > nchar;
			t->bbox = l->bbox;
			t->baseline = l->first_char ? l->first_char->origin.y : l->bbox.y1;
		}
		qsort(tb->lines, (size_t)tb->n, sizeof(struct tline), cmp_line);
	}
	return true;
}

/* ---- OCR ------------------------------------------------------------------ */

static bool tess_cancel(void *data, int words)
{
	struct cw_doc_engine *e = data;
	(void)words;
	return cancelled(e);
}

static struct cw_doc_result tess_ready(struct cw_doc_engine *e, const char *lang)
{
	if (!lang || !*lang || strlen(lang) >= sizeof(e->tess_lang))
		return result(CW_DOC_ARGS, "bad ocr_lang");
	for (const char *c = lang; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '+' && *c != '_')
			return result(CW_DOC_ARGS, "bad ocr_lang '%s'", lang);
	if (e->tess && !strcmp(e->tess_lang, lang))
		return result(CW_DOC_OK, "%s", "");
	if (!e->tess) {
		e->tess = TessBaseAPICreate();
		if (!e->tess)
			return result(CW_DOC_LIMIT, "out of memory starting Tesseract");
	} else {
		TessBaseAPIEnd(e->tess);
	}
	e->tess_lang[0] = '\0';
	if (TessBaseAPIInit3(e->tess, NULL, lang) != 0)
		return result(CW_DOC_ARGS,
			      "Tesseract has no language data for '%s' (install tesseract-ocr-%s)",
			      lang, lang);
	snprintf(e->tess_lang, sizeof(e->tess_lang), "%s", lang);
	if (!e->monitor) {
		e->monitor = TessMonitorCreate();
		if (!e->monitor)
			return result(CW_DOC_LIMIT, "out of memory starting Tesseract");
		TessMonitorSetCancelFunc(e->monitor, tess_cancel);
		TessMonitorSetCancelThis(e->monitor, e);
	}
	return result(CW_DOC_OK, "%s", "");
}

static json_t *bbox_pt(int l, int t, int r, int b, double scale)
{
	return json_pack("[f,f,f,f]", l * scale, t * scale, r * scale, b * scale);
}

/* OCR one page: render gray at dpi, recognise, keep text and (for json) word boxes. */
static struct cw_doc_result ocr_page(struct cw_doc_engine *e, fz_page *page, int dpi,
				     const char *lang, bool want_json, struct tpage *p)
{
	fz_context *ctx = e->ctx;
	fz_pixmap *pix = NULL;
	fz_device *dev = NULL;
	struct cw_doc_result r = tess_ready(e, lang);

	if (r.status != CW_DOC_OK)
		return r;
	fz_var(pix);
	fz_var(dev);
	fz_var(r);
	fz_try(ctx) {
		fz_matrix ctm = fz_scale(dpi / 72.0f, dpi / 72.0f);
		fz_irect box = fz_round_rect(fz_transform_rect(fz_bound_page(ctx, page), ctm));
		double pixels = (double)(box.x1 - box.x0) * (double)(box.y1 - box.y0);
		if (pixels > e->lim.max_pixels) {
			r = result(CW_DOC_LIMIT, "page bitmap of %.0f pixels at %d dpi is over the limit",
				   pixels, dpi);
		} else {
			pix = fz_new_pixmap_with_bbox(ctx, fz_device_gray(ctx), box, NULL, 0);
			fz_clear_pixmap_with_value(ctx, pix, 255);
			dev = fz_new_draw_device(ctx, fz_identity, pix);
			fz_run_page(ctx, page, dev, ctm, &e->cookie);
			fz_close_device(ctx, dev);
		}
	}
	fz_always(ctx)
		fz_drop_device(ctx, dev);
	fz_catch(ctx) {
		r = fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals
			    ? result(CW_DOC_LIMIT, "rendering for OCR needs more than %zu MiB",
				     e->lim.memory >> 20)
			    : result(CW_DOC_ERROR, "cannot render page for OCR: %s",
				     fz_caught_message(ctx));
	}
	if (r.status == CW_DOC_OK && cancelled(e))
		r = result(CW_DOC_CANCELLED, "cancelled while rendering for OCR");
	if (r.status != CW_DOC_OK || !pix) {
		fz_drop_pixmap(ctx, pix);
		return r;
	}
	TessBaseAPISetPageSegMode(e->tess, PSM_AUTO);
	TessBaseAPISetImage(e->tess, fz_pixmap_samples(ctx, pix), fz_pixmap_width(ctx, pix),
			    fz_pixmap_height(ctx, pix), 1, fz_pixmap_stride(ctx, pix));
	TessBaseAPISetSourceResolution(e->tess, dpi);
	int rc = TessBaseAPIRecognize(e->tess, e->monitor);
	fz_drop_pixmap(ctx, pix);
	if (cancelled(e)) {
		TessBaseAPIClear(e->tess);
		return result(CW_DOC_CANCELLED, "cancelled during OCR");
	}
	if (rc != 0) {
		TessBaseAPIClear(e->tess);
		return result(CW_DOC_ERROR, "Tesseract could not recognise the page");
	}
	char *txt = TessBaseAPIGetUTF8Text(e->tess);
	p->ocr_text = strdup(txt ? txt : "");
	TessDeleteText(txt);
	p->ocr = true;
	p->ocr_conf = TessBaseAPIMeanTextConf(e->tess);
	if (want_json) {
		double scale = 72.0 / dpi;
		json_t *blocks = json_array(), *block = NULL, *lines = NULL, *spans = NULL;
		TessResultIterator *it = TessBaseAPIGetIterator(e->tess);
		if (it) {
			TessPageIterator *pit = TessResultIteratorGetPageIterator(it);
			TessPageIteratorBegin(pit);
			do {
				int l, t, rr, b;
				if (!TessPageIteratorBoundingBox(pit, RIL_WORD, &l, &t, &rr, &b))
					continue;
				if (!block || TessPageIteratorIsAtBeginningOf(pit, RIL_BLOCK)) {
					int bl, bt, br, bb;
					TessPageIteratorBoundingBox(pit, RIL_BLOCK, &bl, &bt, &br, &bb);
					lines = json_array();
					block = json_pack("{s:s,s:o,s:o}", "type", "text", "bbox",
							  bbox_pt(bl, bt, br, bb, scale), "lines",
							  lines);
					json_array_append_new(blocks, block);
					spans = NULL;
				}
				if (!spans || TessPageIteratorIsAtBeginningOf(pit, RIL_TEXTLINE)) {
					int ll, lt, lr, lb;
					TessPageIteratorBoundingBox(pit, RIL_TEXTLINE, &ll, &lt, &lr,
								    &lb);
					spans = json_array();
					json_array_append_new(
						lines, json_pack("{s:o,s:o}", "bbox",
								 bbox_pt(ll, lt, lr, lb, scale),
								 "spans", spans));
				}
				char *w = TessResultIteratorGetUTF8Text(it, RIL_WORD);
				json_array_append_new(
					spans, json_pack("{s:s,s:o,s:f}", "text", w ? w : "", "bbox",
							 bbox_pt(l, t, rr, b, scale), "confidence",
							 TessResultIteratorConfidence(it, RIL_WORD)));
				TessDeleteText(w);
			} while (TessResultIteratorNext(it, RIL_WORD));
			TessResultIteratorDelete(it);
		}
		p->ocr_json = blocks;
	}
	TessBaseAPIClear(e->tess);
	return result(CW_DOC_OK, "%s", "");
}

/* ---- writers ----------------------------------------------------------------- */

static void put_escaped_html(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			sb_str(b, "&lt;");
			break;
		case '>':
			sb_str(b, "&gt;");
			break;
		case '&':
			sb_str(b, "&amp;");
			break;
		case '"':
			sb_str(b, "&quot;");
			break;
		default:
			sb_put(b, s, 1);
		}
	}
}

/* A list item marker at the start of a line: "- " for bullets, the number for "1." / "1)". */
static const char *list_marker(const char *t, char num[16], const char **rest)
{
	static const char *const bullets[] = {"\xe2\x80\xa2", "\xe2\x97\xa6", "\xe2\x96\xaa",
					      "\xe2\x80\x93", "-", "*", "\xc2\xb7"};
	for (size_t i = 0; i < sizeof(bullets) / sizeof(bullets[0]); i++) {
		size_t n = strlen(bullets[i]);
		if (!strncmp(t, bullets[i], n) && t[n] == ' ') {
			*rest = t + n + 1;
			return "-";
		}
	}
	int k = 0;
	while (k < 4 && isdigit((unsigned char)t[k]))
		k++;
	if (k > 0 && (t[k] == '.' || t[k] == ')') && t[k + 1] == ' ') {
		snprintf(num, 16, "%.*s.", k, t);
		*rest = t + k + 2;
		return num;
	}
	return NULL;
}

struct styles {
	float body;           /* most common text size */
	float heads[3];       /* sizes of heading levels 1..3 */
	int nheads;
};

static int cmp_float_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

static void find_styles(struct tpage *pages, int n, struct styles *st)
{
	/* histogram of sizes rounded to 0.5 pt, weighted by characters */
	float sizes[64];
	long weight[64];
	int ns = 0;
	memset(st, 0, sizeof(*st));
	for (int p = 0; p < n; p++)
		for (int b = 0; b < pages[p].n; b++)
			for (int l = 0; l < pages[p].blocks[b].n; l++) {
				struct tline *t = &pages[p].blocks[b].lines[l];
				float s = roundf(t->size * 2) / 2;
				int i;
				for (i = 0; i < ns && sizes[i] != s; i++)
					;
				if (i == ns) {
					if (ns == 64)
						continue;
					sizes[ns] = s;
					weight[ns++] = 0;
				}
				weight[i] += (long)strlen(t->text);
			}
	long best = -1;
	for (int i = 0; i < ns; i++)
		if (weight[i] > best) {
			best = weight[i];
			st->body = sizes[i];
		}
	float bigger[64];
	int nb = 0;
	for (int i = 0; i < ns; i++)
		if (sizes[i] >= st->body * 1.15f)
			bigger[nb++] = sizes[i];
	qsort(bigger, (size_t)nb, sizeof(float), cmp_float_desc);
	for (int i = 0; i < nb && i < 3; i++)
		st->heads[st->nheads++] = bigger[i];
}

static int heading_level(const struct styles *st, const struct tline *t)
{
	float s = roundf(t->size * 2) / 2;
	for (int i = 0; i < st->nheads; i++)
		if (s >= st->heads[i])
			return i + 1;
	if (st->nheads && s >= st->body * 1.15f)
		return st->nheads;
	return 0;
}

/* Join the lines of a paragraph: de-hyphenate "exam-" + "ple", else one space. */
static void join_line(struct sbuf *b, const char *t, bool *first)
{
	if (!*first) {
		if (b->len && b->p[b->len - 1] == '-' && islower((unsigned char)t[0]))
			b->p[--b->len] = '\0';
		else
			sb_str(b, " ");
	}
	sb_str(b, t);
	*first = false;
}

static void write_text(struct sbuf *b, struct tpage *pages, int n)
{
	for (int p = 0; p < n; p++) {
		if (p)
			sb_str(b, "\f");
		if (pages[p].ocr) {
			sb_str(b, pages[p].ocr_text);
			continue;
		}
		for (int k = 0; k < pages[p].n; k++) {
			if (k)
				sb_str(b, "\n");
			for (int l = 0; l < pages[p].blocks[k].n; l++) {
				sb_str(b, pages[p].blocks[k].lines[l].text);
				sb_str(b, "\n");
			}
		}
	}
}

/* Write the paragraph (or list item) collected in para, and empty it. */
static void flush_para(struct sbuf *b, struct sbuf *para, bool html, bool item)
{
	if (!para->p || !para->len)
		return;
	if (html) {
		sb_str(b, item ? "<li>" : "<p>");
		put_escaped_html(b, para->p);
		sb_str(b, item ? "</li>\n" : "</p>\n");
	} else {
		sb_str(b, para->p);
		sb_str(b, item ? "\n" : "\n\n");
	}
	para->len = 0;
	para->p[0] = '\0';
}

/* Markdown or HTML from the same classification (headings, paragraphs, list items). */
static void write_rich(struct sbuf *b, struct tpage *pages, int n, bool html)
{
	struct styles st;
	find_styles(pages, n, &st);
	for (int p = 0; p < n; p++) {
		if (html)
			sb_str(b, p ? "</div>\n<div class=\"page\">\n" : "<div class=\"page\">\n");
		else if (p)
			sb_str(b, "\n---\n\n");
		if (pages[p].ocr) {
			/* Tesseract separates paragraphs with blank lines */
			const char *s = pages[p].ocr_text;
			struct sbuf para = {0};
			bool first = true;
			while (*s) {
				const char *nl = strchr(s, '\n');
				size_t len = nl ? (size_t)(nl - s) : strlen(s);
				char *line = strndup(s, len);
				if (line && *line) {
					join_line(&para, line, &first);
				} else {
					flush_para(b, &para, html, false);
					first = true;
				}
				free(line);
				s += len + (nl ? 1 : 0);
			}
			flush_para(b, &para, html, false);
			free(para.p);
			continue;
		}
		for (int k = 0; k < pages[p].n; k++) {
			struct tblock *blk = &pages[p].blocks[k];
			struct sbuf para = {0};
			bool first = true, in_list = false;
			for (int l = 0; l <= blk->n; l++) {
				struct tline *t = l < blk->n ? &blk->lines[l] : NULL;
				int level = t ? heading_level(&st, t) : 0;
				char num[16];
				const char *rest = NULL;
				const char *marker = t && !level ? list_marker(t->text, num, &rest)
								 : NULL;
				/* a heading, a new list item or the end closes the paragraph */
				if (!t || level || marker) {
					flush_para(b, &para, html, in_list);
					first = true;
				}
				if (!t)
					break;
				if (level) {
					char hashes[8] = "######";
					if (html) {
						char tag[8];
						snprintf(tag, sizeof(tag), "<h%d>", level);
						sb_str(b, tag);
						put_escaped_html(b, t->text);
						snprintf(tag, sizeof(tag), "</h%d>", level);
						sb_str(b, tag);
						sb_str(b, "\n");
					} else {
						hashes[level] = '\0';
						sb_str(b, hashes);
						sb_str(b, " ");
						sb_str(b, t->text);
						sb_str(b, "\n\n");
					}
					in_list = false;
					continue;
				}
				if (marker) {
					if (!html) {
						sb_put(&para, marker, strlen(marker));
						sb_str(&para, " ");
					}
					first = true;
					join_line(&para, rest, &first);
					in_list = true;
					continue;
				}
				join_line(&para, t->text, &first);
			}
			if (!html && in_list)
				sb_str(b, "\n");
			free(para.p);
		}
	}
	if (html)
		sb_str(b, "</div>\n");
}

static json_t *flags_of(fz_context *ctx, fz_font *f)
{
	return json_pack("{s:b,s:b,s:b}", "bold", fz_font_is_bold(ctx, f), "italic",
			 fz_font_is_italic(ctx, f), "monospaced", fz_font_is_monospaced(ctx, f));
}

static json_t *rect(fz_rect r)
{
	return json_pack("[f,f,f,f]", r.x0, r.y0, r.x1, r.y1);
}

/* pages -> blocks -> lines -> spans (runs of one font and size) */
static json_t *json_blocks(fz_context *ctx, fz_stext_page *sp)
{
	json_t *blocks = json_array();
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type == FZ_STEXT_BLOCK_IMAGE) {
			json_array_append_new(blocks, json_pack("{s:s,s:o}", "type", "image", "bbox",
								rect(b->bbox)));
			continue;
		}
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		json_t *lines = json_array();
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			json_t *spans = json_array();
			fz_stext_char *c = l->first_char;
			while (c) {
				fz_font *font = c->font;
				float size = c->size;
				fz_rect box = fz_rect_from_quad(c->quad);
				struct sbuf s = {0};
				while (c && c->font == font && c->size == size) {
					sb_rune(&s, c->c);
					box = fz_union_rect(box, fz_rect_from_quad(c->quad));
					c = c->next;
				}
				json_array_append_new(
					spans, json_pack("{s:s,s:s,s:f,s:o,s:o}", "text", s.p ? s.p : "",
							 "font", fz_font_name(ctx, font), "size", size,
							 "flags", flags_of(ctx, font), "bbox", rect(box)));
				free(s.p);
			}
			json_array_append_new(lines, json_pack("{s:o,s:o}", "bbox", rect(l->bbox),
							       "spans", spans));
		}
		json_array_append_new(blocks, json_pack("{s:s,s:o,s:o}", "type", "text", "bbox",
							rect(b->bbox), "lines", lines));
	}
	return blocks;
}

/* ---- convert ------------------------------------------------------------------ */

#define MIN_TEXT_CHARS 16 /* fewer non-space characters: no usable text layer */

struct cw_doc_result cw_doc_convert(struct cw_doc_engine *e, const unsigned char *data,
				    size_t len, const char *name,
				    const struct cw_doc_convert_opts *o, json_t **out)
{
	fz_context *ctx = e->ctx;
	struct opened od;
	struct cw_doc_result r = open_doc(e, data, len, name, o->password, &od);
	int *sel = NULL, nsel = 0;
	struct tpage *pages = NULL;
	json_t *jpages = NULL, *ocr_pages = json_array(), *warnings = json_array();

	*out = NULL;
	if (r.status != CW_DOC_OK)
		goto done;
	r = select_pages(o->pages, od.pages, &sel, &nsel);
	if (r.status != CW_DOC_OK)
		goto done;
	pages = calloc((size_t)(nsel ? nsel : 1), sizeof(*pages));
	if (o->format == CW_FMT_JSON)
		jpages = json_array();
	if (!pages || !ocr_pages || !warnings) {
		r = result(CW_DOC_LIMIT, "out of memory");
		goto done;
	}
	for (int i = 0; i < nsel && r.status == CW_DOC_OK; i++) {
		fz_page *page = NULL;
		fz_stext_page *sp = NULL;
		fz_device *dev = NULL;
		json_t *jb = NULL;
		bool model_ok = true;
		fz_var(i);
		fz_var(page);
		fz_var(sp);
		fz_var(dev);
		fz_var(jb);
		fz_var(model_ok);
		fz_var(r);
		fz_try(ctx) {
			page = fz_load_page(ctx, od.doc, sel[i]);
			fz_rect bounds = fz_bound_page(ctx, page);
			pages[i].w = bounds.x1 - bounds.x0;
			pages[i].h = bounds.y1 - bounds.y0;
			sp = fz_new_stext_page(ctx, bounds);
			fz_stext_options so = {.flags = FZ_STEXT_PRESERVE_IMAGES};
			dev = fz_new_stext_device(ctx, sp, &so);
			fz_run_page(ctx, page, dev, fz_identity, &e->cookie);
			fz_close_device(ctx, dev);
			model_ok = page_model(ctx, sp, &pages[i]);
			if (o->format == CW_FMT_JSON)
				jb = json_blocks(ctx, sp);
		}
		fz_always(ctx) {
			fz_drop_device(ctx, dev);
			fz_drop_stext_page(ctx, sp);
		}
		fz_catch(ctx) {
			r = fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals
				    ? result(CW_DOC_LIMIT, "page %d needs more than %zu MiB", sel[i] + 1,
					     e->lim.memory >> 20)
				    : result(CW_DOC_ERROR, "page %d: %s", sel[i] + 1,
					     fz_caught_message(ctx));
		}
		if (r.status == CW_DOC_OK && !model_ok)
			r = result(CW_DOC_LIMIT, "out of memory building page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && cancelled(e))
			r = result(CW_DOC_CANCELLED, "cancelled on page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && e->ca.refusals)
			r = result(CW_DOC_LIMIT, "page %d needs more than %zu MiB", sel[i] + 1,
				   e->lim.memory >> 20);
		bool need_ocr = o->ocr == CW_OCR_ALWAYS ||
				(o->ocr == CW_OCR_AUTO && pages[i].chars < MIN_TEXT_CHARS &&
				 (pages[i].has_images || pages[i].chars == 0));
		if (r.status == CW_DOC_OK && need_ocr) {
			r = ocr_page(e, page, o->dpi, o->ocr_lang, o->format == CW_FMT_JSON,
				     &pages[i]);
			if (r.status == CW_DOC_OK)
				json_array_append_new(ocr_pages, json_integer(sel[i] + 1));
		}
		fz_drop_page(ctx, page);
		if (r.status == CW_DOC_OK && jpages) {
			json_t *pj = json_pack("{s:i,s:f,s:f,s:b}", "number", sel[i] + 1, "width",
					       pages[i].w, "height", pages[i].h, "ocr", pages[i].ocr);
			if (pages[i].ocr) {
				json_object_set_new(pj, "blocks", json_incref(pages[i].ocr_json));
				json_object_set_new(pj, "confidence", json_real(pages[i].ocr_conf));
				json_decref(jb);
			} else {
				json_object_set_new(pj, "blocks", jb ? jb : json_array());
			}
			json_array_append_new(jpages, pj);
		} else {
			json_decref(jb);
		}
	}
	if (r.status != CW_DOC_OK)
		goto done;

	pdf_document *pdf = pdf_specifics(ctx, od.doc);
	if (pdf && pdf_was_repaired(ctx, pdf))
		json_array_append_new(warnings, json_string("the file was damaged and repaired"));
	if (e->warnings)
		json_array_append_new(
			warnings, json_pack("s+", "MuPDF warnings: ", e->last_warning));

	json_t *content;
	if (o->format == CW_FMT_JSON) {
		content = json_pack("{s:O}", "pages", jpages);
	} else {
		struct sbuf b = {0};
		if (o->format == CW_FMT_TEXT)
			write_text(&b, pages, nsel);
		else
			write_rich(&b, pages, nsel, o->format == CW_FMT_HTML);
		if (b.oom) {
			free(b.p);
			r = result(CW_DOC_LIMIT, "out of memory writing the output");
			goto done;
		}
		content = json_stringn_nocheck(b.p ? b.p : "", b.len);
		free(b.p);
	}
	static const char *const names[] = {"text", "markdown", "json", "html"};
	*out = json_pack("{s:s,s:i,s:o,s:o,s:O,s:O}", "format", names[o->format], "pages", nsel,
			 "content", content, "metadata", metadata(e, &od), "ocr_pages", ocr_pages,
			 "warnings", warnings);
	if (!*out)
		r = result(CW_DOC_LIMIT, "out of memory");
done:
	if (od.doc || od.stm)
		close_doc(e, &od);
	for (int i = 0; pages && i < nsel; i++)
		free_page(&pages[i]);
	free(pages);
	free(sel);
	json_decref(jpages);
	json_decref(ocr_pages);
	json_decref(warnings);
	return r;
}

/* ---- render ------------------------------------------------------------------- */

void cw_doc_images_free(struct cw_doc_page_image *images, int n)
{
	for (int i = 0; images && i < n; i++)
		free(images[i].png);
	free(images);
}

struct cw_doc_result cw_doc_render(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				   const char *name, const char *password, json_t *pages, int dpi,
				   struct cw_doc_page_image **images, int *nimages)
{
	fz_context *ctx = e->ctx;
	struct opened od;
	int *sel = NULL, nsel = 0;
	struct cw_doc_result r = open_doc(e, data, len, name, password, &od);
	struct cw_doc_page_image *img = NULL;

	*images = NULL;
	*nimages = 0;
	if (r.status != CW_DOC_OK)
		return r;
	r = select_pages(pages, od.pages, &sel, &nsel);
	if (r.status == CW_DOC_OK && !(img = calloc((size_t)(nsel ? nsel : 1), sizeof(*img))))
		r = result(CW_DOC_LIMIT, "out of memory");
	for (int i = 0; i < nsel && r.status == CW_DOC_OK; i++) {
		fz_page *page = NULL;
		fz_pixmap *pix = NULL;
		fz_device *dev = NULL;
		fz_buffer *buf = NULL;
		fz_var(i);
		fz_var(page);
		fz_var(pix);
		fz_var(dev);
		fz_var(buf);
		fz_var(r);
		fz_try(ctx) {
			page = fz_load_page(ctx, od.doc, sel[i]);
			fz_matrix ctm = fz_scale(dpi / 72.0f, dpi / 72.0f);
			fz_irect box = fz_round_rect(fz_transform_rect(fz_bound_page(ctx, page), ctm));
			double pixels = (double)(box.x1 - box.x0) * (double)(box.y1 - box.y0);
			if (pixels > e->lim.max_pixels) {
				r = result(CW_DOC_LIMIT, "page %d at %d dpi is %.0f pixels, over the limit",
					   sel[i] + 1, dpi, pixels);
			} else {
				pix = fz_new_pixmap_with_bbox(ctx, fz_device_rgb(ctx), box, NULL, 0);
				fz_clear_pixmap_with_value(ctx, pix, 255);
				dev = fz_new_draw_device(ctx, fz_identity, pix);
				fz_run_page(ctx, page, dev, ctm, &e->cookie);
				fz_close_device(ctx, dev);
				buf = fz_new_buffer_from_pixmap_as_png(ctx, pix, fz_default_color_params);
				unsigned char *bytes;
				size_t n = fz_buffer_storage(ctx, buf, &bytes);
				img[i].png = malloc(n ? n : 1);
				if (img[i].png) {
					memcpy(img[i].png, bytes, n);
					img[i].png_len = n;
				}
				img[i].page = sel[i] + 1;
				img[i].width = box.x1 - box.x0;
				img[i].height = box.y1 - box.y0;
			}
		}
		fz_always(ctx) {
			fz_drop_buffer(ctx, buf);
			fz_drop_device(ctx, dev);
			fz_drop_pixmap(ctx, pix);
			fz_drop_page(ctx, page);
		}
		fz_catch(ctx) {
			r = fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals
				    ? result(CW_DOC_LIMIT, "rendering page %d needs more than %zu MiB",
					     sel[i] + 1, e->lim.memory >> 20)
				    : result(CW_DOC_ERROR, "page %d: %s", sel[i] + 1,
					     fz_caught_message(ctx));
		}
		if (r.status == CW_DOC_OK && !img[i].png)
			r = result(CW_DOC_LIMIT, "out of memory encoding page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && cancelled(e))
			r = result(CW_DOC_CANCELLED, "cancelled on page %d", sel[i] + 1);
		*nimages = i + 1;
	}
	close_doc(e, &od);
	free(sel);
	if (r.status != CW_DOC_OK) {
		cw_doc_images_free(img, *nimages);
		*nimages = 0;
		return r;
	}
	*images = img;
	return r;
}
