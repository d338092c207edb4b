#include "office.h"
struct cw_doc_result cw_office_pptx(struct odoc *d, struct ozip *z) { (void)d; (void)z; return cw_doc_res(CW_DOC_ERROR, "todo"); }
struct cw_doc_result cw_office_xlsx(struct odoc *d, struct ozip *z) { (void)d; (void)z; return cw_doc_res(CW_DOC_ERROR, "todo"); }
struct cw_doc_result cw_office_odf(struct odoc *d, struct ozip *z) { (void)d; (void)z; return cw_doc_res(CW_DOC_ERROR, "todo"); }
struct cw_doc_result cw_office_ocr(struct odoc *d, struct ozip *z, const struct cw_doc_convert_opts *o, const int *sel, int nsel, json_t *p) { (void)d; (void)z; (void)o; (void)sel; (void)nsel; (void)p; return cw_doc_res(CW_DOC_OK, "%s", ""); }
