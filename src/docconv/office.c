/*
 * Office and web documents: what the bytes are, the table of readers (one
 * per kind, the seam a new format plugs into), and convert and info with
 * the same result shape as PDFs.  Where a format has no pages, `pages`
 * counts slides (PPTX, ODP) or sheets (XLSX, ODS); a flowing document
 * (DOCX, ODT, HTML, Markdown, CSV, text) is one page.
 */
#include "office.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- recognising the bytes -------------------------------------------------------- */

/* The first bytes of an entry (a mimetype), without reading a hostile entry whole. */
static size_t entry_head(fz_context *ctx, fz_archive *a, const char *name, char *out,
			 size_t cap)
{
	fz_stream *stm = NULL;
	unsigned char head[128];
	size_t n = 0;
	fz_var(stm);
	fz_var(n);
	fz_try(ctx) {
		stm = fz_open_archive_entry(ctx, a, name);
		n = fz_read(ctx, stm, head, sizeof(head));
	}
	fz_always(ctx)
		fz_drop_stream(ctx, stm);
	fz_catch(ctx)
		n = 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, head, n);
	out[n] = '\0';
	return n;
}

/* OOXML by its main part's name, ODF by its mimetype entry; other zips are MuPDF's. */
static enum cw_office_kind sniff_zip(struct cw_doc_engine *e, const unsigned char *d, size_t n)
{
	static const struct {
		const char *entry;
		enum cw_office_kind kind;
	} ooxml[] = {
		{"word/document.xml", CW_OFFICE_DOCX},
		{"ppt/presentation.xml", CW_OFFICE_PPTX},
		{"xl/workbook.xml", CW_OFFICE_XLSX},
	};
	static const struct {
		const char *mime;
		enum cw_office_kind kind;
	} odf[] = {
		{"application/vnd.oasis.opendocument.text", CW_OFFICE_ODT},
		{"application/vnd.oasis.opendocument.spreadsheet", CW_OFFICE_ODS},
		{"application/vnd.oasis.opendocument.presentation", CW_OFFICE_ODP},
	};
	fz_context *ctx = e->ctx;
	fz_stream *stm = NULL;
	fz_archive *a = NULL;
	enum cw_office_kind kind = CW_OFFICE_NONE;
	char mime[128];

	/* entry names are stored in the clear: skip opening zips that cannot be ours */
	if (!memmem(d, n, "[Content_Types].xml", 19) && !memmem(d, n, "mimetype", 8))
		return CW_OFFICE_NONE;
	fz_var(stm);
	fz_var(a);
	fz_var(kind);
	fz_try(ctx) {
		stm = fz_open_memory(ctx, d, n);
		a = fz_open_zip_archive_with_stream(ctx, stm);
		if (fz_has_archive_entry(ctx, a, "[Content_Types].xml"))
			for (size_t i = 0; i < sizeof(ooxml) / sizeof(ooxml[0]); i++)
				if (fz_has_archive_entry(ctx, a, ooxml[i].entry)) {
					kind = ooxml[i].kind;
					break;
				}
		if (!kind && fz_has_archive_entry(ctx, a, "mimetype") &&
		    entry_head(ctx, a, "mimetype", mime, sizeof(mime)))
			for (size_t i = 0; i < sizeof(odf) / sizeof(odf[0]); i++)
				if (!strncmp(mime, odf[i].mime, strlen(odf[i].mime))) {
					kind = odf[i].kind;
					break;
				}
	}
	fz_always(ctx) {
		fz_drop_archive(ctx, a);
		fz_drop_stream(ctx, stm);
	}
	fz_catch(ctx)
		kind = CW_OFFICE_NONE;
	return kind;
}

/* Valid UTF-8 without control characters other than tab, new lines and form feed. */
static bool is_text(const unsigned char *d, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = d[i];
		if (c < 0x80) {
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f')
				return false;
			i++;
			continue;
		}
		int k = c >= 0xf0 && c < 0xf5 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : -1;
		if (k < 0 || c >= 0xf5)
			return false;
		if (i + (size_t)k >= n)
			return false;
		for (int j = 1; j <= k; j++)
			if ((d[i + (size_t)j] & 0xc0) != 0x80)
				return false;
		i += (size_t)k + 1;
	}
	return true;
}

static bool starts_ci(const unsigned char *d, size_t n, const char *s)
{
	size_t k = strlen(s);
	return n >= k && !strncasecmp((const char *)d, s, k);
}

