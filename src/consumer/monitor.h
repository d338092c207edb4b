/* --http: health probes and Prometheus metrics served from the master's loop. */
#ifndef CW_MONITOR_H
#define CW_MONITOR_H

#include "util/err.h"

struct worker;

/* With cfg->http_listen: create w->metrics, listen, start the backend probe. */
int cw_monitor_start(struct worker *w, struct cw_error *err);
/* The broker is open: start sampling queue depths. */
void cw_monitor_started(struct worker *w);
/* Stop serving; frees w->metrics. */
void cw_monitor_free(struct worker *w);

#endif
