#include "config/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend/backend.h"
#include "broker/broker.h"
#include "cw_build.h"
#include "util/log.h"
#include "util/url.h"

enum opt_type { T_STR, T_LONG, T_SECONDS, T_BOOL, T_FLAG_ACTION };

struct opt {
	const char *key;      /* config-file key (Celery setting name) */
	const char *lflag;    /* long flag without dashes */
	char sflag;           /* short flag or 0 */
	const char *env;      /* environment variable or NULL */
	enum opt_type type;
	size_t off;           /* offset in struct cw_config */
	const char *def;      /* default as text (NULL = none) */
	long min, max;        /* range for T_LONG */
	bool secret;          /* value may hold credentials */
	const char *help;
};

#define OFF(f) offsetof(struct cw_config, f)

static const struct opt opts[] = {
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
	 "Messages held per child: concurrency x multiplier"},
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
	{"broker_heartbeat", "broker-heartbeat", 0, NULL, T_LONG, OFF(broker_heartbeat), "120", 0,
	 65535, false, "AMQP connection heartbeat in seconds (0 = off)"},
	{"broker_connection_timeout", "broker-connection-timeout", 0, NULL, T_SECONDS,
	 OFF(broker_connection_timeout), "4", 0, 0, false,
	 "AMQP: seconds to wait for the TCP/TLS connection and the login"},
	{"task_queue_max_priority", "task-queue-max-priority", 0, NULL, T_LONG,
	 OFF(queue_max_priority), "0", 0, 255, false,
	 "AMQP: declare consumed queues with x-max-priority (0 = no priority queues)"},
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
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

