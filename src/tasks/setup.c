/* Registering and configuring the task families of this build (see setup.h). */
#include "tasks/setup.h"

#include "http/metrics.h"
#include "tasks/alias.h"
#include "tasks/modules.h"
#include "tasks/services.h"

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
}
