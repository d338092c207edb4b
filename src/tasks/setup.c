/* Registering and configuring the task families of this build (see setup.h). */
#include "tasks/setup.h"

#include "http/metrics.h"
#include "tasks/alias.h"

int cw_tasks_setup(struct cw_registry *r, const struct cw_config *cfg, bool configure,
		   struct cw_error *err)
{
	int rc = cw_tasks_register_builtin(r, cfg->diagnostic_tasks);
	if (rc != CW_OK) {
		cw_error_set(err, rc, "cannot register the built-in tasks");
		return rc;
	}
	rc = cw_aliases_register(r, cfg, err);
	if (rc != CW_OK) {
		if (!err->msg[0])
			cw_error_set(err, rc, "out of memory");
		return rc;
	}
	/* docconv is a module now (src/docconv/module.h): the module loader registers it */
	(void)configure;
	return CW_OK;
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
}