void cw_config_print_help(FILE *out)
{
	fprintf(out,
		"Usage: cworker [worker] [OPTIONS]\n"
		CW_USAGE_EXTRA /* the commands this build adds (cw_build.h) */
		"A native Celery worker: consumes Celery task messages and runs C tasks.\n\n"
		"Options (config-file key and environment variable in brackets):\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
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

static int parse_bool(const char *val, bool *out);

/* Record "NAME: detail" where NAME is how the user spelled the setting. */
static int fail(struct cw_error *err, const char *src, const struct opt *o, const char *detail)
{
	const char *name = src[0] == 'c' ? o->lflag : src[0] == 'e' ? o->env : o->key;
	cw_error_set(err, CW_EINVAL, "%s%s: %s", src[0] == 'c' ? "--" : "", name, detail);
	return CW_EINVAL;
}

/* Apply one textual value to its field; src is "cli", "env" or "file". */
static int apply(struct cw_config *c, const struct opt *o, const char *val, const char *src,
		 struct cw_error *err)
{
	char *field = (char *)c + o->off;
	char *end;

	switch (o->type) {
	case T_STR: {
		char **s = (char **)(void *)field;
		if (o->off == OFF(log_format) && strcmp(val, "text") && strcmp(val, "json"))
			return fail(err, src, o, "not one of text, json");
		char *dup = strdup(val);
		if (!dup) {
			cw_error_set(err, CW_ENOMEM, "out of memory");
			return CW_ENOMEM;
		}
		free(*s);
		*s = dup;
		return CW_OK;
	}
	case T_LONG: {
		errno = 0;
		long v = strtol(val, &end, 10);
		if (errno || end == val || *end)
			return fail(err, src, o, "not an integer");
		if (v < o->min || v > o->max) {
			char msg[96];
			snprintf(msg, sizeof(msg), "%ld is out of range %ld..%ld", v, o->min, o->max);
			return fail(err, src, o, msg);
		}
		*(long *)(void *)field = v;
		return CW_OK;
	}
	case T_SECONDS: {
		errno = 0;
		double v = strtod(val, &end);
		if (errno || end == val || *end || !isfinite(v) || v < 0 || v > 1e9)
			return fail(err, src, o, "not a non-negative number of seconds");
		*(double *)(void *)field = v;
		return CW_OK;
	}
	case T_BOOL:
	case T_FLAG_ACTION:
		if (parse_bool(val, (bool *)(void *)field))
			return fail(err, src, o, "not a boolean (true/false)");
		return CW_OK;
	}
	return CW_EINVAL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

static struct cw_task_conf *add_task_section(struct cw_config *c, const char *name)
{
	for (int i = 0; i < c->ntasks; i++)
		if (!strcmp(c->tasks[i].name, name))
			return &c->tasks[i];
	struct cw_task_conf *t = realloc(c->tasks, (size_t)(c->ntasks + 1) * sizeof(*t));
	if (!t)
		return NULL;
	c->tasks = t;
	t = &c->tasks[c->ntasks];
	*t = (struct cw_task_conf){.name = strdup(name), .acks_late = -1,
				   .reject_on_worker_lost = -1, .time_limit = -1,
				   .soft_time_limit = -1, .track_started = -1};
	if (!t->name)
		return NULL;
	c->ntasks++;
	return t;
}

static int parse_bool(const char *val, bool *out)
{
	if (!strcasecmp(val, "true") || !strcasecmp(val, "yes") || !strcmp(val, "1") ||
	    !strcasecmp(val, "on"))
		*out = true;
	else if (!strcasecmp(val, "false") || !strcasecmp(val, "no") || !strcmp(val, "0") ||
		 !strcasecmp(val, "off"))
		*out = false;
	else
		return CW_EINVAL;
	return CW_OK;
}

/* Keys of a [task:NAME] section: Celery's task attribute names. */
static int apply_task_key(struct cw_task_conf *t, const char *key, const char *val,
			  struct cw_error *err)
{
	bool b;
	char *end;
	if (!strcmp(key, "acks_late") || !strcmp(key, "reject_on_worker_lost") ||
	    !strcmp(key, "track_started")) {
		if (parse_bool(val, &b)) {
			cw_error_set(err, CW_EINVAL, "%s: not a boolean (true/false)", key);
			return CW_EINVAL;
		}
		*(key[0] == 'a' ? &t->acks_late : key[0] == 'r' ? &t->reject_on_worker_lost
								 : &t->track_started) = b;
		return CW_OK;
	}
	if (!strcmp(key, "time_limit") || !strcmp(key, "soft_time_limit")) {
		double v = strtod(val, &end);
		if (end == val || *end || !isfinite(v) || v < 0 || v > 1e9) {
			cw_error_set(err, CW_EINVAL, "%s: not a non-negative number of seconds", key);
			return CW_EINVAL;
		}
		*(key[0] == 't' ? &t->time_limit : &t->soft_time_limit) = v;
		return CW_OK;
	}
	if (!strcmp(key, "task") || !strcmp(key, "args")) {
		if (!t->is_alias) {
			cw_error_set(err, CW_EINVAL, "'%s' belongs in an [alias:NAME] section", key);
			return CW_EINVAL;
		}
		char **dst = key[0] == 't' ? &t->alias_of : &t->alias_args;
		free(*dst);
		*dst = strdup(val);
		return *dst ? CW_OK : CW_ENOMEM;
	}
	if (!strcmp(key, "rate_limit")) {
		if (cw_config_parse_rate(val, &t->rate) != CW_OK) {
			cw_error_set(err, CW_EINVAL,
				     "rate_limit: '%s' is not a rate like 10/s, 100/m or 1000/h", val);
			return CW_EINVAL;
		}
		free(t->rate_limit);
		t->rate_limit = strdup(val);
		return t->rate_limit ? CW_OK : CW_ENOMEM;
	}
	cw_error_set(err, CW_EINVAL, "unknown task setting '%s'", key);
	return CW_EINVAL;
}

int cw_config_parse_rate(const char *s, double *per_second)
{
	char *end;
	double n, div = 1;

	*per_second = 0;
	if (!s || !*s)
		return CW_OK;
	n = strtod(s, &end);
	if (end == s || !isfinite(n) || n < 0)
		return CW_EINVAL;
	if (*end == '/') {
		if (!strcmp(end + 1, "s"))
			div = 1;
		else if (!strcmp(end + 1, "m"))
			div = 60;
		else if (!strcmp(end + 1, "h"))
			div = 3600;
		else
			return CW_EINVAL;
	} else if (*end) {
		return CW_EINVAL;
	}
	*per_second = n / div;
	return CW_OK;
}

const struct cw_task_conf *cw_config_task(const struct cw_config *c, const char *name)
{
	for (int i = 0; i < c->ntasks; i++)
		if (!strcmp(c->tasks[i].name, name))
			return &c->tasks[i];
	return NULL;
}

static struct cw_module_conf *add_module_section(struct cw_config *c, const char *name)
{
	for (int i = 0; i < c->nmodules; i++)
		if (!strcmp(c->modules[i].name, name))
			return &c->modules[i];
	struct cw_module_conf *m = realloc(c->modules, (size_t)(c->nmodules + 1) * sizeof(*m));
	if (!m)
		return NULL;
	c->modules = m;
	m = &c->modules[c->nmodules];
	*m = (struct cw_module_conf){.name = strdup(name)};
	if (!m->name)
		return NULL;
	c->nmodules++;
	return m;
}

/* key = val in a [module:NAME] section; a later line replaces an earlier one. */
static int module_set(struct cw_module_conf *m, const char *key, const char *val)
{
	char *v = strdup(val);
	if (!v)
		return CW_ENOMEM;
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->keys[i], key)) {
			free(m->vals[i]);
			m->vals[i] = v;
			return CW_OK;
		}
	char **k = realloc(m->keys, (size_t)(m->n + 1) * sizeof(*k));
	if (k)
		m->keys = k;
	char **vs = k ? realloc(m->vals, (size_t)(m->n + 1) * sizeof(*vs)) : NULL;
	if (vs)
		m->vals = vs;
	if (!k || !vs || !(m->keys[m->n] = strdup(key))) {
		free(v);
		return CW_ENOMEM;
	}
	m->vals[m->n++] = v;
	return CW_OK;
}

const char *cw_config_module_value(const struct cw_config *c, const char *module, const char *key)
{
	for (int i = 0; i < c->nmodules; i++)
		if (!strcmp(c->modules[i].name, module))
			for (int k = 0; k < c->modules[i].n; k++)
				if (!strcmp(c->modules[i].keys[k], key))
					return c->modules[i].vals[k];
	return NULL;
}

bool cw_config_track_started(const struct cw_config *c, const char *task)
{
	const struct cw_task_conf *t = cw_config_task(c, task);
	return t && t->track_started >= 0 ? t->track_started : c->track_started;
}

/* Where each setting's value came from, for --print-config. */
struct origin {
	const char *kind;     /* "default", "file", "env", "flag" or NULL (unset) */
	int line;             /* file: line number */
};

static int load_file(struct cw_config *c, const char *path, struct origin *orig,
		     struct cw_error *err)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int lineno = 0;

	if (!f) {
		cw_error_set(err, CW_EINVAL, "--config: cannot open '%s': %s", path, strerror(errno));
		return CW_EINVAL;
	}
	struct cw_task_conf *section = NULL;
	struct cw_module_conf *msection = NULL;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char *s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			size_t n = strlen(s);
			bool alias = n >= 9 && !strncmp(s, "[alias:", 7);
			bool module = n >= 10 && !strncmp(s, "[module:", 8);
			if (n < 8 || s[n - 1] != ']' ||
			    (strncmp(s, "[task:", 6) != 0 && !alias && !module)) {
				cw_error_set(err, CW_EINVAL, "%.80s:%d: expected a [task:NAME], "
					     "[alias:NAME] or [module:NAME] section", path, lineno);
				fclose(f);
				return CW_EINVAL;
			}
			s[n - 1] = '\0';
			msection = NULL;
			section = NULL;
			if (module) {
				msection = add_module_section(c, trim(s + 8));
				if (!msection) {
					cw_error_set(err, CW_ENOMEM, "out of memory");
					fclose(f);
					return CW_ENOMEM;
				}
				continue;
			}
			section = add_task_section(c, trim(s + (alias ? 7 : 6)));
			if (!section) {
				cw_error_set(err, CW_ENOMEM, "out of memory");
				fclose(f);
				return CW_ENOMEM;
			}
			if (alias)
				section->is_alias = true;
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq) {
			cw_error_set(err, CW_EINVAL, "%s:%d: expected 'key = value'", path, lineno);
			fclose(f);
			return CW_EINVAL;
		}
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		size_t vn = strlen(val);
		if (vn >= 2 && (val[0] == '"' || val[0] == '\'') && val[vn - 1] == val[0]) {
			val[vn - 1] = '\0';
			val++;
		}
		if (msection) {
			if (module_set(msection, key, val) != CW_OK) {
				cw_error_set(err, CW_ENOMEM, "out of memory");
				fclose(f);
				return CW_ENOMEM;
			}
			continue;
		}
		if (section) {
			int rc = apply_task_key(section, key, val, err);
			if (rc) {
				char msg[sizeof(err->msg)];
				snprintf(msg, sizeof(msg), "%s", err->msg);
				cw_error_set(err, rc, "%.80s:%d: [task:%.60s] %.100s", path, lineno,
					     section->name, msg);
				fclose(f);
				return rc;
			}
			continue;
		}
		const struct opt *o = NULL;
		for (size_t i = 0; i < NOPTS; i++)
			if (opts[i].key && !strcmp(opts[i].key, key))
				o = &opts[i];
		if (!o) {
			cw_error_set(err, CW_EINVAL, "%s:%d: unknown setting '%s'", path, lineno, key);
			fclose(f);
			return CW_EINVAL;
		}
		int rc = apply(c, o, val, "file", err);
		orig[o - opts] = (struct origin){"file", lineno};
		if (rc) {
			char msg[sizeof(err->msg)];
			snprintf(msg, sizeof(msg), "%s", err->msg);
			cw_error_set(err, rc, "%.80s:%d: %.160s", path, lineno, msg);
			if (!strstr(msg, key))
				cw_error_set(err, rc, "%.80s:%d: %.60s: %.100s", path, lineno, key, msg);
			fclose(f);
			return rc;
		}
	}
	fclose(f);
	return CW_OK;
}

