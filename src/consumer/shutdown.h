/*
 * Signals and the shutdown state machine of the master, as Celery 5.5's.
 *
 *   RUNNING --SIGTERM, 1st SIGINT, `shutdown` command--> WARM
 *   RUNNING/WARM --SIGQUIT, 2nd SIGINT--> soft stage (a WARM with a deadline) --> COLD
 *
 * WARM: stop fetching, give reserved messages back, let running tasks
 * finish, then give the broker up to 10 s to take pending acks/restores.
 * Soft stage (worker_soft_shutdown_timeout > 0): a cold request first waits
 * that long for running tasks; it turns COLD when they are still running
 * then, or at the next cold request.  COLD: running tasks are cancelled
 * (children killed, acks_late messages given back) at once; the broker gets
 * up to 2 s.  REMAP_SIGTERM=SIGQUIT in the environment makes SIGTERM a cold
 * request.  The decision to leave is taken in the loop's before-sleep hook
 * (no polling): whatever can change it (a child's outcome, SIGCHLD, a broker
 * reply) wakes the loop, and timers wake it at the deadlines.  Signals
 * arrive through a signalfd; SIGCHLD is passed on to the pool.
 */
#ifndef CW_SHUTDOWN_H
#define CW_SHUTDOWN_H

#include <stdbool.h>

#include "util/err.h"

struct cw_loop;
struct cw_shutdown;

enum cw_phase { CW_RUNNING, CW_WARM, CW_COLD };

struct cw_shutdown_handler {
	/* Shutdown was asked for (phase WARM or COLD; COLD may follow WARM, and repeat). */
	void (*begin)(void *arg, enum cw_phase phase);
	/* Tasks still running that a warm shutdown waits for. */
	bool (*tasks_running)(void *arg);
	/* Commands still on their way to a reachable broker. */
	bool (*broker_pending)(void *arg);
	/* SIGCHLD: reap the children. */
	void (*child_exited)(void *arg);
	void *arg;
};

struct cw_shutdown_opts {
	double soft_timeout;       /* worker_soft_shutdown_timeout, seconds; 0 = no soft stage */
	bool remap_sigterm;        /* SIGTERM asks for a cold shutdown (REMAP_SIGTERM=SIGQUIT) */
};

/* Celery's REMAP_SIGTERM: true when env value (may be NULL) remaps SIGTERM to SIGQUIT. */
bool cw_shutdown_remap_sigterm(const char *value);

struct cw_shutdown *cw_shutdown_new(struct cw_loop *loop, const struct cw_shutdown_handler *h,
				    const struct cw_shutdown_opts *o, struct cw_error *err);
void cw_shutdown_free(struct cw_shutdown *s);
/* Ask for a warm (cold = false) or cold shutdown, as the signals do. */
void cw_shutdown_request(struct cw_shutdown *s, bool cold);
enum cw_phase cw_shutdown_phase(const struct cw_shutdown *s);
/*
 * 0 after a warm shutdown (or a soft stage in which every task finished),
 * 1 after a cold one.
 */
int cw_shutdown_exit_code(const struct cw_shutdown *s);

#endif
