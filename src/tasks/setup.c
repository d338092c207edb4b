/* Registering and configuring the task families of this build (see setup.h). */
#include "tasks/setup.h"

#include "http/metrics.h"
#include "tasks/alias.h"
#include "tasks/modules.h"
#include "tasks/services.h"
#ifdef CW_HAVE_DOCCONV
#include "docconv/tasks.h"
#endif

int cw_tasks_setup(struct cw_registry *r, const struct cw_config *cfg, bool configure,
		   struct cw_error *err)
{
	if (configure && cw_services_configure(cfg) != CW_OK) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	int rc = cw_modules_load(r, cfg, configure, err);
	if (rc != CW_OK)
		return rc;
#ifdef CW_HAVE_DOCCONV
	if (cw_docconv_register(r) != CW_OK) {
		cw_error_set(err, CW_EINVAL, "cannot register the docconv tasks");
		return CW_EINVAL;
	}
	if (configure) {
		struct cw_docconv_conf dc = {
			.roots = cfg->docconv_roots,
			.max_download = (size_t)cfg->docconv_max_download << 20,
			.timeout = cfg->docconv_timeout, .s3_endpoint = cfg->s3_endpoint,
			.s3_region = cfg->s3_region, .s3_path_style = cfg->s3_path_style,
			.memory_mib = (size_t)cfg->docconv_memory_mib,
			.max_pages = (int)cfg->docconv_max_pages,
			.inline_max = (size_t)cfg->docconv_inline_max, .database_url = cfg->database_url};
		if (cw_docconv_configure(&dc) != 0) {
			cw_error_set(err, CW_EINVAL, "docconv: configuration refused");
			return CW_EINVAL;
		}
	}
#endif
	rc = cw_aliases_register(r, cfg, err);
	if (rc != CW_OK && !err->msg[0])
		cw_error_set(err, rc, "out of memory");
	return rc;
}

void cw_tasks_declare_counters(struct cw_metrics *m)
{
#ifdef CW_HAVE_DOCCONV
	/* exported (with these HELP texts) before the first count */
	cw_metrics_declare_counter(m, "docconv_pages",
				   "Document pages converted or rendered by successful docconv tasks.");
	cw_metrics_declare_counter(m, "docconv_ocr_pages",
				   "Pages that went through OCR in successful docconv tasks.");
#else
	(void)m;
#endif
}

void cw_tasks_teardown(void)
{
	cw_aliases_free();
	cw_modules_unload();
	cw_services_free();
#ifdef CW_HAVE_DOCCONV
	cw_docconv_shutdown();
#endif
}
