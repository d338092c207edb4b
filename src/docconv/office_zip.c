/*
 * Zip packages (OOXML, ODF) through MuPDF's archive reader: the directory is
 * checked once for unsafe entry names, and every entry is read through a
 * stream with caps on what one entry and all of them may expand to, so a
 * zip bomb ends as ResourceLimit after at most the caps' worth of work.
 */
#include "office.h"

#include <stdlib.h>
#include <string.h>

/* Absolute names, drive letters, backslashes and ".." components. */
static bool unsafe_name(const char *s)
{
	if (!*s || *s == '/' || strchr(s, '\\') || (s[0] && s[1] == ':'))
		return true;
	for (const char *p = s; *p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p += n + (slash ? 1 : 0);
	}
	return false;
}

struct cw_doc_result oz_open(struct cw_doc_engine *e, const unsigned char *data, size_t len,
			     struct ozip *z)
{
	fz_context *ctx = e->ctx;
	struct cw_doc_result r = {CW_DOC_OK, ""};
	memset(z, 0, sizeof(*z));
	z->e = e;
	z->srclen = len;
	fz_var(r);
	fz_try(ctx) {
		z->stm = fz_open_memory(ctx, data, len);
		z->arch = fz_open_zip_archive_with_stream(ctx, z->stm);
		int n = fz_count_archive_entries(ctx, z->arch);
		if (n > OZ_MAX_ENTRIES)
			r = cw_doc_res(CW_DOC_LIMIT, "the zip has %d entries, over %d", n,
				       OZ_MAX_ENTRIES);
		for (int i = 0; i < n && r.status == CW_DOC_OK; i++) {
			const char *name = fz_list_archive_entry(ctx, z->arch, i);
			if (name && unsafe_name(name))
				r = cw_doc_res(CW_DOC_ERROR, "unsafe entry name in the zip: '%.200s'",
					       name);
		}
	}
	fz_catch(ctx) {
		r = fz_caught(ctx) == FZ_ERROR_MEMORY
			    ? cw_doc_res(CW_DOC_LIMIT, "opening the zip needs more than %zu MiB",
					 e->lim.memory >> 20)
			    : cw_doc_res(CW_DOC_ERROR, "not a readable zip package: %s",
					 fz_caught_message(ctx));
	}
	if (r.status != CW_DOC_OK)
		oz_close(z);
	return r;
}

void oz_close(struct ozip *z)
{
	if (!z->e)
		return;
	fz_drop_archive(z->e->ctx, z->arch);
	fz_drop_stream(z->e->ctx, z->stm);
	z->arch = NULL;
	z->stm = NULL;
}

bool oz_has(struct ozip *z, const char *name)
{
	int has = 0;
	fz_var(has);
	fz_try(z->e->ctx)
		has = fz_has_archive_entry(z->e->ctx, z->arch, name);
	fz_catch(z->e->ctx)
		has = 0;
	return has != 0;
}

/* Grow *p to hold need bytes; false when out of memory. */
static bool grow(unsigned char **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t c = *cap ? *cap : 65536;
	while (c < need)
		c *= 2;
	unsigned char *q = realloc(*p, c);
	if (!q)
		return false;
	*p = q;
	*cap = c;
	return true;
}

struct cw_doc_result oz_read(struct ozip *z, const char *name, unsigned char **data, size_t *len)
{
	fz_context *ctx = z->e->ctx;
	fz_stream *stm = NULL;
	unsigned char *p = NULL;
	size_t n = 0, cap = 0;
	struct cw_doc_result r = {CW_DOC_OK, ""};

	*data = NULL;
	*len = 0;
	if (!oz_has(z, name))
		return cw_doc_res(CW_DOC_ERROR, "the package has no %.200s", name);
	fz_var(stm);
	fz_var(p);
	fz_var(n);
	fz_var(cap);
	fz_var(r);
	fz_try(ctx) {
		stm = fz_open_archive_entry(ctx, z->arch, name);
		for (;;) {
			if (!grow(&p, &cap, n + 65536 + 1)) {
				r = cw_doc_res(CW_DOC_LIMIT, "out of memory reading %.200s", name);
				break;
			}
			size_t got = fz_read(ctx, stm, p + n, 65536);
			if (!got)
				break;
			n += got;
			z->total += got;
			if (n > OZ_MAX_ENTRY) {
				r = cw_doc_res(CW_DOC_LIMIT, "%.200s expands past %u MiB", name,
					       OZ_MAX_ENTRY >> 20);
				break;
			}
			if (z->total > OZ_MAX_TOTAL ||
			    (z->total > (16u << 20) && z->total / OZ_MAX_RATIO > z->srclen)) {
				r = cw_doc_res(CW_DOC_LIMIT, "the zip expands to more than %zu MiB "
					       "from %zu KiB (a zip bomb?)", z->total >> 20,
					       z->srclen >> 10);
				break;
			}
			if (cw_doc_cancelled(z->e)) {
				r = cw_doc_res(CW_DOC_CANCELLED, "cancelled reading %.200s", name);
				break;
			}
		}
	}
	fz_always(ctx)
		fz_drop_stream(ctx, stm);
	fz_catch(ctx) {
		r = fz_caught(ctx) == FZ_ERROR_MEMORY
			    ? cw_doc_res(CW_DOC_LIMIT, "reading %.200s needs more than %zu MiB",
					 name, z->e->lim.memory >> 20)
			    : cw_doc_res(CW_DOC_ERROR, "cannot read %.200s from the zip: %s", name,
					 fz_caught_message(ctx));
	}
	if (r.status != CW_DOC_OK) {
		free(p);
		return r;
	}
	p[n] = '\0';
	*data = p;
	*len = n;
	return r;
}
