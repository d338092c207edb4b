#include "tasks/registry.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct cw_registry {
	const struct cw_task_def **defs;
	const char **modules;      /* the module each task came from (borrowed) */
	size_t n, cap;
};

struct cw_registry *cw_registry_new(void)
{
	return calloc(1, sizeof(struct cw_registry));
}

void cw_registry_free(struct cw_registry *r)
{
	if (!r)
		return;
	free(r->defs);
	free(r->modules);
	free(r);
}

int cw_registry_add(struct cw_registry *r, const struct cw_task_def *def)
{
	return cw_registry_add_from(r, def, "cworker");
}

int cw_registry_add_from(struct cw_registry *r, const struct cw_task_def *def, const char *module)
{
	if (def->abi_version != CW_ABI_VERSION || !def->name || !*def->name || !def->fn)
		return CW_EINVAL;
	if (cw_registry_find(r, def->name))
		return CW_EEXIST;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		const struct cw_task_def **d = realloc(r->defs, cap * sizeof(*d));
		if (!d)
			return CW_ENOMEM;
		r->defs = d;
		const char **m = realloc(r->modules, cap * sizeof(*m));
		if (!m)
			return CW_ENOMEM;
		r->modules = m;
		r->cap = cap;
	}
	r->modules[r->n] = module;
	r->defs[r->n++] = def;
	return CW_OK;
}

const char *cw_registry_module(const struct cw_registry *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->defs[i]->name, name))
			return r->modules[i];
	return NULL;
}

const struct cw_task_def *cw_registry_find(const struct cw_registry *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->defs[i]->name, name))
			return r->defs[i];
	return NULL;
}

size_t cw_registry_count(const struct cw_registry *r)
{
	return r->n;
}

const struct cw_task_def *cw_registry_at(const struct cw_registry *r, size_t i)
{
	return i < r->n ? r->defs[i] : NULL;
}
