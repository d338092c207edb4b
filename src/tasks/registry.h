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
/* Adds def (borrowed, must outlive the registry); CW_EINVAL on duplicate or bad ABI. */
int cw_registry_add(struct cw_registry *r, const struct cw_task_def *def);
const struct cw_task_def *cw_registry_find(const struct cw_registry *r, const char *name);
size_t cw_registry_count(const struct cw_registry *r);
const struct cw_task_def *cw_registry_at(const struct cw_registry *r, size_t i);
/* The built-in cworker.* tasks; diagnostic ones only when asked. */
int cw_tasks_register_builtin(struct cw_registry *r, bool diagnostic);

#endif
