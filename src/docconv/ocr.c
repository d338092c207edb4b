/*
 * OCR with Tesseract: one engine per process, re-initialised only when the
 * language changes, cancelled through the engine's flag; a page is rendered
 * gray at the requested dpi and its text (and, for json, word boxes in
 * points) kept in the page's model.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool tess_cancel(void *data, int words)
{
	struct cw_doc_engine *e = data;
	(void)words;
	return cw_doc_cancelled(e);
}

static struct cw_doc_result tess_ready(struct cw_doc_engine *e, const char *lang)
{
	if (!lang || !*lang || strlen(lang) >= sizeof(e->tess_lang))
		return cw_doc_res(CW_DOC_ARGS, "bad ocr_lang");
	for (const char *c = lang; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '+' && *c != '_')
			return cw_doc_res(CW_DOC_ARGS, "bad ocr_lang '%s'", lang);
	if (e->tess && !strcmp(e->tess_lang, lang))
		return cw_doc_res(CW_DOC_OK, "%s", "");
	if (!e->tess) {
		e->tess = TessBaseAPICreate();
		if (!e->tess)
			return cw_doc_res(CW_DOC_LIMIT, "out of memory starting Tesseract");
	} else {
		TessBaseAPIEnd(e->tess);
	}
	e->tess_lang[0] = '\0';
	if (TessBaseAPIInit3(e->tess, NULL, lang) != 0)
		return cw_doc_res(CW_DOC_ARGS, "Tesseract has no language data for '%s' "
				  "(install tesseract-ocr-%s)", lang, lang);
	snprintf(e->tess_lang, sizeof(e->tess_lang), "%s", lang);
	if (!e->monitor) {
		e->monitor = TessMonitorCreate();
		if (!e->monitor)
			return cw_doc_res(CW_DOC_LIMIT, "out of memory starting Tesseract");
		TessMonitorSetCancelFunc(e->monitor, tess_cancel);
		TessMonitorSetCancelThis(e->monitor, e);
	}
	return cw_doc_res(CW_DOC_OK, "%s", "");
}

static json_t *bbox_pt(int l, int t, int r, int b, double scale)
{
	return json_pack("[f,f,f,f]", l * scale, t * scale, r * scale, b * scale);
}

/* OCR one page: render gray at dpi, recognise, keep text and (for json) word boxes. */
struct cw_doc_result cw_doc_ocr_page(struct cw_doc_engine *e, fz_page *page, int dpi,
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
			r = cw_doc_res(CW_DOC_LIMIT,
				       "page bitmap of %.0f pixels at %d dpi is over the limit",
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
			    ? cw_doc_res(CW_DOC_LIMIT, "rendering for OCR needs more than %zu MiB",
					 e->lim.memory >> 20)
			    : cw_doc_res(CW_DOC_ERROR, "cannot render page for OCR: %s",
					 fz_caught_message(ctx));
	}
	if (r.status == CW_DOC_OK && cw_doc_cancelled(e))
		r = cw_doc_res(CW_DOC_CANCELLED, "cancelled while rendering for OCR");
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
	if (cw_doc_cancelled(e)) {
		TessBaseAPIClear(e->tess);
		return cw_doc_res(CW_DOC_CANCELLED, "cancelled during OCR");
	}
	if (rc != 0) {
		TessBaseAPIClear(e->tess);
		return cw_doc_res(CW_DOC_ERROR, "Tesseract could not recognise the page");
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
					TessPageIteratorBoundingBox(pit, RIL_BLOCK, &bl, &bt, &br,
								    &bb);
					lines = json_array();
					block = json_pack("{s:s,s:o,s:o}", "type", "text", "bbox",
							  bbox_pt(bl, bt, br, bb, scale), "lines",
							  lines);
					json_array_append_new(blocks, block);
					spans = NULL;
				}
				if (!spans || TessPageIteratorIsAtBeginningOf(pit, RIL_TEXTLINE)) {
					int ll, lt, lr, lb;
					TessPageIteratorBoundingBox(pit, RIL_TEXTLINE, &ll, &lt,
								    &lr, &lb);
					spans = json_array();
					json_array_append_new(lines, json_pack(
						"{s:o,s:o}", "bbox", bbox_pt(ll, lt, lr, lb, scale),
						"spans", spans));
				}
				char *w = TessResultIteratorGetUTF8Text(it, RIL_WORD);
				json_array_append_new(spans, json_pack(
					"{s:s,s:o,s:f}", "text", w ? w : "",
					"bbox", bbox_pt(l, t, rr, b, scale),
					"confidence", TessResultIteratorConfidence(it, RIL_WORD)));
				TessDeleteText(w);
			} while (TessResultIteratorNext(it, RIL_WORD));
			TessResultIteratorDelete(it);
		}
		p->ocr_json = blocks;
	}
	TessBaseAPIClear(e->tess);
	return cw_doc_res(CW_DOC_OK, "%s", "");
}

