/* The option table: every setting the worker has, and --help built from it. */
#include <stdio.h>

#include "config/config_int.h"
#include "cw_build.h"

const struct opt cw_config_opts[] = {
	{"broker_url", "broker", 'b', "CELERY_BROKER_URL", T_STR, OFF(broker_url),
	 "redis://127.0.0.1:6379/0", 0, 0, true,
	 "Broker URL: redis://[:password@]host[:port][/db], amqp://user:password@host[:port]/vhost or amqps://..."},
	{"result_backend", "result-backend", 0, "CELERY_RESULT_BACKEND", T_STR, OFF(result_backend),
	 NULL, 0, 0, true,
	 "Result backend URL (redis://, db+postgresql://, rpc://); unset = results are not stored"},
	{"worker_queues", "queues", 'Q', NULL, T_STR, OFF(queues), "celery", 0, 0, false,
	 "Comma-separated queues to consume from"},
	{"worker_concurrency", "concurrency", 'c', NULL, T_LONG, OFF(concurrency), NULL, 1, 1024,
	 false, "Number of child processes (default: number of CPUs)"},
	{"worker_pool", "pool", 'P', NULL, T_STR, OFF(pool), "prefork", 0, 0, false,
	 "Pool implementation: prefork | solo"},
	{"worker_hostname", "hostname", 'n', NULL, T_STR, OFF(hostname), "celery@%h", 0, 0, false,
	 "Node name; %h = hostname, %n = name part, %d = domain"},
	{"worker_loglevel", "loglevel", 'l', NULL, T_STR, OFF(loglevel), "warning", 0, 0, false,
	 "Log level: debug | info | warning | error | critical"},
	{"worker_prefetch_multiplier", "prefetch-multiplier", 0, NULL, T_LONG,
	 OFF(prefetch_multiplier), "4", 1, 65535, false,
	 "Unacknowledged messages held per child: concurrency x multiplier"},
	{"worker_disable_prefetch", "disable-prefetch", 0, NULL, T_BOOL, OFF(disable_prefetch),
	 "false", 0, 0, false,
	 "Redis: take a message only when a child is free (Celery 5.6); ignored on AMQP"},
	{NULL, "config", 0, NULL, T_STR, OFF(config_file), NULL, 0, 0, false,
	 "Config file of 'key = value' lines (keys as in this list)"},
	{"worker_diagnostic_tasks", "diagnostic-tasks", 0, NULL, T_BOOL, OFF(diagnostic_tasks),
	 "false", 0, 0, false, "Also register cworker.spin and cworker.crash"},
	{"result_expires", "result-expires", 0, NULL, T_SECONDS, OFF(result_expires), "86400", 0, 0,
	 false, "Seconds until stored results expire (0 = never)"},
	{"result_extended", "result-extended", 0, NULL, T_BOOL, OFF(result_extended), "false", 0, 0,
	 false, "Store name, args, kwargs, worker, retries, queue with results"},
	{"broker_transport_options.visibility_timeout", "visibility-timeout", 0, NULL, T_SECONDS,
	 OFF(visibility_timeout), "3600", 0, 0, false,
	 "Seconds before an unacknowledged Redis message is given to another worker"},
	{"broker_use_ssl", "broker-use-ssl", 0, NULL, T_BOOL, OFF(broker_ssl), "false", 0, 0, false,
	 "AMQP: TLS even with an amqp:// URL (amqps:// always uses TLS)"},
	{"broker_use_ssl.ca_certs", "broker-ssl-ca-certs", 0, NULL, T_STR, OFF(broker_ssl_ca), NULL, 0,
	 0, false, "AMQP TLS: CA certificates (PEM) that sign the broker's certificate"},
	{"broker_use_ssl.certfile", "broker-ssl-certfile", 0, NULL, T_STR, OFF(broker_ssl_cert), NULL,
	 0, 0, false, "AMQP TLS: client certificate (PEM)"},
	{"broker_use_ssl.keyfile", "broker-ssl-keyfile", 0, NULL, T_STR, OFF(broker_ssl_key), NULL, 0,
	 0, false, "AMQP TLS: client private key (PEM)"},
	{"broker_use_ssl.cert_reqs", "broker-ssl-cert-reqs", 0, NULL, T_STR, OFF(broker_ssl_reqs),
	 "CERT_REQUIRED", 0, 0, false,
	 "AMQP TLS: CERT_REQUIRED verifies the broker's certificate and host name; CERT_NONE does not"},
	{"broker_use_ssl.ssl_ca_certs", "broker-ssl-ssl-ca-certs", 0, NULL, T_STR, OFF(broker_ssl_ca),
	 NULL, 0, 0, false, "Redis TLS (rediss://): kombu's name for broker_use_ssl.ca_certs"},
	{"broker_use_ssl.ssl_certfile", "broker-ssl-ssl-certfile", 0, NULL, T_STR,
	 OFF(broker_ssl_cert), NULL, 0, 0, false,
	 "Redis TLS: kombu's name for broker_use_ssl.certfile"},
	{"broker_use_ssl.ssl_keyfile", "broker-ssl-ssl-keyfile", 0, NULL, T_STR, OFF(broker_ssl_key),
	 NULL, 0, 0, false, "Redis TLS: kombu's name for broker_use_ssl.keyfile"},
	{"broker_use_ssl.ssl_cert_reqs", "broker-ssl-ssl-cert-reqs", 0, NULL, T_STR,
	 OFF(broker_ssl_reqs), NULL, 0, 0, false,
	 "Redis TLS: kombu's name for broker_use_ssl.cert_reqs"},
	{"broker_transport_options.master_name", "broker-master-name", 0, NULL, T_STR,
	 OFF(broker_master_name), NULL, 0, 0, false,
	 "sentinel:// broker: the name of the master the sentinels watch"},
	{"redis_backend_use_ssl.ssl_ca_certs", "redis-backend-ssl-ca-certs", 0, NULL, T_STR,
	 OFF(redis_ssl_ca), NULL, 0, 0, false,
	 "rediss:// result backend: CA certificates (PEM) (unset = the system's)"},
	{"redis_backend_use_ssl.ssl_certfile", "redis-backend-ssl-certfile", 0, NULL, T_STR,
	 OFF(redis_ssl_cert), NULL, 0, 0, false, "rediss:// result backend: client certificate (PEM)"},
	{"redis_backend_use_ssl.ssl_keyfile", "redis-backend-ssl-keyfile", 0, NULL, T_STR,
	 OFF(redis_ssl_key), NULL, 0, 0, false, "rediss:// result backend: client private key (PEM)"},
	{"redis_backend_use_ssl.ssl_cert_reqs", "redis-backend-ssl-cert-reqs", 0, NULL, T_STR,
	 OFF(redis_ssl_reqs), NULL, 0, 0, false,
	 "rediss:// result backend: CERT_REQUIRED (unset too) verifies the certificate and host; "
	 "CERT_NONE does not"},
	{"result_backend_transport_options.master_name", "result-backend-master-name", 0, NULL, T_STR,
	 OFF(backend_master_name), NULL, 0, 0, false,
	 "sentinel:// result backend: the name of the master the sentinels watch"},
	{"broker_heartbeat", "broker-heartbeat", 0, NULL, T_LONG, OFF(broker_heartbeat), "120", 0,
	 65535, false, "AMQP connection heartbeat in seconds (0 = off)"},
	{"broker_connection_timeout", "broker-connection-timeout", 0, NULL, T_SECONDS,
	 OFF(broker_connection_timeout), "4", 0, 0, false,
	 "AMQP: seconds to wait for the TCP/TLS connection and the login"},
	{"task_queue_max_priority", "task-queue-max-priority", 0, NULL, T_LONG,
	 OFF(queue_max_priority), "0", 0, 255, false,
	 "AMQP: declare consumed queues with x-max-priority (0 = no priority queues)"},
	{"task_default_queue_type", "task-default-queue-type", 0, NULL, T_STR, OFF(queue_type),
	 "classic", 0, 0, false,
	 "AMQP: type of the queues the worker declares: classic | quorum (x-queue-type; "
	 "[queue:NAME] sections override)"},
	{"worker_queue_passive", "queue-passive", 0, NULL, T_BOOL, OFF(queue_passive), "false", 0, 0,
	 false, "AMQP: declare consumed queues passively: consume them as they exist, whatever "
	 "their arguments (the queue must exist)"},
	{"broker_failover_strategy", "broker-failover-strategy", 0, NULL, T_STR,
	 OFF(failover_strategy), "round-robin", 0, 0, false,
	 "AMQP broker URL lists (amqp://a;amqp://b): which URL is tried next after a connection "
	 "loss: round-robin | shuffle"},
	{"control_queue_exclusive", "control-queue-exclusive", 0, NULL, T_BOOL,
	 OFF(control_exclusive), "false", 0, 0, false,
	 "AMQP: declare this worker's <node>.celery.pidbox queue exclusive to its connection (false: "
	 "auto-delete as Celery 5.2, and exclusive anyway where the broker refuses transient "
	 "non-exclusive queues, as RabbitMQ 4.3)"},
	{"task_acks_late", "acks-late", 0, NULL, T_BOOL, OFF(acks_late), "false", 0, 0, false,
	 "Acknowledge messages after the task ends instead of just before it starts"},
	{"task_reject_on_worker_lost", "reject-on-worker-lost", 0, NULL, T_BOOL,
	 OFF(reject_on_worker_lost), "false", 0, 0, false,
	 "With acks_late: requeue a message whose child died instead of failing it"},
	{"task_time_limit", "time-limit", 0, NULL, T_SECONDS, OFF(time_limit), "0", 0, 0, false,
	 "Hard time limit: the child is killed, state FAILURE TimeLimitExceeded (0 = none)"},
	{"task_soft_time_limit", "soft-time-limit", 0, NULL, T_SECONDS, OFF(soft_time_limit), "0", 0,
	 0, false, "Soft time limit: the task is asked to stop, SoftTimeLimitExceeded (0 = none)"},
	{"worker_max_tasks_per_child", "max-tasks-per-child", 0, NULL, T_LONG,
	 OFF(max_tasks_per_child), "0", 0, 1000000000L, false,
	 "Replace a child after this many tasks (0 = never)"},
	{"worker_max_memory_per_child", "max-memory-per-child", 0, NULL, T_LONG,
	 OFF(max_memory_per_child), "0", 0, 1000000000L, false,
	 "Replace a child whose RSS passed this many KiB after a task (0 = never)"},
	{"worker_child_memory_limit", "child-memory-limit", 0, NULL, T_LONG, OFF(child_memory_limit),
	 "0", 0, 1000000000L, false,
	 "Kill a task whose child's RSS passes this many KiB while it runs: MemoryLimitExceeded (0 = none)"},
	{"worker_soft_shutdown_timeout", "soft-shutdown-timeout", 0, "CWORKER_SOFT_SHUTDOWN_TIMEOUT",
	 T_SECONDS,
	 OFF(soft_shutdown_timeout), "0", 0, 0, false,
	 "Cold shutdown (SIGQUIT, 2nd SIGINT) first waits up to this many seconds for running "
	 "tasks, then cancels them (0 = cancel at once)"},
	{"worker_enable_soft_shutdown_on_idle", "enable-soft-shutdown-on-idle", 0, NULL, T_BOOL,
	 OFF(soft_shutdown_on_idle), "false", 0, 0, false,
	 "Accepted for Celery compatibility; no effect (held messages go back at once)"},
	{"worker_eta_task_limit", "eta-task-limit", 0, NULL, T_LONG, OFF(eta_task_limit), "0", 0,
	 1000000000L, false,
	 "Cap on unacknowledged messages while ETA/countdown tasks are held (0 = no cap)"},
	{"worker_max_redeliveries", "max-redeliveries", 0, NULL, T_LONG, OFF(max_redeliveries), "0", 0,
	 1000000L, false, "Fail a message delivered more than this many times (0 = unlimited)"},
	{"database_table_names.task", "database-table-names-task", 0, NULL, T_STR,
	 OFF(db_task_table), "celery_taskmeta", 0, 0, false,
	 "db+postgresql backend: table of task results"},
	{"database_table_names.group", "database-table-names-group", 0, NULL, T_STR,
	 OFF(db_group_table), "celery_tasksetmeta", 0, 0, false,
	 "db+postgresql backend: table of group results"},
	{"database_table_schemas.task", "database-table-schemas-task", 0, NULL, T_STR,
	 OFF(db_task_schema), NULL, 0, 0, false,
	 "db+postgresql backend: schema of the task table (unset = the search path)"},
	{"database_table_schemas.group", "database-table-schemas-group", 0, NULL, T_STR,
	 OFF(db_group_schema), NULL, 0, 0, false,
	 "db+postgresql backend: schema of the group table (unset = the search path)"},
	{"worker_send_task_events", "task-events", 'E', NULL, T_BOOL, OFF(task_events), "false", 0, 0,
	 false, "Send task-* events (celery events, Flower); enable_events turns them on later"},
	{NULL, "without-heartbeat", 0, NULL, T_BOOL, OFF(without_heartbeat), "false", 0, 0, false,
	 "Send no worker-online/heartbeat/offline events"},
	{"worker_heartbeat_interval", "heartbeat-interval", 0, NULL, T_SECONDS,
	 OFF(heartbeat_interval), "2", 0, 0, false, "Seconds between worker-heartbeat events"},
	{NULL, "without-gossip", 0, NULL, T_BOOL, OFF(without_gossip), "false", 0, 0, false,
	 "Accepted for celery-worker compatibility; cworker has no gossip"},
	{NULL, "without-mingle", 0, NULL, T_BOOL, OFF(without_mingle), "false", 0, 0, false,
	 "Accepted for celery-worker compatibility; cworker has no mingle"},
	{"worker_autoscale", "autoscale", 0, NULL, T_STR, OFF(autoscale), NULL, 0, 0, false,
	 "MAX,MIN: grow the pool to MAX processes under load, shrink to MIN when idle"},
	{"worker_state_db", "statedb", 'S', NULL, T_STR, OFF(statedb), NULL, 0, 0, false,
	 "File that keeps revoked task ids across restarts (unset = in memory only)"},
	{"docconv_roots", "docconv-roots", 0, NULL, T_STR, OFF(docconv_roots), NULL, 0, 0, false,
	 "Comma-separated directories docconv tasks may read and write (unset = no local files)"},
	{"docconv_memory_limit", "docconv-memory-limit", 0, NULL, T_LONG, OFF(docconv_memory_mib),
	 "512", 16, 1048576, false, "MiB MuPDF may use for one document: ResourceLimit above"},
	{"docconv_max_pages", "docconv-max-pages", 0, NULL, T_LONG, OFF(docconv_max_pages), "10000",
	 1, 10000000, false, "Documents with more pages fail with ResourceLimit"},
	{"docconv_inline_max", "docconv-inline-max", 0, NULL, T_LONG, OFF(docconv_inline_max),
	 "8388608", 0, 1L << 40, false,
	 "Bytes of converted content returned in the result; larger needs output= (0 = no limit)"},
	{"docconv_max_download", "docconv-max-download", 0, NULL, T_LONG, OFF(docconv_max_download),
	 "256", 1, 1048576, false, "MiB of one http(s)/s3 input"},
	{"docconv_timeout", "docconv-timeout", 0, NULL, T_SECONDS, OFF(docconv_timeout), "60", 0, 0,
	 false, "Seconds for one http(s)/s3 transfer"},
	{"docconv_library", "docconv-library", 0, "CWORKER_DOCCONV_LIBRARY", T_STR,
	 OFF(docconv_library), NULL, 0, 0, false,
	 "The docconv conversion code (cworker-docconv.so) a process loads on its first docconv "
	 "task; unset = docconv/ beside the executable (a build tree), else the install directory"},
	{"database_url", "database-url", 0, "CWORKER_DATABASE_URL", T_STR, OFF(database_url), NULL,
	 0, 0, true, "PostgreSQL URL of the docconv document store (output=\"postgresql:TABLE\")"},
	{"s3_endpoint_url", "s3-endpoint-url", 0, NULL, T_STR, OFF(s3_endpoint), NULL, 0, 0, false,
	 "S3-compatible endpoint (unset = AWS); credentials from AWS_ACCESS_KEY_ID/..."},
	{"s3_region", "s3-region", 0, NULL, T_STR, OFF(s3_region), "us-east-1", 0, 0, false,
	 "S3 region used for request signing"},
	{"s3_path_style", "s3-path-style", 0, NULL, T_BOOL, OFF(s3_path_style), "false", 0, 0, false,
	 "Address buckets as endpoint/bucket/key (most S3-compatible servers)"},
	{"http_listen", "http", 0, NULL, T_STR, OFF(http_listen), NULL, 0, 0, false,
	 "HOST:PORT to serve /metrics, /health/live and /health/ready on (unset = off)"},
	{"log_format", "log-format", 0, NULL, T_STR, OFF(log_format), "text", 0, 0, false,
	 "Log line format: text | json (one JSON object per line)"},
	{NULL, "list-tasks", 0, NULL, T_FLAG_ACTION, OFF(list_tasks), NULL, 0, 0, false,
	 "Print the registered task names and exit"},
	{"worker_task_modules", "task-module", 0, "CWORKER_TASK_MODULES", T_STR, OFF(task_modules),
	 NULL, 0, 0, false,
	 "Load a task module (a shared object, see docs/modules.md); repeat the flag for more; "
	 "in the config file and the environment a comma-separated list"},
	{"worker_task_modules_dir", "task-modules-dir", 0, NULL, T_STR, OFF(task_modules_dir),
	 CW_MODULE_DIR, 0, 0, false,
	 "Load every *.so task module in this directory (skipped when it does not exist)"},
	{"task_track_started", "track-started", 0, NULL, T_BOOL, OFF(track_started), "false", 0, 0,
	 false, "Store the STARTED state (with pid and hostname) when a task starts, as Celery's "
	 "task_track_started"},
	{NULL, "print-config", 0, NULL, T_FLAG_ACTION, OFF(print_config), NULL, 0, 0, false,
	 "Print the effective configuration with the source of each value, and exit"},
};
const size_t cw_config_nopts = sizeof(cw_config_opts) / sizeof(cw_config_opts[0]);
_Static_assert(sizeof(cw_config_opts) / sizeof(cw_config_opts[0]) <= CW_CONFIG_MAX_OPTS,
	       "raise CW_CONFIG_MAX_OPTS");