/* Markup that starts like HTML: a doctype, an html root, or a common first tag. */
static bool looks_html(const unsigned char *d, size_t n)
{
	static const char *const tags[] = {"<!doctype html", "<html", "<head", "<body", "<meta",
					   "<title", "<div", "<p>", "<p ", "<h1", "<h2",
					   "<table", "<ul", "<ol", "<section", "<article"};
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (starts_ci(d, n, tags[i]))
			return true;
	if (starts_ci(d, n, "<?xml") || starts_ci(d, n, "<!--")) {
		/* the root element decides: XHTML is ours, FictionBook or SVG are not */
		for (size_t i = 1; i + 5 < n && i < 4096; i++)
			if (d[i] == '<' && isalpha(d[i + 1]))
				return starts_ci(d + i, n - i, "<html") ||
				       starts_ci(d + i, n - i, "<!doctype html");
			else if (d[i] == '<' && starts_ci(d + i, n - i, "<!doctype"))
				return starts_ci(d + i, n - i, "<!doctype html");
	}
	return false;
}

/* Delimited rows: the first lines all have the same number (>= 1) of one delimiter. */
static bool looks_csv(const unsigned char *d, size_t n)
{
	static const char delims[] = ",;\t";
	for (const char *dl = delims; *dl; dl++) {
		int want = -1, lines = 0, count = 0;
		bool quoted = false, ok = true;
		for (size_t i = 0; i < n && lines < 20 && ok; i++) {
			if (d[i] == '"')
				quoted = !quoted;
			else if (!quoted && d[i] == (unsigned char)*dl)
				count++;
			else if (!quoted && d[i] == '\n') {
				if (want < 0)
					want = count;
				ok = count == want && want > 0;
				lines++;
				count = 0;
			}
		}
		if (ok && lines >= 2)
			return true;
	}
	return false;
}

/* Markdown when a line is an ATX heading, a fence, a table rule, or two are list items. */
static bool looks_markdown(const unsigned char *d, size_t n)
{
	int items = 0;
	for (size_t i = 0; i < n;) {
		const unsigned char *l = d + i, *nl = memchr(l, '\n', n - i);
		size_t k = nl ? (size_t)(nl - l) : n - i;
		size_t h = 0;
		while (h < k && h < 7 && l[h] == '#')
			h++;
		if ((h >= 1 && h <= 6 && h < k && l[h] == ' ') || (k >= 3 && !memcmp(l, "```", 3)) ||
		    (k >= 4 && (!memcmp(l, "|---", 4) || !memcmp(l, "| --", 4))))
			return true;
		if (k >= 2 && (l[0] == '-' || l[0] == '*' || l[0] == '+') && l[1] == ' ')
			items++;
		if (items >= 2)
			return true;
		i += k + 1;
	}
	return false;
}

enum cw_office_kind cw_office_sniff(struct cw_doc_engine *e, const unsigned char *d, size_t n)
{
	if (!d || n < 2)
		return CW_OFFICE_NONE;
	if (n >= 4 && !memcmp(d, "PK\3\4", 4))
		return sniff_zip(e, d, n);
	if (n >= 8 && !memcmp(d, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8))
		return CW_OFFICE_OLE;
	/* what MuPDF reads keeps going there: PDF (anywhere in the first KiB) and FB2 */
	if (memmem(d, n < 1024 ? n : 1024, "%PDF-", 5) ||
	    memmem(d, n < 4096 ? n : 4096, "<FictionBook", 12))
		return CW_OFFICE_NONE;
	if (n >= 3 && !memcmp(d, "\xef\xbb\xbf", 3)) {
		d += 3;
		n -= 3;
	}
	/* all of it: text kinds reach the output as they are, and JSON needs valid UTF-8 */
	if (!is_text(d, n))
		return CW_OFFICE_NONE;
	size_t ws = 0;
	while (ws < n && isspace(d[ws]))
		ws++;
	if (ws == n)
		return CW_OFFICE_NONE; /* only blanks: "empty document", as before */
	if (d[ws] == '<') {
		if (looks_html(d + ws, n - ws))
			return CW_OFFICE_HTML;
		if (starts_ci(d + ws, n - ws, "<?xml") || starts_ci(d + ws, n - ws, "<svg"))
			return CW_OFFICE_NONE;
	}
	size_t sample = n < 65536 ? n : 65536;
	if (looks_csv(d, sample))
		return CW_OFFICE_CSV;
	if (looks_markdown(d, sample))
		return CW_OFFICE_MARKDOWN;
	return CW_OFFICE_TEXT;
}

/* ---- readers ----------------------------------------------------------------------- */

struct office_reader {
	const char *format; /* the metadata's "format" */
	bool paged;         /* sections are the pages (slides, sheets) */
	struct cw_doc_result (*zipped)(struct odoc *d, struct ozip *z);
	struct cw_doc_result (*flat)(struct odoc *d, const unsigned char *data, size_t len);
};

