/*
 * The config file: settings, and the [task:NAME], [alias:NAME], [module:NAME] and [queue:NAME]
 * sections.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_int.h"

char *cw_config_trim(char *s)
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

int cw_config_parse_bool(const char *val, bool *out)
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
		if (cw_config_parse_bool(val, &b)) {
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

/*
 * A [queue:NAME] section: how the worker declares queue NAME on AMQP (Celery's task_queues
 * entry).  `passive = true`, or x- arguments passed through to queue.declare (typed by the
 * transport).  Checked here so a typo fails at start-up with its line number.
 */
static int check_queue_key(const char *key, const char *val, struct cw_error *err)
{
	bool b;
	if (!strcmp(key, "passive")) {
		if (cw_config_parse_bool(val, &b)) {
			cw_error_set(err, CW_EINVAL, "passive: not a boolean (true/false)");
			return CW_EINVAL;
		}
		return CW_OK;
	}
	if (strncmp(key, "x-", 2) != 0 || !key[2]) {
		cw_error_set(err, CW_EINVAL, "unknown queue setting '%s' (passive, or a queue "
			     "argument such as x-queue-type, x-message-ttl, x-dead-letter-exchange)",
			     key);
		return CW_EINVAL;
	}
	if (!strcmp(key, "x-queue-type") && strcmp(val, "classic") && strcmp(val, "quorum")) {
		cw_error_set(err, CW_EINVAL, "x-queue-type: '%s' is not classic or quorum%s", val,
			     !strcmp(val, "stream") ? " (streams are not task queues: a stream "
			     "keeps every message and has no acknowledgements to redeliver)" : "");
		return CW_EINVAL;
	}
	return CW_OK;
}

static struct cw_module_conf *add_queue_section(struct cw_config *c, const char *name)
{
	for (int i = 0; i < c->nqueue_confs; i++)
		if (!strcmp(c->queue_confs[i].name, name))
			return &c->queue_confs[i];
	struct cw_module_conf *q = realloc(c->queue_confs,
					   (size_t)(c->nqueue_confs + 1) * sizeof(*q));
	if (!q)
		return NULL;
	c->queue_confs = q;
	q = &c->queue_confs[c->nqueue_confs];
	*q = (struct cw_module_conf){.name = strdup(name)};
	if (!q->name)
		return NULL;
	c->nqueue_confs++;
	return q;
}

int cw_config_load_file(struct cw_config *c, const char *path, struct origin *orig,
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
	bool qsection = false;      /* msection is a [queue:NAME] section */
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char *s = cw_config_trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			size_t n = strlen(s);
			bool alias = n >= 9 && !strncmp(s, "[alias:", 7);
			bool module = n >= 10 && !strncmp(s, "[module:", 8);
			bool queue = n >= 9 && !strncmp(s, "[queue:", 7);
			if (n < 8 || s[n - 1] != ']' ||
			    (strncmp(s, "[task:", 6) != 0 && !alias && !module && !queue)) {
				cw_error_set(err, CW_EINVAL, "%.80s:%d: expected a [task:NAME], "
					     "[alias:NAME], [module:NAME] or [queue:NAME] section",
					     path, lineno);
				fclose(f);
				return CW_EINVAL;
			}
			s[n - 1] = '\0';
			msection = NULL;
			section = NULL;
			qsection = queue;
			if (module || queue) {
				char *name = cw_config_trim(s + (queue ? 7 : 8));
				msection = queue ? add_queue_section(c, name) : add_module_section(c, name);
				if (!msection) {
					cw_error_set(err, CW_ENOMEM, "out of memory");
					fclose(f);
					return CW_ENOMEM;
				}
				continue;
			}
			section = add_task_section(c, cw_config_trim(s + (alias ? 7 : 6)));
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
		char *key = cw_config_trim(s), *val = cw_config_trim(eq + 1);
		size_t vn = strlen(val);
		if (vn >= 2 && (val[0] == '"' || val[0] == '\'') && val[vn - 1] == val[0]) {
			val[vn - 1] = '\0';
			val++;
		}
		if (qsection && check_queue_key(key, val, err) != CW_OK) {
			char msg[sizeof(err->msg)];
			snprintf(msg, sizeof(msg), "%s", err->msg);
			cw_error_set(err, CW_EINVAL, "%.80s:%d: [queue:%.60s] %.120s", path, lineno,
				     msection->name, msg);
			fclose(f);
			return CW_EINVAL;
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
		for (size_t i = 0; i < cw_config_nopts; i++)
			if (cw_config_opts[i].key && !strcmp(cw_config_opts[i].key, key))
				o = &cw_config_opts[i];
		if (!o) {
			cw_error_set(err, CW_EINVAL, "%s:%d: unknown setting '%s'", path, lineno, key);
			fclose(f);
			return CW_EINVAL;
		}
		int rc = cw_config_apply(c, o, val, "file", err);
		orig[o - cw_config_opts] = (struct origin){"file", lineno};
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

