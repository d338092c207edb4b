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

/* Per-task settings from a [task:NAME] section; -1 / < 0 = not set. */
struct cw_task_conf {
	char *name;
	int acks_late;
	int reject_on_worker_lost;
	double time_limit;
	double soft_time_limit;
	char *rate_limit;            /* as written */
	char *alias_of;              /* [alias:NAME]: the task that runs it */
	char *alias_args;            /* [alias:NAME]: positional mapping, e.g. "-, source, **" */
	bool is_alias;
	double rate;                 /* tasks per second from rate_limit; 0 = unlimited */
	int track_started;           /* -1 = not set here */
};

/*
 * A [module:NAME] section (the module's own settings, read by cw_setting()) or a
 * [queue:NAME] section (passive, x- queue arguments): its key/value lines as written.
 */
struct cw_module_conf {
	char *name;
	char **keys, **vals;
	int n;
};

/*
 * Celery's rate strings: "10/s", "100/m", "1000/h", or a bare number (per
 * second); "0" or "" = unlimited.  *per_second gets the rate.
 */
int cw_config_parse_rate(const char *s, double *per_second) CW_MUST_CHECK;

struct cw_config {
	char *broker_url;
	char *result_backend;        /* NULL or "" = results not stored */
	char *queues;                /* comma-separated */
	long concurrency;
	char *pool;                  /* "prefork" | "solo" */
	char *hostname;              /* after %h/%n/%d expansion */
	char *loglevel;
	long prefetch_multiplier;
	bool disable_prefetch;       /* worker_disable_prefetch (Redis only, as Celery 5.6) */
	char *config_file;
	bool diagnostic_tasks;
	double result_expires;       /* seconds; 0 = never */
	bool result_extended;
	double visibility_timeout;   /* seconds */
	bool list_tasks;             /* --list-tasks: print the registry and exit */
	bool acks_late;              /* task_acks_late */
	bool reject_on_worker_lost;  /* task_reject_on_worker_lost */
	double time_limit;           /* task_time_limit, seconds; 0 = none */
	double soft_time_limit;      /* task_soft_time_limit, seconds; 0 = none */
	long max_tasks_per_child;    /* 0 = unlimited */
	long max_memory_per_child;   /* KiB, checked after each task; 0 = unlimited */
	long child_memory_limit;     /* KiB, enforced while a task runs; 0 = none */
	long max_redeliveries;       /* deliveries of one message before FAILURE; 0 = unlimited */
	double soft_shutdown_timeout; /* worker_soft_shutdown_timeout, seconds; 0 = off */
	bool soft_shutdown_on_idle;  /* worker_enable_soft_shutdown_on_idle (accepted, no effect) */
	long eta_task_limit;         /* worker_eta_task_limit: unacked cap with ETA held; 0 = none */
	char *statedb;               /* worker_state_db: revoked ids persisted here; NULL = none */
	bool task_events;            /* -E: send task-* events */
	bool without_heartbeat;      /* no worker-* events */
	double heartbeat_interval;   /* seconds between worker-heartbeat events */
	bool without_gossip, without_mingle; /* accepted, no effect */
	char *autoscale;             /* "MAX,MIN" as given */
	int autoscale_max, autoscale_min; /* parsed; 0 = no autoscaler */
	char *docconv_roots;         /* comma-separated allowed directories */
	long docconv_memory_mib, docconv_max_pages, docconv_inline_max, docconv_max_download;
	double docconv_timeout;
	char *docconv_library;       /* cworker-docconv.so; NULL = beside the executable or libdir */
	char *s3_endpoint, *s3_region;
	bool s3_path_style;
	char *database_url;          /* docconv document store (output="postgresql:TABLE") */
	char *db_task_table, *db_group_table, *db_task_schema, *db_group_schema;
	bool broker_ssl;             /* broker_use_ssl */
	char *broker_ssl_ca, *broker_ssl_cert, *broker_ssl_key, *broker_ssl_reqs;
	long broker_heartbeat;       /* seconds; 0 = off */
	double broker_connection_timeout;
	long queue_max_priority;     /* task_queue_max_priority; 0 = none */
	char *queue_type;            /* task_default_queue_type: "classic" | "quorum" */
	bool queue_passive;          /* worker_queue_passive: consume existing queues as they are */
	char *failover_strategy;     /* broker_failover_strategy: "round-robin" | "shuffle" */
	bool control_exclusive;      /* control_queue_exclusive: the pidbox queue is exclusive */
	char *http_listen;           /* --http HOST:PORT: metrics and health; NULL = off */
	char *log_format;            /* "text" | "json" */
	bool print_config;           /* --print-config: print the effective settings and exit */
	char *task_modules;          /* comma-separated shared objects (--task-module, repeatable) */
	char *task_modules_dir;      /* every *.so in it is loaded */
	bool track_started;          /* task_track_started */
	char *broker_master_name;    /* broker_transport_options.master_name (sentinel://) */
	char *backend_master_name;   /* result_backend_transport_options.master_name */
	char *redis_ssl_ca, *redis_ssl_cert, *redis_ssl_key, *redis_ssl_reqs; /* redis_backend_use_ssl */

	struct cw_task_conf *tasks;  /* [task:NAME] sections */
	int ntasks;
	struct cw_module_conf *modules;  /* [module:NAME] sections */
	int nmodules;
	struct cw_module_conf *queue_confs;  /* [queue:NAME] sections */
	int nqueue_confs;

	/* derived */
	enum cw_pool_kind pool_kind;
	int log_level;               /* enum cw_log_level */
	char **queue_list;           /* NULL-terminated */
	int nqueues;
};

enum cw_config_action { CW_CONFIG_RUN, CW_CONFIG_EXIT_OK };

/* The value of key in the [module:NAME] section, or NULL. */
const char *cw_config_module_value(const struct cw_config *c, const char *module, const char *key);
/*
 * A setting's effective value as text (unmasked), by config-file key:
 * CW_OK, or CW_ENOTFOUND for an unknown key or an unset one.
 */
int cw_config_value_text(const struct cw_config *c, const char *key, char *buf, size_t bufsz);
/* task_track_started for task: its [task:NAME] track_started, else the global one. */
bool cw_config_track_started(const struct cw_config *c, const char *task);

/*
 * Build the configuration from argv, the environment and the config file.
 * Returns CW_CONFIG_RUN, CW_CONFIG_EXIT_OK (after --help/--version), or a
 * negative error with a one-line message in *err (caller exits 64).
 */
int cw_config_load(struct cw_config *cfg, int argc, char **argv, struct cw_error *err);
void cw_config_free(struct cw_config *cfg);
void cw_config_print_help(FILE *out);
/* The [task:NAME] section for name, or NULL. */
const struct cw_task_conf *cw_config_task(const struct cw_config *cfg, const char *name);

/* Expand %h (full hostname), %n (name part), %d (domain) in fmt. malloc'd. */
char *cw_config_expand_hostname(const char *fmt, const char *fqdn);

#endif