char *cw_config_expand_hostname(const char *fmt, const char *fqdn)
{
	const char *dot = strchr(fqdn, '.');
	size_t namelen = dot ? (size_t)(dot - fqdn) : strlen(fqdn);
	const char *domain = dot ? dot + 1 : "";
	size_t cap = strlen(fmt) * (strlen(fqdn) + 1) + 1;
	char *out = malloc(cap), *w = out;

	if (!out)
		return NULL;
	for (const char *p = fmt; *p; p++) {
		if (p[0] == '%' && p[1]) {
			p++;
			switch (*p) {
			case 'h': w += sprintf(w, "%s", fqdn); continue;
			case 'n': w += sprintf(w, "%.*s", (int)namelen, fqdn); continue;
			case 'd': w += sprintf(w, "%s", domain); continue;
			case '%': *w++ = '%'; continue;
			default: *w++ = '%'; break;
			}
		}
		*w++ = *p;
	}
	*w = '\0';
	return out;
}

static int split_queues(struct cw_config *c, struct cw_error *err)
{
	char *copy = strdup(c->queues), *save = NULL;
	int n = 0;

	if (!copy)
		return CW_ENOMEM;
	c->queue_list = calloc(strlen(c->queues) + 2, sizeof(char *));
	if (!c->queue_list) {
		free(copy);
		return CW_ENOMEM;
	}
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		t = trim(t);
		if (!*t)
			continue;
		bool dup = false;
		for (int i = 0; i < n; i++)
			dup |= !strcmp(c->queue_list[i], t);
		if (!dup)
			c->queue_list[n++] = strdup(t);
	}
	free(copy);
	c->nqueues = n;
	if (n == 0) {
		cw_error_set(err, CW_EINVAL, "--queues: no queue names given");
		return CW_EINVAL;
	}
	return CW_OK;
}