static const struct office_reader readers[CW_OFFICE_NKINDS] = {
	[CW_OFFICE_DOCX] = {"DOCX", false, cw_office_docx, NULL},
	[CW_OFFICE_PPTX] = {"PPTX", true, cw_office_pptx, NULL},
	[CW_OFFICE_XLSX] = {"XLSX", true, cw_office_xlsx, NULL},
	[CW_OFFICE_ODT] = {"ODT", false, cw_office_odf, NULL},
	[CW_OFFICE_ODS] = {"ODS", true, cw_office_odf, NULL},
	[CW_OFFICE_ODP] = {"ODP", true, cw_office_odf, NULL},
	[CW_OFFICE_HTML] = {"HTML", false, NULL, cw_office_html},
	[CW_OFFICE_MARKDOWN] = {"Markdown", false, NULL, cw_office_text},
	[CW_OFFICE_CSV] = {"CSV", false, NULL, cw_office_text},
	[CW_OFFICE_TEXT] = {"Text", false, NULL, cw_office_text},
};

/* Read the document into d (z stays open for OCR of its images). */
static struct cw_doc_result read_doc(struct odoc *d, struct ozip *z, const unsigned char *data,
				     size_t len)
{
	struct cw_doc_engine *e = d->e;
	const struct office_reader *rd = &readers[d->kind];

	/* the per-document state cw_doc_open resets for MuPDF's documents */
	e->warnings = 0;
	e->ca.refusals = 0;
	memset(&e->cookie, 0, sizeof(e->cookie));
	if (e->cancel && *e->cancel)
		e->cookie.abort = 1;
	if (d->kind == CW_OFFICE_OLE)
		return memmem(data, len, "E\0n\0c\0r\0y\0p\0t\0e\0d\0P\0a\0c\0k\0a\0g\0e", 31)
			       ? cw_doc_res(CW_DOC_ERROR, "the Office document is encrypted: "
					    "decrypting Office files is not supported")
			       : cw_doc_res(CW_DOC_ERROR, "legacy binary Office files (.doc, "
					    ".xls, .ppt) are not supported: save as DOCX/XLSX/PPTX");
	if (!rd->zipped && !rd->flat)
		return cw_doc_res(CW_DOC_ERROR, "unsupported document");
	struct cw_doc_result r;
	if (rd->zipped) {
		r = oz_open(e, data, len, z);
		if (r.status != CW_DOC_OK)
			return r;
		r = rd->zipped(d, z);
	} else {
		r = rd->flat(d, data, len);
	}
	if (r.status == CW_DOC_OK && !od_ok(d))
		r = d->st;
	if (r.status == CW_DOC_OK && cw_doc_cancelled(e))
		r = cw_doc_res(CW_DOC_CANCELLED, "cancelled while reading the document");
	if (r.status == CW_DOC_OK && rd->paged && d->sections == 0)
		r = cw_doc_res(CW_DOC_ERROR, "the %s has no %s", rd->format,
			       d->kind == CW_OFFICE_XLSX || d->kind == CW_OFFICE_ODS ? "sheets"
										  : "slides");
	if (r.status == CW_DOC_OK && d->sections > e->lim.max_pages)
		r = cw_doc_res(CW_DOC_LIMIT, "%d %s, over the limit of %d", d->sections,
			       rd->paged ? "slides or sheets" : "pages", e->lim.max_pages);
	return r;
}

static int page_count(const struct odoc *d)
{
	return readers[d->kind].paged ? d->sections : 1;
}

/* The metadata object with every key the PDF metadata has. */
static json_t *metadata(const struct odoc *d)
{
	static const char *const keys[] = {"title", "author", "subject", "keywords", "creator",
					   "producer", "creation_date", "modification_date"};
	json_t *m = json_object();
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(d->meta, keys[i]);
		json_object_set_new(m, keys[i], v ? json_incref(v) : json_null());
	}
	json_object_set_new(m, "format", json_string(readers[d->kind].format));
	json_object_set_new(m, "encrypted", json_false());
	json_object_set_new(m, "page_count", json_integer(page_count(d)));
	return m;
}

