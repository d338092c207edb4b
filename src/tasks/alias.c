/*
 * Task-name aliases from [alias:NAME] config sections: existing Python task
 * names (and their positional argument order) mapped onto cworker tasks, so
 * producers change nothing.  `args` lists what each positional argument of
 * the old signature becomes:
 *   NAME  passed on as the keyword argument NAME
 *   -     dropped (an id the old task used for bookkeeping, say)
 *   **    a mapping whose items become keyword arguments
 * Keyword arguments of the call pass through unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "tasks/alias.h"
#include "tasks/exec.h"

struct alias {
	struct cw_task_def def;     /* registered under the alias name */
	const struct cw_task_def *target;
	char *spec;                 /* the tokens point into it */
	char **tokens;
	int ntokens;
};

static struct alias *aliases;
static int naliases;

static const struct alias *find(const char *name)
{
	for (int i = 0; i < naliases; i++)
		if (!strcmp(aliases[i].def.name, name))
			return &aliases[i];
	return NULL;
}

static enum cw_task_status run_alias(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				     json_t **result)
{
	const struct alias *a = find(cw_task_name(ctx));
	if (!a)
		return cw_task_fail(ctx, "NotRegistered", "celery.exceptions", "%s",
				    cw_task_name(ctx));
	if (json_array_size(args) > (size_t)a->ntokens)
		return cw_task_fail(ctx, "TypeError", NULL,
				    "%s() takes %d positional arguments but %zu were given",
				    a->def.name, a->ntokens, json_array_size(args));
	json_t *kw = json_is_object(kwargs) ? json_copy(kwargs) : json_object();
	json_t *none = json_array();
	size_t i;
	json_t *v;
	if (!kw || !none) {
		json_decref(kw);
		json_decref(none);
		return cw_task_fail(ctx, "MemoryError", NULL, "alias %s", a->def.name);
	}
	json_array_foreach(args, i, v) {
		const char *t = a->tokens[i];
		if (!strcmp(t, "-"))
			continue;
		if (!strcmp(t, "**")) {
			if (!json_is_object(v) && !json_is_null(v)) {
				json_decref(kw);
				json_decref(none);
				return cw_task_fail(ctx, "TypeError", NULL,
						    "%s(): argument %zu must be a mapping", a->def.name,
						    i + 1);
			}
			json_object_update_missing(kw, v);
			continue;
		}
		if (json_object_get(kw, t)) {
			json_decref(kw);
			json_decref(none);
			return cw_task_fail(ctx, "TypeError", NULL,
					    "%s() got multiple values for argument '%s'", a->def.name, t);
		}
		json_object_set(kw, t, v);
	}
	enum cw_task_status st = cw_exec_call(ctx, a->target, none, kw, result);
	json_decref(kw);
	json_decref(none);
	return st;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

int cw_aliases_register(struct cw_registry *r, const struct cw_config *cfg, struct cw_error *err)
{
	for (int i = 0; i < cfg->ntasks; i++) {
		const struct cw_task_conf *t = &cfg->tasks[i];
		if (!t->is_alias)
			continue;
		const struct cw_task_def *target = cw_registry_find(r, t->alias_of);
		if (!target) {
			cw_error_set(err, CW_EINVAL, "[alias:%.80s]: task '%.80s' is not registered",
				     t->name, t->alias_of);
			return CW_EINVAL;
		}
		struct alias *arr = realloc(aliases, (size_t)(naliases + 1) * sizeof(*arr));
		if (!arr)
			return CW_ENOMEM;
		aliases = arr;
		struct alias *a = &aliases[naliases++];  /* counted now, so cw_aliases_free sees it */
		memset(a, 0, sizeof(*a));
		char *spec = strdup(t->alias_args ? t->alias_args : "");
		if (!spec)
			return CW_ENOMEM;
		a->spec = spec;
		for (char *save = NULL, *tok = strtok_r(spec, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			char **toks = realloc(a->tokens, (size_t)(a->ntokens + 1) * sizeof(char *));
			if (!toks)
				return CW_ENOMEM;
			a->tokens = toks;
			a->tokens[a->ntokens++] = trim(tok);
		}
		char *doc = NULL;
		if (asprintf(&doc, "alias of %s (positional arguments: %s)", t->alias_of,
			     t->alias_args ? t->alias_args : "none") < 0)
			doc = NULL;
		a->def = (struct cw_task_def){CW_ABI_VERSION, t->name, run_alias, doc, false, NULL};
		a->target = target;
	}
	/* register after the array stopped moving: the registry keeps pointers */
	for (int i = 0; i < naliases; i++)
		if (cw_registry_add_from(r, &aliases[i].def, "alias") != CW_OK) {
			cw_error_set(err, CW_EINVAL, "alias %.100s: name already taken",
				     aliases[i].def.name);
			return CW_EINVAL;
		}
	return CW_OK;
}

void cw_aliases_free(void)
{
	for (int i = 0; i < naliases; i++) {
		free(aliases[i].spec);
		free(aliases[i].tokens);
		free((char *)aliases[i].def.doc);
	}
	free(aliases);
	aliases = NULL;
	naliases = 0;
}
