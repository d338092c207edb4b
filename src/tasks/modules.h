/*
 * Task modules (include/cworker/module.h): the built-in ones (the cworker.*
 * tasks, docconv when this build has it) and shared objects named by
 * --task-module / worker_task_modules or found in worker_task_modules_dir.
 * Loaded, checked and configured in the master before the children fork;
 * init/exit hooks run in every process that runs tasks.
 */
#ifndef CW_TASKS_MODULES_H
#define CW_TASKS_MODULES_H

#include <stdbool.h>

#include "config/config.h"
#include "tasks/registry.h"
#include "util/err.h"

struct cw_module;

/*
 * Load every module and register its tasks into r; with configure, run the
 * modules' configure hooks.  Any refusal (not a shared object, no
 * cworker_module symbol, another ABI version, a bad descriptor, a task name
 * already taken, a failed configure) is CW_EINVAL with the reason in *err.
 */
int cw_modules_load(struct cw_registry *r, const struct cw_config *cfg, bool configure,
		    struct cw_error *err);
/* Run every module's init hook (a pool child before its first task); CW_OK or CW_EIO. */
int cw_modules_init(void);
/* Run every module's exit hook (a process that ran tasks is ending). */
void cw_modules_exit(void);
/* Forget the modules (dlclose) after the registry is gone. */
void cw_modules_unload(void);
/* Number of modules loaded, and module i's name and version (for --list-tasks). */
int cw_modules_count(void);
const struct cw_module *cw_modules_at(int i);

#endif
