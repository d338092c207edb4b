/*
 * The tasks a worker runs: the built-in cworker.* tasks, the docconv.*
 * tasks when this build has them, and the [alias:NAME] wrappers from the
 * configuration.  This is the one place that knows which task families a
 * build contains; the consumer only sees the registry.
 */
#ifndef CW_TASKS_SETUP_H
#define CW_TASKS_SETUP_H

#include <stdbool.h>

#include "config/config.h"
#include "tasks/registry.h"
#include "util/err.h"

struct cw_metrics;

/*
 * Register every task into r; with configure, also give the task families
 * their settings (before the children fork).  CW_OK, or an error in *err.
 */
int cw_tasks_setup(struct cw_registry *r, const struct cw_config *cfg, bool configure,
		   struct cw_error *err);
/* The counters this build's tasks report, with their HELP texts, so /metrics shows them at 0. */
void cw_tasks_declare_counters(struct cw_metrics *m);
/* Release what cw_tasks_setup() built (aliases, engines). */
void cw_tasks_teardown(void);

#endif
