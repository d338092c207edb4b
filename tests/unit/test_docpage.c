/*
 * cw_doc_load_page (src/docconv/docconv.c): a page whose annotations are
 * all links loads without them, and renders the same; a page with an
 * annotation that draws (here a text box) loads the ordinary way.  The PDF
 * is made here with MuPDF: three pages, "Alpha" with a link to page 3,
 * "Beta" with a link and a FreeText annotation saying "Gamma", "Delta"
 * with no annotations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mupdf/fitz.h>
#include <mupdf/pdf.h>

#include "docconv/docconv.h"
#include "docconv_int.h"

#include "check.h"

static void add_text_page(fz_context *ctx, pdf_document *doc, pdf_obj *font, const char *word)
{
	char ops[128];
	pdf_obj *res = pdf_new_dict(ctx, doc, 1);
	pdf_obj *fonts = pdf_dict_put_dict(ctx, res, PDF_NAME(Font), 1);
	pdf_dict_puts(ctx, fonts, "F1", font);
	snprintf(ops, sizeof(ops), "BT /F1 24 Tf 72 700 Td (%s) Tj ET", word);
	fz_buffer *contents = fz_new_buffer_from_copied_data(ctx, (const unsigned char *)ops,
							     strlen(ops));
	pdf_obj *page = pdf_add_page(ctx, doc, fz_make_rect(0, 0, 612, 792), 0, res, contents);
	pdf_insert_page(ctx, doc, -1, page);
	pdf_drop_obj(ctx, page);
	pdf_drop_obj(ctx, res);
	fz_drop_buffer(ctx, contents);
}

/* The three-page fixture, written out and read back as a file would be. */
static fz_buffer *make_pdf(fz_context *ctx)
{
	pdf_document *doc = pdf_create_document(ctx);
	fz_font *helv = fz_new_base14_font(ctx, "Helvetica");
	pdf_obj *font = pdf_add_simple_font(ctx, doc, helv, PDF_SIMPLE_ENCODING_LATIN);
	add_text_page(ctx, doc, font, "Alpha");
	add_text_page(ctx, doc, font, "Beta");
	add_text_page(ctx, doc, font, "Delta");

	pdf_page *p1 = pdf_load_page(ctx, doc, 0);
	fz_drop_link(ctx, pdf_create_link(ctx, p1, fz_make_rect(72, 90, 200, 120), "#page=3"));
	pdf_page *p2 = pdf_load_page(ctx, doc, 1);
	fz_drop_link(ctx, pdf_create_link(ctx, p2, fz_make_rect(72, 90, 200, 120), "#page=1"));
	pdf_annot *box = pdf_create_annot(ctx, p2, PDF_ANNOT_FREE_TEXT);
	pdf_set_annot_rect(ctx, box, fz_make_rect(72, 300, 400, 340));
	pdf_set_annot_contents(ctx, box, "Gamma");
	pdf_update_annot(ctx, box);
	pdf_drop_annot(ctx, box);
	fz_drop_page(ctx, &p1->super);
	fz_drop_page(ctx, &p2->super);

	fz_buffer *buf = fz_new_buffer(ctx, 4096);
	fz_output *out = fz_new_output_with_buffer(ctx, buf);
	pdf_write_options opts = pdf_default_write_options;
	pdf_write_document(ctx, doc, out, &opts);
	fz_close_output(ctx, out);
	fz_drop_output(ctx, out);
	pdf_drop_obj(ctx, font);
	fz_drop_font(ctx, helv);
	pdf_drop_document(ctx, doc);
	return buf;
}

static fz_document *open_pdf(fz_context *ctx, fz_buffer *buf)
{
	fz_stream *stm = fz_open_buffer(ctx, buf);
	fz_document *doc = fz_open_document_with_stream(ctx, "application/pdf", stm);
	fz_drop_stream(ctx, stm);
	return doc;
}

/* The page's text, annotations included as docconv runs them (a new string). */
static char *page_text(fz_context *ctx, fz_page *page)
{
	fz_stext_page *sp = fz_new_stext_page(ctx, fz_bound_page(ctx, page));
	fz_device *dev = fz_new_stext_device(ctx, sp, NULL);
	fz_run_page(ctx, page, dev, fz_identity, NULL);
	fz_close_device(ctx, dev);
	fz_drop_device(ctx, dev);
	fz_buffer *b = fz_new_buffer_from_stext_page(ctx, sp);
	char *s = fz_strdup(ctx, fz_string_from_buffer(ctx, b));
	fz_drop_buffer(ctx, b);
	fz_drop_stext_page(ctx, sp);
	return s;
}

