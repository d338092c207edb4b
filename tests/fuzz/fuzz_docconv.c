/*
 * Fuzz target: bytes as a document source through the conversion entry
 * points (info, text and JSON conversion without OCR, markdown of the first
 * pages).  One engine for the process, as in a pool child; tight limits so
 * hostile inputs hit them instead of exhausting the fuzzer.
 */
#include <stdint.h>
#include <stdlib.h>

#include "docconv/docconv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cw_doc_engine *e;
	json_t *out = NULL;

	if (!e) {
		struct cw_doc_limits lim = {.memory = 64u << 20, .max_pages = 20,
					    .max_pixels = 4e6};
		e = cw_doc_engine_new(&lim);
		if (!e)
			abort();
	}
	(void)cw_doc_info(e, data, size, NULL, NULL, &out);
	json_decref(out);
	static const enum cw_doc_format fmts[] = {CW_FMT_TEXT, CW_FMT_JSON, CW_FMT_MARKDOWN,
						  CW_FMT_HTML};
	struct cw_doc_convert_opts o = {.format = fmts[size % 4], .ocr = CW_OCR_NEVER,
					.ocr_lang = "eng", .dpi = 72, .password = "x"};
	out = NULL;
	struct cw_doc_result r = cw_doc_convert(e, data, size, NULL, &o, &out);
	if (r.status == CW_DOC_OK && !out)
		abort(); /* success must come with a result */
	json_decref(out);
	return 0;
}
