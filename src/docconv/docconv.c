/*
 * Document conversion entry points (see docconv.h): info, convert and render.
 * They open the document (engine.c), select pages, and per page build the
 * model (structure.c, tables.c, with the rulings from paths.c) or OCR it
 * (ocr.c), then run the structure pass over all pages (furniture.c, flow.c)
 * and hand the model to a writer (writers.c).
 */
#include "docconv_int.h"
#include "office.h"

#include <stdlib.h>
#include <string.h>

#include <mupdf/pdf.h>

struct cw_doc_result cw_doc_info(struct cw_doc_engine *e, const unsigned char *data, size_t len,
				 const char *name, const char *password, json_t **out)
{
	enum cw_office_kind kind = cw_office_sniff(e, data, len);
	if (kind != CW_OFFICE_NONE) /* Office, web and text documents: office.c */
		return cw_office_info(e, kind, data, len, out);
	struct opened o;
	struct cw_doc_result r = cw_doc_open(e, data, len, name, password, &o);
	*out = NULL;
	if (r.status != CW_DOC_OK)
		return r;
	*out = cw_doc_metadata(e, &o);
	cw_doc_close(e, &o);
	return r;
}

/* ---- loading a page for its text -------------------------------------------- */

/*
 * Whether a page's /Annots has entries and every one is a Link or a Popup
 * (or not an annotation at all): then setting it aside changes nothing drawn.
 */
static bool only_links(fz_context *ctx, pdf_obj *annots)
{
	int n = pdf_array_len(ctx, annots);
	if (n == 0)
		return false; /* none (or not an array): nothing to set aside */
	for (int i = 0; i < n; i++) {
		pdf_obj *a = pdf_array_get(ctx, annots, i);
		if (!pdf_is_dict(ctx, a))
			continue; /* MuPDF skips these too */
		pdf_obj *type = pdf_dict_get(ctx, a, PDF_NAME(Subtype));
		if (!pdf_name_eq(ctx, type, PDF_NAME(Link)) && !pdf_name_eq(ctx, type, PDF_NAME(Popup)))
			return false;
	}
	return true;
}

/* Out of memory here leaves the page without links, which nothing reads. */
static void put_back(fz_context *ctx, pdf_obj *pobj, pdf_obj *annots)
{
	fz_try(ctx) {
		pdf_dict_put(ctx, pobj, PDF_NAME(Annots), annots);
	}
	fz_always(ctx) {
		pdf_drop_obj(ctx, annots);
	}
	fz_catch(ctx) {
		fz_warn(ctx, "could not put a page's annotations back: %s", fz_caught_message(ctx));
	}
}

/*
 * fz_load_page for conversion.  Loading a PDF page loads its link
 * annotations and resolves each one's destination (named destinations
 * through the name tree, the target page through the page tree): on the R
 * reference manual, 24,611 links over 2,415 pages, that was a sixth of the
 * conversion time, and conversion never uses links.  Links and popups draw
 * nothing, so when they are all the page's annotations its /Annots is set
 * aside while the page loads and put back at once: the page renders the
 * same.  Any other annotation (a form field, a stamp, a text box) keeps the
 * ordinary load, so what it draws is still read.  The edit is in memory
 * only (the document is never saved); MuPDF keeps edited objects in an
 * incremental xref section, about 1 MiB for that manual.
 */
fz_page *cw_doc_load_page(fz_context *ctx, fz_document *doc, int number)
{
	pdf_document *pdf = pdf_specifics(ctx, doc);
	pdf_obj *pobj = NULL, *annots = NULL;
	fz_page *page = NULL;

	fz_var(annots);
	fz_var(page);
	if (pdf) {
		fz_try(ctx) {
			pobj = pdf_lookup_page_obj(ctx, pdf, number);
			pdf_obj *a = pdf_dict_get(ctx, pobj, PDF_NAME(Annots));
			if (only_links(ctx, a)) {
				annots = pdf_keep_obj(ctx, a);
				pdf_dict_del(ctx, pobj, PDF_NAME(Annots));
			}
		}
		fz_catch(ctx) {
			/* a broken tree or annotation, the edit refused (before it changed
			 * anything): the ordinary load */
			pdf_drop_obj(ctx, annots);
			annots = NULL;
		}
	}
	if (!annots)
		return fz_load_page(ctx, doc, number);
	fz_try(ctx) {
		page = fz_load_page(ctx, doc, number);
	}
	fz_always(ctx) {
		put_back(ctx, pobj, annots);
	}
	fz_catch(ctx) {
		fz_rethrow(ctx);
	}
	return page;
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
			return cw_doc_res(CW_DOC_LIMIT, "out of memory");
		for (int p = 0; p < count; p++)
			(*sel)[p] = p;
		*nsel = count;
		return cw_doc_res(CW_DOC_OK, "%s", "");
	}
	if (json_is_integer(pages)) {
		json_t *one = json_pack("[O]", pages);
		struct cw_doc_result r = select_pages(one, count, sel, nsel);
		json_decref(one);
		return r;
	}
	if (!json_is_array(pages))
		return cw_doc_res(CW_DOC_ARGS, "pages must be null, a page number or a list");
	int cap = 16, n = 0;
	int *s = malloc((size_t)cap * sizeof(int));
	if (!s)
		return cw_doc_res(CW_DOC_LIMIT, "out of memory");
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
			return cw_doc_res(CW_DOC_ARGS,
					  "pages: entries are page numbers or [from, to]");
		}
		if (a < 1 || b < a || b > count) {
			free(s);
			return cw_doc_res(CW_DOC_ARGS, "pages: %lld..%lld is outside 1..%d",
					  (long long)a, (long long)b, count);
		}
		for (json_int_t p = a; p <= b; p++) {
			if (n == cap) {
				int *t = realloc(s, (size_t)(cap *= 2) * sizeof(int));
				if (!t) {
					free(s);
					return cw_doc_res(CW_DOC_LIMIT, "out of memory");
				}
				s = t;
			}
			s[n++] = (int)p - 1;
		}
	}
	*sel = s;
	*nsel = n;
	return cw_doc_res(CW_DOC_OK, "%s", "");
}