/* "NAME: message" for a message a URL check left in *err. */
static int prefixed(struct cw_error *err, const char *name)
{
	char msg[sizeof(err->msg)];
	int code = err->code ? err->code : CW_EINVAL;
	snprintf(msg, sizeof(msg), "%s", err->msg);
	cw_error_set(err, code, "%s: %s", name, msg);
	return code;
}

static int finish(struct cw_config *c, struct cw_error *err)
{
	char host[256];

	if (!strcmp(c->pool, "prefork")) {
		c->pool_kind = CW_POOL_PREFORK;
	} else if (!strcmp(c->pool, "solo")) {
		c->pool_kind = CW_POOL_SOLO;
	} else {
		cw_error_set(err, CW_EINVAL, "--pool: '%s' is not one of prefork, solo", c->pool);
		return CW_EINVAL;
	}
	if (c->autoscale && *c->autoscale) {
		char *end;
		long mx = strtol(c->autoscale, &end, 10), mn = 0;
		if (*end == ',')
			mn = strtol(end + 1, &end, 10);
		if (*end || mx < 1 || mx > 1024 || mn < 0 || mn > mx) {
			cw_error_set(err, CW_EINVAL,
				     "--autoscale: '%s' is not MAX,MIN with 1 <= MAX <= 1024, 0 <= MIN <= MAX",
				     c->autoscale);
			return CW_EINVAL;
		}
		c->autoscale_max = (int)mx;
		c->autoscale_min = (int)mn;
	}
	if (c->heartbeat_interval <= 0)
		c->heartbeat_interval = 2;
	for (int i = 0; i < c->ntasks; i++)
		if (c->tasks[i].is_alias && (!c->tasks[i].alias_of || !*c->tasks[i].alias_of)) {
			cw_error_set(err, CW_EINVAL, "[alias:%.100s] needs 'task = NAME'",
				     c->tasks[i].name);
			return CW_EINVAL;
		}
	if (c->http_listen && *c->http_listen) {
		const char *colon = strrchr(c->http_listen, ':');
		char *end = NULL;
		long port = colon ? strtol(colon + 1, &end, 10) : -1;
		if (!colon || !colon[1] || *end || port < 0 || port > 65535) {
			cw_error_set(err, CW_EINVAL, "--http: '%.100s' is not HOST:PORT", c->http_listen);
			return CW_EINVAL;
		}
	}
	c->log_level = cw_log_parse_level(c->loglevel);
	if (c->log_level < 0) {
		cw_error_set(err, CW_EINVAL, "--loglevel: '%s' is not one of debug, info, warning, error, critical",
			     c->loglevel);
		return CW_EINVAL;
	}
	if (cw_broker_check_url(c->broker_url, err) != CW_OK)
		return prefixed(err, "--broker");
	if (strcmp(c->broker_ssl_reqs, "CERT_REQUIRED") && strcmp(c->broker_ssl_reqs, "CERT_NONE") &&
	    strcmp(c->broker_ssl_reqs, "CERT_OPTIONAL")) {
		cw_error_set(err, CW_EINVAL, "broker_use_ssl.cert_reqs: '%s' is not CERT_REQUIRED, "
			     "CERT_OPTIONAL or CERT_NONE", c->broker_ssl_reqs);
		return CW_EINVAL;
	}
	if (cw_backend_check_url(c->result_backend, c->broker_url, err) != CW_OK)
		return prefixed(err, "--result-backend");
	if (c->concurrency == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		c->concurrency = n > 0 ? n : 1;
	}
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	char *h = cw_config_expand_hostname(c->hostname, host);
	if (!h)
		return CW_ENOMEM;
	free(c->hostname);
	c->hostname = h;
	return split_queues(c, err);
}

