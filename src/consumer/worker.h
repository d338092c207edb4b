/*
 * The master: connects the broker, the pool and the result backend.
 * Holds at most concurrency x prefetch_multiplier messages (reserved plus
 * running), acks early (right before a task starts), records the states
 * Celery's consumer records for messages it cannot run, and shuts down
 * warm (finish running tasks, give back reserved ones) or cold.
 */
#ifndef CW_WORKER_H
#define CW_WORKER_H

#include "config/config.h"

/* Run the worker until shutdown; returns the process exit status. */
int cw_worker_run(const struct cw_config *cfg);

#endif
