/*
 * null:// — an in-memory transport for unit tests: no server, no sockets.
 *
 * Queues are lists in memory: publish and cw_null_broker_push append, a
 * restore puts the message back at the head, a reject with requeue at the
 * tail.  Deliveries go to on_delivery from the loop (a zero-delay timer),
 * never from inside set_credit, one per unit of credit, from the consumed
 * queues in order.  on_state(up) is sent from the loop after open.  Acks,
 * rejects, restores, touches and publishes are counted.
 *
 * cw_broker_open("null://") takes it; --broker does not (the transport
 * lists no scheme, see struct cw_broker_ops.listed): a worker whose queues
 * nobody else can reach has no use outside tests.
 */
#ifndef CW_BROKER_NULL_H
#define CW_BROKER_NULL_H

#include <stddef.h>

struct cw_broker;

struct cw_null_counts {
	long acks;           /* ack */
	long rejects;        /* reject without requeue (dropped) */
	long requeues;       /* reject with requeue */
	long restores;       /* restore */
	long touches;
	long publishes;      /* publish (task messages) */
	long fanouts;        /* publish_fanout */
	long directs;        /* publish_direct */
	long delivered;      /* handed to on_delivery */
};

/* Append a raw kombu envelope to queue (created if new); CW_OK or CW_ENOMEM. */
int cw_null_broker_push(struct cw_broker *b, const char *queue, const char *raw, size_t len);
/* Messages waiting in queue (0 for a queue never seen). */
size_t cw_null_broker_queue_len(struct cw_broker *b, const char *queue);
void cw_null_broker_counts(struct cw_broker *b, struct cw_null_counts *out);

#endif
