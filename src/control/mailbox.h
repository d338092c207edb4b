/*
 * Remote control and inspection (celery/worker/control.py): a pidbox
 * command addressed to this worker is answered with the reply shapes
 * Celery's own worker sends, so `celery inspect`, `celery control`,
 * `celery status` and Flower work unchanged.  The mailbox sees the worker
 * only through consumer/worker.h.
 */
#ifndef CW_MAILBOX_H
#define CW_MAILBOX_H

struct cw_worker;
struct cw_control;

/* Run command c and publish its reply (when the sender asked for one). */
void cw_mailbox_handle(struct cw_worker *w, const struct cw_control *c);

#endif
