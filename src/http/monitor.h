/*
 * --http: health probes and Prometheus metrics served from the master's
 * loop.  The routes read the worker through consumer/worker.h only.
 */
#ifndef CW_MONITOR_H
#define CW_MONITOR_H

#include "util/err.h"

struct cw_worker;
struct cw_monitor;

/* With cfg->http_listen: listen and start the backend probe (*out stays NULL without it). */
int cw_monitor_start(struct cw_worker *w, struct cw_monitor **out, struct cw_error *err);
/* The broker is open: start sampling queue depths. */
void cw_monitor_started(struct cw_monitor *m);
void cw_monitor_free(struct cw_monitor *m);

#endif
