/*
 * The conversion engine's MuPDF side: a context per process whose allocator
 * enforces the memory limit, warnings and cancellation, and opening a
 * document from bytes (type sniffing, password, page limit) with its
 * metadata.  The engine object itself is in docconv_int.h.
 */
#include "docconv_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- capped allocator ------------------------------------------------------ */

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

void cw_doc_engine_set_progress(struct cw_doc_engine *e, cw_doc_progress_fn fn, void *user)
{
	e->progress = fn;
	e->progress_user = user;
}

void cw_doc_progress(struct cw_doc_engine *e, int done, int total)
{
	if (e->progress)
		e->progress(e->progress_user, done, total);
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

bool cw_doc_cancelled(struct cw_doc_engine *e)
{
	if (e->cancel && *e->cancel)
		e->cookie.abort = 1;
	return e->cookie.abort != 0;
}

struct cw_doc_result cw_doc_res(enum cw_doc_status st, const char *fmt, ...)
{
	struct cw_doc_result r = {.status = st};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r.message, sizeof(r.message), fmt, ap);
	va_end(ap);
	return r;
}

/* MuPDF 1.21 picks a handler by name only: tell it what the bytes are. */
static __attribute__((noinline)) const char *sniff(const unsigned char *d, size_t n,
						    const char *name)
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

void cw_doc_close(struct cw_doc_engine *e, struct opened *o)
{
	fz_drop_document(e->ctx, o->doc);
	fz_drop_stream(e->ctx, o->stm);
	o->doc = NULL;
	o->stm = NULL;
}

struct cw_doc_result cw_doc_open(struct cw_doc_engine *e, const unsigned char *data, size_t len,
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
		return cw_doc_res(CW_DOC_ERROR, "empty document");
	fz_var(r);
	fz_try(ctx) {
		o->stm = fz_open_memory(ctx, data, len);
		o->doc = fz_open_document_with_stream(ctx, magic, o->stm);
		if (fz_needs_password(ctx, o->doc)) {
			if (!password || !*password)
				r = cw_doc_res(CW_DOC_PASSWORD,
					       "the document is encrypted; pass password=...");
			else if (!fz_authenticate_password(ctx, o->doc, password))
				r = cw_doc_res(CW_DOC_PASSWORD,
					       "wrong password for the encrypted document");
		}
		if (r.status == CW_DOC_OK) {
			if (fz_is_document_reflowable(ctx, o->doc))
				fz_layout_document(ctx, o->doc, 612, 792, 11);
			o->pages = fz_count_pages(ctx, o->doc);
			if (o->pages > e->lim.max_pages)
				r = cw_doc_res(CW_DOC_LIMIT, "%d pages, over the limit of %d",
					       o->pages, e->lim.max_pages);
			else if (o->pages <= 0)
				r = cw_doc_res(CW_DOC_ERROR, "the document has no pages");
		}
	}
	fz_catch(ctx) {
		if (fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals)
			r = cw_doc_res(CW_DOC_LIMIT, "opening the document needs more than %zu MiB",
				       e->lim.memory >> 20);
		else
			r = cw_doc_res(CW_DOC_ERROR, "cannot open document (%s): %s", magic,
				       fz_caught_message(ctx));
	}
	if (r.status != CW_DOC_OK)
		cw_doc_close(e, o);
	return r;
}

json_t *cw_doc_metadata(struct cw_doc_engine *e, struct opened *o)
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