int cw_config_value_text(const struct cw_config *c, const char *key, char *buf, size_t bufsz)
{
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		if (!o->key || strcmp(o->key, key) || o->type == T_FLAG_ACTION)
			continue;
		const char *field = (const char *)c + o->off;
		switch (o->type) {
		case T_STR: {
			const char *v = *(char *const *)(const void *)field;
			if (!v)
				return CW_ENOTFOUND;
			snprintf(buf, bufsz, "%s", v);
			break;
		}
		case T_LONG:
			snprintf(buf, bufsz, "%ld", *(const long *)(const void *)field);
			break;
		case T_SECONDS:
			snprintf(buf, bufsz, "%g", *(const double *)(const void *)field);
			break;
		default:
			snprintf(buf, bufsz, "%s", *(const bool *)(const void *)field ? "true" : "false");
			break;
		}
		return CW_OK;
	}
	return CW_ENOTFOUND;
}

/* --print-config: every setting, its effective value (secrets masked) and its origin. */
static void print_config(const struct cw_config *c, const struct origin *orig, FILE *out)
{
	fprintf(out, "# cworker %s: effective configuration (value, then where it came from)\n",
		CW_VERSION);
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		const char *field = (const char *)c + o->off;
		char val[600], name[80], from[4200];
		if (o->type == T_FLAG_ACTION)
			continue;
		switch (o->type) {
		case T_STR: {
			const char *v = *(char *const *)(const void *)field;
			if (!v)
				snprintf(val, sizeof(val), "(unset)");
			else if (o->secret)
				cw_url_redact(v, val, sizeof(val));
			else
				snprintf(val, sizeof(val), "%s", v);
			break;
		}
		case T_LONG:
			snprintf(val, sizeof(val), "%ld", *(const long *)(const void *)field);
			break;
		case T_SECONDS:
			snprintf(val, sizeof(val), "%g", *(const double *)(const void *)field);
			break;
		default:
			snprintf(val, sizeof(val), "%s", *(const bool *)(const void *)field ? "true" : "false");
			break;
		}
		snprintf(name, sizeof(name), "%s%s", o->key ? "" : "--", o->key ? o->key : o->lflag);
		const struct origin *g = &orig[i];
		if (!g->kind)
			snprintf(from, sizeof(from), "default (none)");
		else if (!strcmp(g->kind, "file"))
			snprintf(from, sizeof(from), "file %s:%d", c->config_file ? c->config_file : "?",
				 g->line);
		else if (!strcmp(g->kind, "env"))
			snprintf(from, sizeof(from), "env %s", o->env);
		else if (!strcmp(g->kind, "flag"))
			snprintf(from, sizeof(from), "flag --%s", o->lflag);
		else
			snprintf(from, sizeof(from), "default");
		if (o->off == OFF(concurrency) && (!g->kind || !strcmp(g->kind, "default")))
			snprintf(from, sizeof(from), "default (number of CPUs)");
		fprintf(out, "%-44s = %-40s # %s\n", name, val, from);
	}
	for (int i = 0; i < c->ntasks; i++) {
		const struct cw_task_conf *t = &c->tasks[i];
		fprintf(out, "[%s:%s]  # file %s\n", t->is_alias ? "alias" : "task", t->name,
			c->config_file ? c->config_file : "?");
		if (t->is_alias)
			fprintf(out, "  task = %s\n  args = %s\n", t->alias_of ? t->alias_of : "",
				t->alias_args ? t->alias_args : "");
		if (t->acks_late >= 0)
			fprintf(out, "  acks_late = %s\n", t->acks_late ? "true" : "false");
		if (t->reject_on_worker_lost >= 0)
			fprintf(out, "  reject_on_worker_lost = %s\n",
				t->reject_on_worker_lost ? "true" : "false");
		if (t->time_limit >= 0)
			fprintf(out, "  time_limit = %g\n", t->time_limit);
		if (t->soft_time_limit >= 0)
			fprintf(out, "  soft_time_limit = %g\n", t->soft_time_limit);
		if (t->rate_limit)
			fprintf(out, "  rate_limit = %s\n", t->rate_limit);
		if (t->track_started >= 0)
			fprintf(out, "  track_started = %s\n", t->track_started ? "true" : "false");
	}
	for (int i = 0; i < c->nmodules; i++) {
		fprintf(out, "[module:%s]  # file %s\n", c->modules[i].name,
			c->config_file ? c->config_file : "?");
		for (int k = 0; k < c->modules[i].n; k++)
			fprintf(out, "  %s = %s\n", c->modules[i].keys[k], c->modules[i].vals[k]);
	}
}