/* pages=: null, n, or a list of n and [from, to] (1-based, inclusive). */
static struct cw_doc_result select_sections(json_t *pages, int count, int **sel, int *nsel)
{
	size_t i;
	json_t *v, *one = NULL;
	*sel = NULL;
	*nsel = 0;
	if (json_is_integer(pages))
		pages = one = json_pack("[O]", pages);
	if (pages && !json_is_null(pages) && !json_is_array(pages))
		return cw_doc_res(CW_DOC_ARGS, "pages must be null, a page number or a list");
	size_t cap = 16;
	int *s = malloc(cap * sizeof(int)), n = 0;
	struct cw_doc_result r = cw_doc_res(CW_DOC_OK, "%s", "");
	if (!s) {
		json_decref(one);
		return cw_doc_res(CW_DOC_LIMIT, "out of memory");
	}
	if (!pages || json_is_null(pages))
		pages = one = json_pack("[[i,i]]", 1, count);
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
			r = cw_doc_res(CW_DOC_ARGS, "pages: entries are page numbers or [from, to]");
			break;
		}
		if (a < 1 || b < a || b > count) {
			r = cw_doc_res(CW_DOC_ARGS, "pages: %lld..%lld is outside 1..%d",
				       (long long)a, (long long)b, count);
			break;
		}
		for (json_int_t p = a; p <= b && r.status == CW_DOC_OK; p++) {
			if ((size_t)n == cap) {
				int *t = realloc(s, (cap *= 2) * sizeof(int));
				if (!t) {
					r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
					break;
				}
				s = t;
			}
			s[n++] = (int)p;
		}
	}
	json_decref(one);
	if (r.status != CW_DOC_OK) {
		free(s);
		return r;
	}
	*sel = s;
	*nsel = n;
	return r;
}

/* Text in its own format (or Markdown and CSV asked for as text) is returned as it is. */
static bool passthrough(enum cw_office_kind kind, enum cw_doc_format fmt)
{
	return (kind == CW_OFFICE_TEXT && fmt == CW_FMT_TEXT) ||
	       (kind == CW_OFFICE_MARKDOWN && (fmt == CW_FMT_MARKDOWN || fmt == CW_FMT_TEXT)) ||
	       (kind == CW_OFFICE_CSV && fmt == CW_FMT_TEXT);
}

struct cw_doc_result cw_office_convert(struct cw_doc_engine *e, enum cw_office_kind kind,
				       const unsigned char *data, size_t len,
				       const struct cw_doc_convert_opts *o, json_t **out)
{
	static const char *const names[] = {"text", "markdown", "json", "html"};
	struct odoc d;
	struct ozip z = {0};
	int *sel = NULL, nsel = 0;
	json_t *ocr_pages = json_array();

	*out = NULL;
	if (!ocr_pages || !od_init(&d, e, kind)) {
		json_decref(ocr_pages);
		return cw_doc_res(CW_DOC_LIMIT, "out of memory");
	}
	struct cw_doc_result r = read_doc(&d, &z, data, len);
	if (r.status == CW_DOC_OK)
		r = select_sections(o->pages, page_count(&d), &sel, &nsel);
	bool paged = readers[kind].paged;
	if (r.status == CW_DOC_OK && o->ocr == CW_OCR_ALWAYS && z.arch)
		r = cw_office_ocr(&d, &z, o, paged ? sel : NULL, nsel, ocr_pages);
	json_t *content = NULL;
	if (r.status == CW_DOC_OK && passthrough(kind, o->format)) {
		size_t bom = len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3) ? 3 : 0;
		content = json_stringn((const char *)data + bom, len - bom);
	} else if (r.status == CW_DOC_OK && o->format == CW_FMT_JSON) {
		content = cw_office_json(&d, paged ? sel : NULL, nsel);
	} else if (r.status == CW_DOC_OK) {
		struct sbuf b = {0};
		cw_office_write(&b, &d, o->format, paged ? sel : NULL, nsel);
		if (!b.oom)
			content = json_stringn_nocheck(b.p ? b.p : "", b.len);
		free(b.p);
	}
	if (r.status == CW_DOC_OK && !content)
		r = cw_doc_res(CW_DOC_LIMIT, "out of memory writing the output");
	if (r.status == CW_DOC_OK) {
		cw_doc_progress(e, nsel, nsel);
		*out = json_pack("{s:s,s:i,s:o,s:o,s:O,s:O}", "format", names[o->format], "pages",
				 nsel, "content", content, "metadata", metadata(&d), "ocr_pages",
				 ocr_pages, "warnings", d.warnings);
		if (!*out)
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
	}
	oz_close(&z);
	od_free(&d);
	free(sel);
	json_decref(ocr_pages);
	return r;
}

struct cw_doc_result cw_office_info(struct cw_doc_engine *e, enum cw_office_kind kind,
				    const unsigned char *data, size_t len, json_t **out)
{
	struct odoc d;
	struct ozip z = {0};
	*out = NULL;
	if (!od_init(&d, e, kind))
		return cw_doc_res(CW_DOC_LIMIT, "out of memory");
	d.meta_only = true;
	struct cw_doc_result r = read_doc(&d, &z, data, len);
	if (r.status == CW_DOC_OK && !(*out = metadata(&d)))
		r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
	oz_close(&z);
	od_free(&d);
	return r;
}
