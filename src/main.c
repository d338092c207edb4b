/* cworker: command line -> configuration -> worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#ifdef CW_HAVE_DOCCONV
#include "docconv/module.h"
#endif
#include "consumer/worker.h"
#include "http/http.h"
#include "tasks/registry.h"
#include "tasks/setup.h"
#include "util/log.h"

/* --list-tasks: every registered task with the module it came from. */
static int list_tasks(const struct cw_config *cfg)
{
	struct cw_registry *r = cw_registry_new();
	struct cw_error err = {0};
	if (!r)
		return 1;
	int rc = cw_tasks_setup(r, cfg, false, &err);
	if (rc != CW_OK) {
		fprintf(stderr, "cworker: error: %s\n", err.msg);
		cw_registry_free(r);
		cw_tasks_teardown();
		return rc == CW_EINVAL ? CW_EX_USAGE : 1;
	}
	for (size_t i = 0; i < cw_registry_count(r); i++) {
		const struct cw_task_def *d = cw_registry_at(r, i);
		printf("%-28s %-10s %s\n", d->name, cw_registry_module(r, d->name),
		       d->doc ? d->doc : "");
	}
	cw_registry_free(r);
	cw_tasks_teardown();
	return 0;
}

int main(int argc, char **argv)
{
	/*
	 * No OpenMP set-up here: Tesseract is not linked into the executable;
	 * cworker-docconv.so sets OMP_THREAD_LIMIT=1 (unless the caller chose)
	 * before it loads it (docconv/module.c).
	 */
#if defined(CW_HAVE_DOCCONV) && defined(CW_HAVE_POSTGRES)
	/* `cworker batch status ID`: document store progress, no worker (cworker-docconv.so) */
	if (argc > 1 && !strcmp(argv[1], "batch"))
		return cw_docconv_batch_main(argc - 1, argv + 1);
#endif
	struct cw_config cfg;
	struct cw_error err = {0};
	int rc = cw_config_load(&cfg, argc, argv, &err);

	if (rc < 0) {
		fprintf(stderr, "cworker: error: %s (see cworker --help)\n", err.msg);
		cw_config_free(&cfg);
		return CW_EX_USAGE;
	}
	if (rc == CW_CONFIG_EXIT_OK) {
		cw_config_free(&cfg);
		return 0;
	}
	cw_log_threshold = (enum cw_log_level)cfg.log_level;
	cw_log_set_json(!strcmp(cfg.log_format, "json"));
	/* --http sizes its connection cap from the open-files limit: raise it first */
	if (cfg.http_listen && *cfg.http_listen)
		(void)cw_http_raise_fd_limit();
	if (cfg.list_tasks)
		rc = list_tasks(&cfg);
	else
		rc = cw_worker_run(&cfg);
	cw_config_free(&cfg);
	return rc;
}
