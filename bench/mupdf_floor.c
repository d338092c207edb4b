/*
 * What MuPDF itself costs per page, below any converter built on it
 * (bench/mupdf_floor.py builds and runs this).  One process, one core, CPU
 * time of the loop over every page of every file:
 *
 *   lex     the page loaded and its content streams lexed and dispatched to a
 *           processor with no operators: the least any MuPDF-based reader does
 *   null    the page run (fz_run_page) on a device that draws nothing: the
 *           whole interpreter (fonts, graphics state, paths, text matrices)
 *   stext   the page run on the structured-text device and written as plain
 *           text, with PyMuPDF's get_text() flags: what PyMuPDF's own work is
 *
 * Usage: mupdf_floor lex|null|stext ROUNDS FILE.pdf...
 * Prints: "<mode> <pages> <cpu seconds>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mupdf/fitz.h>
#include <mupdf/pdf.h>

static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void lex_page(fz_context *ctx, pdf_document *doc, fz_page *page)
{
	pdf_page *pp = (pdf_page *)page;
	pdf_processor *proc = pdf_new_processor(ctx, sizeof(pdf_processor));
	fz_try(ctx)
	{
		pdf_process_contents(ctx, proc, doc, pdf_page_resources(ctx, pp),
				     pdf_page_contents(ctx, pp), NULL);
		pdf_close_processor(ctx, proc);
	}
	fz_always(ctx)
		pdf_drop_processor(ctx, proc);
	fz_catch(ctx)
		fz_warn(ctx, "page not lexed");
}

static size_t run_page(fz_context *ctx, fz_page *page, int text)
{
	fz_stext_page *sp = NULL;
	fz_device *dev = NULL;
	fz_buffer *buf = NULL;
	size_t n = 0;
	fz_var(sp);
	fz_var(dev);
	fz_var(buf);
	fz_try(ctx)
	{
		if (text) {
			/* PyMuPDF 1.21 get_text("text"): ligatures, whitespace, mediabox clip */
			fz_stext_options opts = {.flags = FZ_STEXT_PRESERVE_LIGATURES |
							  FZ_STEXT_PRESERVE_WHITESPACE |
							  FZ_STEXT_MEDIABOX_CLIP};
			sp = fz_new_stext_page(ctx, fz_bound_page(ctx, page));
			dev = fz_new_stext_device(ctx, sp, &opts);
		} else {
			dev = fz_new_device_of_size(ctx, sizeof(fz_device));
		}
		fz_run_page(ctx, page, dev, fz_identity, NULL);
		fz_close_device(ctx, dev);
		if (text) {
			buf = fz_new_buffer_from_stext_page(ctx, sp);
			n = buf->len;
		}
	}
	fz_always(ctx)
	{
		fz_drop_buffer(ctx, buf);
		fz_drop_device(ctx, dev);
		fz_drop_stext_page(ctx, sp);
	}
	fz_catch(ctx)
		fz_warn(ctx, "page not run");
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 4 || (strcmp(argv[1], "lex") && strcmp(argv[1], "null") &&
			 strcmp(argv[1], "stext"))) {
		fprintf(stderr, "usage: mupdf_floor lex|null|stext ROUNDS FILE.pdf...\n");
		return 2;
	}
	const char *mode = argv[1];
	int rounds = atoi(argv[2]);
	fz_context *ctx = fz_new_context(NULL, NULL, FZ_STORE_DEFAULT);
	if (!ctx)
		return 1;
	fz_register_document_handlers(ctx);
	long pages = 0;
	size_t chars = 0;
	double t0 = cpu_now();
	for (int r = 0; r < rounds; r++)
		for (int i = 3; i < argc; i++) {
			fz_document *doc = NULL;
			fz_var(doc);
			fz_try(ctx)
			{
				doc = fz_open_document(ctx, argv[i]);
				pdf_document *pdoc = pdf_specifics(ctx, doc);
				int n = fz_count_pages(ctx, doc);
				for (int p = 0; p < n; p++) {
					fz_page *page = fz_load_page(ctx, doc, p);
					if (!strcmp(mode, "lex") && pdoc)
						lex_page(ctx, pdoc, page);
					else if (strcmp(mode, "lex"))
						chars += run_page(ctx, page, !strcmp(mode, "stext"));
					fz_drop_page(ctx, page);
					pages++;
				}
			}
			fz_always(ctx)
				fz_drop_document(ctx, doc);
			fz_catch(ctx)
				fprintf(stderr, "%s: %s\n", argv[i], fz_caught_message(ctx));
		}
	printf("%s %ld %.6f %zu\n", mode, pages, cpu_now() - t0, chars);
	fz_drop_context(ctx);
	return 0;
}
