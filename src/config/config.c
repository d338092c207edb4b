/*
 * Building the configuration: defaults, then the config file, the environment and
 * the command line (later layers win), then the checks and derived values;
 * --print-config and lookups by key.  The option table is in options.c.
 */
#include "config/config.h"
#include "config/config_int.h"

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

/* Record "NAME: detail" where NAME is how the user spelled the setting. */
static int fail(struct cw_error *err, const char *src, const struct opt *o, const char *detail)
{
	const char *name = src[0] == 'c' ? o->lflag : src[0] == 'e' ? o->env : o->key;
	cw_error_set(err, CW_EINVAL, "%s%s: %s", src[0] == 'c' ? "--" : "", name, detail);
	return CW_EINVAL;
}

/* Apply one textual value to its field; src is "cli", "env" or "file". */
int cw_config_apply(struct cw_config *c, const struct opt *o, const char *val, const char *src,
		    struct cw_error *err)
{
	char *field = (char *)c + o->off;
	char *end;

	switch (o->type) {
	case T_STR: {
		char **s = (char **)(void *)field;
		if (o->off == OFF(log_format) && strcmp(val, "text") && strcmp(val, "json"))
			return fail(err, src, o, "not one of text, json");
		if (o->off == OFF(queue_type) && strcmp(val, "classic") && strcmp(val, "quorum"))
			return fail(err, src, o, strcmp(val, "stream") ? "not one of classic, quorum" :
				    "streams are not task queues (no acknowledgements to redeliver): "
				    "not one of classic, quorum");
		if (o->off == OFF(failover_strategy) && strcmp(val, "round-robin") &&
		    strcmp(val, "shuffle"))
			return fail(err, src, o, "not one of round-robin, shuffle");
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
		if (cw_config_parse_bool(val, (bool *)(void *)field))
			return fail(err, src, o, "not a boolean (true/false)");
		return CW_OK;
	}
	return CW_EINVAL;
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
		t = cw_config_trim(t);
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
	for (size_t i = 0; i < cw_config_nopts; i++) {
		const struct opt *o = &cw_config_opts[i];
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
	for (size_t i = 0; i < cw_config_nopts; i++) {
		const struct opt *o = &cw_config_opts[i];
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
	for (int i = 0; i < c->nqueue_confs; i++) {
		fprintf(out, "[queue:%s]  # file %s\n", c->queue_confs[i].name,
			c->config_file ? c->config_file : "?");
		for (int k = 0; k < c->queue_confs[i].n; k++)
			fprintf(out, "  %s = %s\n", c->queue_confs[i].keys[k],
				c->queue_confs[i].vals[k]);
	}
}

int cw_config_load(struct cw_config *c, int argc, char **argv, struct cw_error *err)
{
	struct option lopts[CW_CONFIG_MAX_OPTS + 3];
	char sopts[2 * CW_CONFIG_MAX_OPTS + 4], *sp = sopts;
	const char **cli = calloc(cw_config_nopts, sizeof(char *));
	struct origin *orig = calloc(cw_config_nopts, sizeof(*orig));
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
	for (size_t i = 0; i < cw_config_nopts; i++) {
		bool noarg = cw_config_opts[i].type == T_BOOL || cw_config_opts[i].type == T_FLAG_ACTION;
		lopts[i] = (struct option){cw_config_opts[i].lflag, noarg ? no_argument : required_argument, NULL,
					   (int)(256 + i)};
		if (cw_config_opts[i].sflag) {
			*sp++ = cw_config_opts[i].sflag;
			if (!noarg)
				*sp++ = ':';
		}
	}
	lopts[cw_config_nopts] = (struct option){"version", no_argument, NULL, 'V'};
	lopts[cw_config_nopts + 1] = (struct option){"help", no_argument, NULL, 'h'};
	lopts[cw_config_nopts + 2] = (struct option){NULL, 0, NULL, 0};
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
		size_t idx = cw_config_nopts;
		if (ch >= 256)
			idx = (size_t)(ch - 256);
		else
			for (size_t i = 0; i < cw_config_nopts; i++)
				if (cw_config_opts[i].sflag == ch)
					idx = i;
		if (idx >= cw_config_nopts) {
			cw_error_set(err, CW_EINVAL, "unknown option");
			rc = CW_EINVAL;
			goto out;
		}
		bool noarg = cw_config_opts[idx].type == T_BOOL || cw_config_opts[idx].type == T_FLAG_ACTION;
		if (cw_config_opts[idx].off == OFF(task_modules) && cli[idx]) {
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
	for (size_t i = 0; i < cw_config_nopts; i++) {
		if (cw_config_opts[i].def && (rc = cw_config_apply(c, &cw_config_opts[i], cw_config_opts[i].def, "default", err)))
			goto out;
		orig[i].kind = cw_config_opts[i].def ? "default" : NULL;
	}
	/* Layer 2: config file (path from CLI only). */
	for (size_t i = 0; i < cw_config_nopts; i++)
		if (cw_config_opts[i].off == OFF(config_file) && cli[i] && (rc = cw_config_load_file(c, cli[i], orig, err)))
			goto out;
	/* Layer 3: environment. */
	for (size_t i = 0; i < cw_config_nopts; i++) {
		const char *v = cw_config_opts[i].env ? getenv(cw_config_opts[i].env) : NULL;
		if (v && *v && (rc = cw_config_apply(c, &cw_config_opts[i], v, "env", err)))
			goto out;
		if (v && *v)
			orig[i] = (struct origin){"env", 0};
	}
	/* Layer 4: command line. */
	for (size_t i = 0; i < cw_config_nopts; i++) {
		if (cli[i] && (rc = cw_config_apply(c, &cw_config_opts[i], cli[i], "cli", err)))
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
	for (size_t i = 0; i < cw_config_nopts; i++)
		if (cw_config_opts[i].type == T_STR) {
			char **s = (char **)(void *)((char *)c + cw_config_opts[i].off);
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
	for (int i = 0; i < c->nqueue_confs; i++) {
		for (int k = 0; k < c->queue_confs[i].n; k++) {
			free(c->queue_confs[i].keys[k]);
			free(c->queue_confs[i].vals[k]);
		}
		free(c->queue_confs[i].keys);
		free(c->queue_confs[i].vals);
		free(c->queue_confs[i].name);
	}
	free(c->queue_confs);
	c->queue_confs = NULL;
	c->nqueue_confs = 0;
}
