/*
 * Fuzz target: bytes through the Office and web readers (office.h) in every
 * output format.  Text-like inputs go where the sniffer sends them; a zip
 * the sniffer does not claim is forced through one of the zip readers (by
 * its length), so mutated packages reach DOCX, PPTX, XLSX and ODF parsing
 * even when their directory no longer names the main part.  One engine for
 * the process, tight limits, as in fuzz_docconv.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "docconv/office.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum cw_office_kind zips[] = {CW_OFFICE_DOCX, CW_OFFICE_PPTX,
						   CW_OFFICE_XLSX, CW_OFFICE_ODT, CW_OFFICE_ODS,
						   CW_OFFICE_ODP};
	static struct cw_doc_engine *e;
	json_t *out = NULL;

	if (!e) {
		struct cw_doc_limits lim = {.memory = 64u << 20, .max_pages = 50,
					    .max_pixels = 4e6};
		e = cw_doc_engine_new(&lim);
		if (!e)
			abort();
	}
	enum cw_office_kind kind = cw_office_sniff(e, data, size);
	if (kind == CW_OFFICE_NONE && size >= 4 && !memcmp(data, "PK\3\4", 4))
		kind = zips[size % (sizeof(zips) / sizeof(zips[0]))];
	if (kind == CW_OFFICE_NONE)
		return 0;
	(void)cw_office_info(e, kind, data, size, &out);
	json_decref(out);
	for (int f = CW_FMT_TEXT; f <= CW_FMT_HTML; f++) {
		struct cw_doc_convert_opts o = {.format = (enum cw_doc_format)f,
						.ocr = CW_OCR_NEVER, .ocr_lang = "eng", .dpi = 72};
		out = NULL;
		struct cw_doc_result r = cw_office_convert(e, kind, data, size, &o, &out);
		if (r.status == CW_DOC_OK && !out)
			abort(); /* success must come with a result */
		json_decref(out);
	}
	return 0;
}
