/* Task registry: Celery task name -> C function.  Built before children fork. */
#ifndef CW_REGISTRY_H
#define CW_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "cworker/task.h"
#include "util/err.h"

struct cw_registry;

struct cw_registry *cw_registry_new(void);
void cw_registry_free(struct cw_registry *r);
/*
 * Adds def (borrowed, must outlive the registry) as a task of module (borrowed);
 * CW_EEXIST when the name is taken, CW_EINVAL for another ABI or an empty def.
 * cw_registry_add: module "cworker".
 */
int cw_registry_add_from(struct cw_registry *r, const struct cw_task_def *def, const char *module);
int cw_registry_add(struct cw_registry *r, const struct cw_task_def *def);
/* The module a registered task came from, or NULL. */
const char *cw_registry_module(const struct cw_registry *r, const char *name);
const struct cw_task_def *cw_registry_find(const struct cw_registry *r, const char *name);
size_t cw_registry_count(const struct cw_registry *r);
const struct cw_task_def *cw_registry_at(const struct cw_registry *r, size_t i);

#endif