/* ---- convert ------------------------------------------------------------------ */

#define MIN_TEXT_CHARS 16 /* fewer non-space characters: no usable text layer */

struct cw_doc_result cw_doc_convert(struct cw_doc_engine *e, const unsigned char *data,
				    size_t len, const char *name,
				    const struct cw_doc_convert_opts *o, json_t **out)
{
	enum cw_office_kind kind = cw_office_sniff(e, data, len);
	if (kind != CW_OFFICE_NONE) /* Office, web and text documents: office.c */
		return cw_office_convert(e, kind, data, len, o, out);
	fz_context *ctx = e->ctx;
	struct opened od;
	struct cw_doc_result r = cw_doc_open(e, data, len, name, o->password, &od);
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
		r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
		goto done;
	}
	for (int i = 0; i < nsel && r.status == CW_DOC_OK; i++) {
		fz_page *page = NULL;
		fz_stext_page *sp = NULL;
		fz_device *dev = NULL, *rdev = NULL;
		struct rulings rul = {0};
		bool model_ok = true;
		fz_var(i);
		fz_var(page);
		fz_var(sp);
		fz_var(dev);
		fz_var(rdev);
		fz_var(model_ok);
		fz_var(r);
		pages[i].number = sel[i] + 1;
		fz_try(ctx) {
			page = cw_doc_load_page(ctx, od.doc, sel[i]);
			fz_rect bounds = fz_bound_page(ctx, page);
			pages[i].w = bounds.x1 - bounds.x0;
			pages[i].h = bounds.y1 - bounds.y0;
			sp = fz_new_stext_page(ctx, bounds);
			fz_stext_options so = {.flags = FZ_STEXT_PRESERVE_IMAGES};
			dev = fz_new_stext_device(ctx, sp, &so);
			/* one run for text and the rulings tables are drawn with */
			rdev = cw_doc_new_rulings_device(ctx, dev, &rul);
			fz_run_page(ctx, page, rdev, fz_identity, &e->cookie);
			fz_close_device(ctx, rdev);
			fz_close_device(ctx, dev);
			model_ok = cw_doc_page_model(ctx, sp, &rul, o->format == CW_FMT_JSON,
						     &pages[i]);
		}
		fz_always(ctx) {
			fz_drop_device(ctx, rdev);
			fz_drop_device(ctx, dev);
			fz_drop_stext_page(ctx, sp);
			cw_doc_rulings_free(&rul);
		}
		fz_catch(ctx) {
			r = fz_caught(ctx) == FZ_ERROR_MEMORY || e->ca.refusals
				    ? cw_doc_res(CW_DOC_LIMIT, "page %d needs more than %zu MiB",
						 sel[i] + 1, e->lim.memory >> 20)
				    : cw_doc_res(CW_DOC_ERROR, "page %d: %s", sel[i] + 1,
						 fz_caught_message(ctx));
		}
		if (r.status == CW_DOC_OK && !model_ok)
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory building page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && cw_doc_cancelled(e))
			r = cw_doc_res(CW_DOC_CANCELLED, "cancelled on page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && e->ca.refusals)
			r = cw_doc_res(CW_DOC_LIMIT, "page %d needs more than %zu MiB", sel[i] + 1,
				       e->lim.memory >> 20);
		bool need_ocr = o->ocr == CW_OCR_ALWAYS ||
				(o->ocr == CW_OCR_AUTO && pages[i].chars < MIN_TEXT_CHARS &&
				 (pages[i].has_images || pages[i].chars == 0));
		if (r.status == CW_DOC_OK && need_ocr) {
			r = cw_doc_ocr_page(e, page, o->dpi, o->ocr_lang, o->format == CW_FMT_JSON,
					    &pages[i]);
			if (r.status == CW_DOC_OK)
				json_array_append_new(ocr_pages, json_integer(sel[i] + 1));
		}
		fz_drop_page(ctx, page);
		if (r.status == CW_DOC_OK)
			cw_doc_progress(e, i + 1, nsel);
	}
	if (r.status != CW_DOC_OK)
		goto done;

	pdf_document *pdf = pdf_specifics(ctx, od.doc);
	if (pdf && pdf_was_repaired(ctx, pdf))
		json_array_append_new(warnings, json_string("the file was damaged and repaired"));
	if (e->warnings)
		json_array_append_new(
			warnings, json_pack("s+", "MuPDF warnings: ", e->last_warning));

	/* the structure pass over the whole document: furniture, reading order, flow */
	struct styles st;
	struct layout_opts lo = {o->keep_furniture, o->page_separator};
	cw_doc_mark_furniture(pages, nsel);
	cw_doc_find_styles(pages, nsel, &st);
	cw_doc_flow(pages, nsel, &st, o->keep_furniture);
	for (int i = 0; jpages && i < nsel; i++) {
		json_t *pj = json_pack("{s:i,s:f,s:f,s:b}", "number", sel[i] + 1, "width",
				       pages[i].w, "height", pages[i].h, "ocr", pages[i].ocr);
		if (pages[i].ocr) {
			json_object_set_new(pj, "blocks", json_incref(pages[i].ocr_json));
			json_object_set_new(pj, "confidence", json_real(pages[i].ocr_conf));
		} else {
			json_object_set_new(pj, "blocks", cw_doc_json_blocks(&pages[i]));
		}
		json_array_append_new(jpages, pj);
	}

	json_t *content;
	if (o->format == CW_FMT_JSON) {
		content = json_pack("{s:O}", "pages", jpages);
	} else {
		struct sbuf b = {0};
		if (o->format == CW_FMT_TEXT)
			cw_doc_write_text(&b, pages, nsel, &lo);
		else
			cw_doc_write_rich(&b, pages, nsel, o->format == CW_FMT_HTML, &st, &lo);
		if (b.oom) {
			free(b.p);
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory writing the output");
			goto done;
		}
		content = json_stringn_nocheck(b.p ? b.p : "", b.len);
		free(b.p);
	}
	static const char *const names[] = {"text", "markdown", "json", "html"};
	*out = json_pack("{s:s,s:i,s:o,s:o,s:O,s:O}", "format", names[o->format], "pages", nsel,
			 "content", content, "metadata", cw_doc_metadata(e, &od),
			 "ocr_pages", ocr_pages, "warnings", warnings);
	if (!*out)
		r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