int cw_config_load(struct cw_config *c, int argc, char **argv, struct cw_error *err)
{
	struct option lopts[NOPTS + 3];
	char sopts[2 * NOPTS + 4], *sp = sopts;
	const char **cli = calloc(NOPTS, sizeof(char *));
	struct origin *orig = calloc(NOPTS, sizeof(*orig));
	char *modules_arg = NULL;    /* --task-module given more than once, joined */
	int rc = CW_OK;

	memset(c, 0, sizeof(*c));
	err->msg[0] = '\0';
	if (!cli || !orig) {
		free(cli);
		free(orig);
		return CW_ENOMEM;
	}
	*sp++ = ':';  /* report missing arguments as ':' */
	for (size_t i = 0; i < NOPTS; i++) {
		bool noarg = opts[i].type == T_BOOL || opts[i].type == T_FLAG_ACTION;
		lopts[i] = (struct option){opts[i].lflag, noarg ? no_argument : required_argument, NULL,
					   (int)(256 + i)};
		if (opts[i].sflag) {
			*sp++ = opts[i].sflag;
			if (!noarg)
				*sp++ = ':';
		}
	}
	lopts[NOPTS] = (struct option){"version", no_argument, NULL, 'V'};
	lopts[NOPTS + 1] = (struct option){"help", no_argument, NULL, 'h'};
	lopts[NOPTS + 2] = (struct option){NULL, 0, NULL, 0};
	*sp++ = 'h';
	*sp = '\0';

	optind = 1;
	opterr = 0;
	for (;;) {
		int li = -1;
		int ch = getopt_long(argc, argv, sopts, lopts, &li);
		if (ch == -1)
			break;
		if (ch == 'h') {
			cw_config_print_help(stdout);
			rc = CW_CONFIG_EXIT_OK;
			goto out;
		}
		if (ch == 'V') {
			printf("cworker %s\n", CW_VERSION);
			rc = CW_CONFIG_EXIT_OK;
			goto out;
		}
		if (ch == '?' || ch == ':') {
			const char *bad = argv[optind - 1];
			if (optopt && optopt < 256)
				cw_error_set(err, CW_EINVAL, "%s option -%c", ch == ':' ? "missing value for" : "unknown", optopt);
			else
				cw_error_set(err, CW_EINVAL, "%s option '%s'", ch == ':' ? "missing value for" : "unknown", bad);
			rc = CW_EINVAL;
			goto out;
		}
		size_t idx = NOPTS;
		if (ch >= 256)
			idx = (size_t)(ch - 256);
		else
			for (size_t i = 0; i < NOPTS; i++)
				if (opts[i].sflag == ch)
					idx = i;
		if (idx >= NOPTS) {
			cw_error_set(err, CW_EINVAL, "unknown option");
			rc = CW_EINVAL;
			goto out;
		}
		bool noarg = opts[idx].type == T_BOOL || opts[idx].type == T_FLAG_ACTION;
		if (opts[idx].off == OFF(task_modules) && cli[idx]) {
			/* repeatable: the paths accumulate as the config file's list */
			char *joined = NULL;
			if (asprintf(&joined, "%s,%s", cli[idx], optarg) < 0) {
				cw_error_set(err, CW_ENOMEM, "out of memory");
				rc = CW_ENOMEM;
				goto out;
			}
			free(modules_arg);
			cli[idx] = modules_arg = joined;
			continue;
		}
		cli[idx] = noarg ? "true" : optarg;
	}
	for (int i = optind; i < argc; i++) {
		if (i == optind && !strcmp(argv[i], "worker"))
			continue;
		cw_error_set(err, CW_EINVAL, "unexpected argument '%s'", argv[i]);
		rc = CW_EINVAL;
		goto out;
	}

	/* Layer 1: defaults. */
	for (size_t i = 0; i < NOPTS; i++) {
		if (opts[i].def && (rc = apply(c, &opts[i], opts[i].def, "default", err)))
			goto out;
		orig[i].kind = opts[i].def ? "default" : NULL;
	}
	/* Layer 2: config file (path from CLI only). */
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].off == OFF(config_file) && cli[i] && (rc = load_file(c, cli[i], orig, err)))
			goto out;
	/* Layer 3: environment. */
	for (size_t i = 0; i < NOPTS; i++) {
		const char *v = opts[i].env ? getenv(opts[i].env) : NULL;
		if (v && *v && (rc = apply(c, &opts[i], v, "env", err)))
			goto out;
		if (v && *v)
			orig[i] = (struct origin){"env", 0};
	}
	/* Layer 4: command line. */
	for (size_t i = 0; i < NOPTS; i++) {
		if (cli[i] && (rc = apply(c, &opts[i], cli[i], "cli", err)))
			goto out;
		if (cli[i])
			orig[i] = (struct origin){"flag", 0};
	}
	rc = finish(c, err);
	if (rc == CW_OK && c->print_config) {
		print_config(c, orig, stdout);
		rc = CW_CONFIG_EXIT_OK;
	} else if (rc == CW_OK) {
		rc = CW_CONFIG_RUN;
	}
out:
	free(modules_arg);
	free(cli);
	free(orig);
	return rc;
}

void cw_config_free(struct cw_config *c)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].type == T_STR) {
			char **s = (char **)(void *)((char *)c + opts[i].off);
			free(*s);
			*s = NULL;
		}
	if (c->queue_list)
		for (int i = 0; i < c->nqueues; i++)
			free(c->queue_list[i]);
	free(c->queue_list);
	c->queue_list = NULL;
	for (int i = 0; i < c->ntasks; i++) {
		free(c->tasks[i].name);
		free(c->tasks[i].rate_limit);
		free(c->tasks[i].alias_of);
		free(c->tasks[i].alias_args);
	}
	free(c->tasks);
	c->tasks = NULL;
	c->ntasks = 0;
	for (int i = 0; i < c->nmodules; i++) {
		for (int k = 0; k < c->modules[i].n; k++) {
			free(c->modules[i].keys[k]);
			free(c->modules[i].vals[k]);
		}
		free(c->modules[i].keys);
		free(c->modules[i].vals);
		free(c->modules[i].name);
	}
	free(c->modules);
	c->modules = NULL;
	c->nmodules = 0;
}
