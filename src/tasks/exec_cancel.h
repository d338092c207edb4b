/*
 * Cancellation plumbing between the pool child's SIGUSR1 handler (soft
 * time limit) and long-running task code that cannot poll, such as
 * MuPDF's cookie: while set, the handler also stores 1 through this
 * pointer.  Async-signal-safe by construction (one store).
 */
#ifndef CW_EXEC_CANCEL_H
#define CW_EXEC_CANCEL_H

#include <signal.h>

struct cw_task_ctx;
struct cw_backend;

extern volatile int *volatile cw_exec_cancel_target;

/*
 * Set by a task around work that cannot notice cancellation in time (one
 * huge image draw, Tesseract's layout analysis): when the soft limit
 * arrives there, the child gives the task CW_ABANDON_GRACE_US to return
 * and otherwise exits with CW_EXIT_ABANDONED; the master records
 * SoftTimeLimitExceeded and starts a new child.
 */
extern volatile sig_atomic_t cw_exec_abandon_ok;
#define CW_ABANDON_GRACE_US 100000
#define CW_EXIT_ABANDONED 75

/* Called from the SIGUSR1 handler. */
void cw_exec_cancel_now(void);
/* The result backend of the running task (for built-in maintenance tasks); may be NULL. */
struct cw_backend *cw_task_backend(struct cw_task_ctx *ctx);
/* The group id the producer sent with the running task, or NULL. */
const char *cw_task_group(const struct cw_task_ctx *ctx);
/* The flag the soft time limit sets for this task (never NULL). */
volatile sig_atomic_t *cw_task_cancel_flag(struct cw_task_ctx *ctx);

#endif