done:
	if (od.doc || od.stm)
		cw_doc_close(e, &od);
	for (int i = 0; pages && i < nsel; i++)
		cw_doc_page_free(&pages[i]);
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
	struct cw_doc_result r = cw_doc_open(e, data, len, name, password, &od);
	struct cw_doc_page_image *img = NULL;

	*images = NULL;
	*nimages = 0;
	if (r.status != CW_DOC_OK)
		return r;
	r = select_pages(pages, od.pages, &sel, &nsel);
	if (r.status == CW_DOC_OK && !(img = calloc((size_t)(nsel ? nsel : 1), sizeof(*img))))
		r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
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
			page = cw_doc_load_page(ctx, od.doc, sel[i]);
			fz_matrix ctm = fz_scale(dpi / 72.0f, dpi / 72.0f);
			fz_irect box = fz_round_rect(fz_transform_rect(fz_bound_page(ctx, page),
								       ctm));
			double pixels = (double)(box.x1 - box.x0) * (double)(box.y1 - box.y0);
			if (pixels > e->lim.max_pixels) {
				r = cw_doc_res(CW_DOC_LIMIT,
					       "page %d at %d dpi is %.0f pixels, over the limit",
					       sel[i] + 1, dpi, pixels);
			} else {
				pix = fz_new_pixmap_with_bbox(ctx, fz_device_rgb(ctx), box, NULL,
							      0);
				fz_clear_pixmap_with_value(ctx, pix, 255);
				dev = fz_new_draw_device(ctx, fz_identity, pix);
				fz_run_page(ctx, page, dev, ctm, &e->cookie);
				fz_close_device(ctx, dev);
				buf = fz_new_buffer_from_pixmap_as_png(ctx, pix,
								       fz_default_color_params);
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
				    ? cw_doc_res(CW_DOC_LIMIT,
						 "rendering page %d needs more than %zu MiB",
						 sel[i] + 1, e->lim.memory >> 20)
				    : cw_doc_res(CW_DOC_ERROR, "page %d: %s", sel[i] + 1,
						 fz_caught_message(ctx));
		}
		if (r.status == CW_DOC_OK && !img[i].png)
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory encoding page %d", sel[i] + 1);
		if (r.status == CW_DOC_OK && cw_doc_cancelled(e))
			r = cw_doc_res(CW_DOC_CANCELLED, "cancelled on page %d", sel[i] + 1);
		*nimages = i + 1;
		if (r.status == CW_DOC_OK)
			cw_doc_progress(e, i + 1, nsel);
	}
	cw_doc_close(e, &od);
	free(sel);
	if (r.status != CW_DOC_OK) {
		cw_doc_images_free(img, *nimages);
		*nimages = 0;
		return r;
	}
	*images = img;
	return r;
}