void cw_config_print_help(FILE *out)
{
	fprintf(out,
		"Usage: cworker [worker] [OPTIONS]\n"
		CW_USAGE_EXTRA /* the commands this build adds (cw_build.h) */
		"A native Celery worker: consumes Celery task messages and runs C tasks.\n\n"
		"Options (config-file key and environment variable in brackets):\n");
	for (size_t i = 0; i < cw_config_nopts; i++) {
		const struct opt *o = &cw_config_opts[i];
		char flag[64];
		if (o->sflag)
			snprintf(flag, sizeof(flag), "-%c, --%s%s", o->sflag, o->lflag,
				 o->type == T_BOOL || o->type == T_FLAG_ACTION ? "" : " VALUE");
		else
			snprintf(flag, sizeof(flag), "    --%s%s", o->lflag,
				 o->type == T_BOOL || o->type == T_FLAG_ACTION ? "" : " VALUE");
		fprintf(out, "  %-32s %s", flag, o->help);
		if (o->def && o->type != T_BOOL)
			fprintf(out, " (default: %s)", o->def);
		if (o->key || o->env) {
			fprintf(out, " [");
			if (o->key)
				fprintf(out, "%s", o->key);
			if (o->env)
				fprintf(out, "%s%s", o->key ? ", env " : "env ", o->env);
			fprintf(out, "]");
		}
		fputc('\n', out);
	}
	fprintf(out, "  %-32s %s\n", "    --version", "Print the version and exit");
	fprintf(out, "  %-32s %s\n", "-h, --help", "Print this help and exit");
	fprintf(out, "\nExit status: 0 after a warm shutdown, 64 on a usage error, 1 on a fatal error.\n");
}

