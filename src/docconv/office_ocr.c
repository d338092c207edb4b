/*
 * ocr="always" for Office documents: each embedded image (a package entry
 * the tree names) is opened by MuPDF as an image document and recognised
 * by the same Tesseract path as scanned PDF pages (ocr.c); its text goes
 * next to the image's placeholder.  Images that MuPDF cannot decode (EMF,
 * WMF, SVG) are left as placeholders with a warning.  ocr="auto" does not
 * OCR Office images: their documents have a text layer by construction.
 */
#include "office.h"

#include <stdlib.h>
#include <string.h>

struct ocr_walk {
	struct odoc *d;
	struct ozip *z;
	const struct cw_doc_convert_opts *o;
	int images, failed;
};

static struct cw_doc_result ocr_image(struct ocr_walk *w, struct onode *img)
{
	struct cw_doc_engine *e = w->d->e;
	unsigned char *data;
	size_t len;
	struct opened od;
	struct tpage tp = {0};
	fz_page *page = NULL;

	struct cw_doc_result r = oz_read(w->z, img->part, &data, &len);
	if (r.status != CW_DOC_OK)
		return r.status == CW_DOC_ERROR ? cw_doc_res(CW_DOC_OK, "%s", "") : r;
	r = cw_doc_open(e, data, len, img->part, NULL, &od);
	if (r.status != CW_DOC_OK) {
		free(data);
		w->failed++;
		return r.status == CW_DOC_ERROR ? cw_doc_res(CW_DOC_OK, "%s", "") : r;
	}
	fz_var(page);
	fz_try(e->ctx)
		page = fz_load_page(e->ctx, od.doc, 0);
	fz_catch(e->ctx)
		page = NULL;
	if (page) {
		r = cw_doc_ocr_page(e, page, w->o->dpi, w->o->ocr_lang, false, &tp);
		fz_drop_page(e->ctx, page);
	} else {
		w->failed++;
	}
	if (r.status == CW_DOC_OK && tp.ocr_text) {
		size_t n = strlen(tp.ocr_text);
		while (n && (tp.ocr_text[n - 1] == '\n' || tp.ocr_text[n - 1] == ' '))
			n--;
		od_set(w->d, &img->ocr, tp.ocr_text, n);
		w->images++;
		r = w->d->st;
	}
	cw_doc_page_free(&tp);
	cw_doc_close(e, &od);
	free(data);
	return r;
}

/* OCR the images below n; *hit when one was recognised. */
static struct cw_doc_result walk(struct ocr_walk *w, struct onode *n, bool *hit)
{
	struct cw_doc_result r = cw_doc_res(CW_DOC_OK, "%s", "");
	for (struct onode *c = n->first; c && r.status == CW_DOC_OK; c = c->next) {
		if (c->type == ON_IMAGE && c->part) {
			int before = w->images;
			r = ocr_image(w, c);
			*hit |= w->images > before;
		} else {
			r = walk(w, c, hit);
		}
	}
	return r;
}

static bool chosen(const int *sel, int nsel, int k)
{
	if (!sel)
		return true;
	for (int i = 0; i < nsel; i++)
		if (sel[i] == k)
			return true;
	return false;
}

struct cw_doc_result cw_office_ocr(struct odoc *d, struct ozip *z,
				   const struct cw_doc_convert_opts *o, const int *sel, int nsel,
				   json_t *ocr_pages)
{
	struct ocr_walk w = {d, z, o, 0, 0};
	struct cw_doc_result r = cw_doc_res(CW_DOC_OK, "%s", "");
	bool sections = d->root->first && d->root->first->type == ON_SECTION;
	if (!sections) {
		bool hit = false;
		r = walk(&w, d->root, &hit);
		if (r.status == CW_DOC_OK)
			r = walk(&w, d->notes, &hit);
		if (hit)
			json_array_append_new(ocr_pages, json_integer(1));
	} else {
		int k = 0;
		for (struct onode *s = d->root->first; s && r.status == CW_DOC_OK; s = s->next) {
			bool hit = false;
			if (!chosen(sel, nsel, ++k))
				continue;
			r = walk(&w, s, &hit);
			if (hit)
				json_array_append_new(ocr_pages, json_integer(k));
		}
	}
	if (w.failed)
		json_array_append_new(d->warnings, json_sprintf("%d embedded images could not be "
								"decoded for OCR", w.failed));
	return r;
}
