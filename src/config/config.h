/*
 * Worker configuration: one table (config.c) gives every setting its
 * Celery-style config key, command-line flag, environment variable, type,
 * default and help text.  Layers apply in order defaults < file < env < CLI.
 */
#ifndef CW_CONFIG_H
#define CW_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "util/err.h"

#define CW_EX_USAGE 64   /* sysexits.h EX_USAGE */

enum cw_pool_kind { CW_POOL_PREFORK, CW_POOL_SOLO };

struct cw_config {
	char *broker_url;
	char *result_backend;        /* NULL or "" = results not stored */
	char *queues;                /* comma-separated */
	long concurrency;
	char *pool;                  /* "prefork" | "solo" */
	char *hostname;              /* after %h/%n/%d expansion */
	char *loglevel;
	long prefetch_multiplier;
	char *config_file;
	bool diagnostic_tasks;
	double result_expires;       /* seconds; 0 = never */
	bool result_extended;
	double visibility_timeout;   /* seconds */
	bool list_tasks;             /* --list-tasks: print the registry and exit */

	/* derived */
	enum cw_pool_kind pool_kind;
	int log_level;               /* enum cw_log_level */
	char **queue_list;           /* NULL-terminated */
	int nqueues;
};

enum cw_config_action { CW_CONFIG_RUN, CW_CONFIG_EXIT_OK };

/*
 * Build the configuration from argv, the environment and the config file.
 * Returns CW_CONFIG_RUN, CW_CONFIG_EXIT_OK (after --help/--version), or a
 * negative error with a one-line message in *err (caller exits 64).
 */
int cw_config_load(struct cw_config *cfg, int argc, char **argv, struct cw_error *err);
void cw_config_free(struct cw_config *cfg);
void cw_config_print_help(FILE *out);
/* Expand %h (full hostname), %n (name part), %d (domain) in fmt. malloc'd. */
char *cw_config_expand_hostname(const char *fmt, const char *fqdn);

#endif