static int count_links(fz_context *ctx, fz_page *page)
{
	fz_link *links = fz_load_links(ctx, page);
	int n = 0;
	for (fz_link *l = links; l; l = l->next)
		n++;
	fz_drop_link(ctx, links);
	return n;
}

static int annots_len(fz_context *ctx, fz_document *doc, int number)
{
	pdf_document *pdf = pdf_specifics(ctx, doc);
	return pdf_array_len(ctx, pdf_dict_get(ctx, pdf_lookup_page_obj(ctx, pdf, number),
					       PDF_NAME(Annots)));
}

static void pages(fz_context *ctx, fz_buffer *buf)
{
	fz_document *lean = open_pdf(ctx, buf), *plain = open_pdf(ctx, buf);
	static const char *const words[] = {"Alpha", "Beta", "Delta"};

	for (int i = 0; i < 3; i++) {
		fz_page *a = cw_doc_load_page(ctx, lean, i);
		fz_page *b = fz_load_page(ctx, plain, i);
		char *ta = page_text(ctx, a), *tb = page_text(ctx, b);
		/* the same text either way, the annotation's included */
		CHECK(strcmp(ta, tb) == 0);
		CHECK(strstr(ta, words[i]) != NULL);
		CHECK((strstr(ta, "Gamma") != NULL) == (i == 1));
		/* the fixture has the links the ordinary load finds */
		CHECK(count_links(ctx, b) == (i < 2 ? 1 : 0));
		/* only a page with nothing but links loads without them */
		CHECK(count_links(ctx, a) == (i == 1 ? 1 : 0));
		/* and its annotations are back in the document afterwards */
		CHECK(annots_len(ctx, lean, i) == annots_len(ctx, plain, i));
		CHECK(annots_len(ctx, lean, i) == (i == 0 ? 1 : i == 1 ? 2 : 0));
		fz_free(ctx, ta);
		fz_free(ctx, tb);
		fz_drop_page(ctx, a);
		fz_drop_page(ctx, b);
	}
	/* loading a page again (the put-back array) gives the same */
	fz_page *again = cw_doc_load_page(ctx, lean, 0);
	CHECK(count_links(ctx, again) == 0);
	CHECK(annots_len(ctx, lean, 0) == 1);
	fz_drop_page(ctx, again);
	fz_drop_document(ctx, lean);
	fz_drop_document(ctx, plain);
}

/* The whole conversion reads every page's words, the text box's too. */
static void convert(fz_buffer *buf)
{
	struct cw_doc_limits lim = {0};
	struct cw_doc_engine *e = cw_doc_engine_new(&lim);
	struct cw_doc_convert_opts o = {.format = CW_FMT_TEXT, .ocr = CW_OCR_NEVER,
					.ocr_lang = "eng", .dpi = 300};
	unsigned char *data;
	size_t len = fz_buffer_storage(NULL, buf, &data);
	json_t *out = NULL;

	CHECK(e != NULL);
	if (!e)
		return;
	struct cw_doc_result r = cw_doc_convert(e, data, len, "links.pdf", &o, &out);
	CHECK(r.status == CW_DOC_OK);
	const char *text = json_string_value(json_object_get(out, "content"));
	CHECK(text && strstr(text, "Alpha") && strstr(text, "Beta") && strstr(text, "Gamma") &&
	      strstr(text, "Delta"));
	CHECK(json_integer_value(json_object_get(out, "pages")) == 3);
	CHECK(json_array_size(json_object_get(out, "warnings")) == 0);
	json_decref(out);
	cw_doc_engine_free(e);
}

int main(void)
{
	fz_context *ctx = fz_new_context(NULL, NULL, FZ_STORE_DEFAULT);
	fz_buffer *buf = NULL;

	fz_var(buf);
	fz_try(ctx) {
		fz_register_document_handlers(ctx);
		buf = make_pdf(ctx);
		pages(ctx, buf);
	}
	fz_catch(ctx) {
		fprintf(stderr, "MuPDF: %s\n", fz_caught_message(ctx));
		failures++;
	}
	if (buf)
		convert(buf);
	fz_drop_buffer(ctx, buf);
	fz_drop_context(ctx);
	return check_summary();
}
