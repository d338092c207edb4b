/*
 * The ack ledger of the AMQP consumer channel: acks wait until the event
 * loop is about to sleep and then leave as few basic.ack frames as the
 * channel's state allows.
 *
 * RabbitMQ numbers the deliveries of a channel 1, 2, 3, ...  A basic.ack
 * with multiple=1 and tag T settles every delivery of the channel that is
 * still unsettled and numbered T or lower.  So one frame may carry a run of
 * acks only when every unsettled delivery up to T is meant to be acked:
 * the ledger keeps the channel's unsettled deliveries in tag order and
 * sends one multiple ack for the longest run of queued acks at the front
 * (deliveries rejected on the way, or consumed without acks, do not break
 * a run: the broker no longer counts them).  A queued ack behind a message
 * still held (an ETA task, a running acks_late task) goes as its own frame,
 * as it always did.  If the ledger ever loses track (out of memory, tags out
 * of order), every ack goes alone until the next channel.
 *
 * Pure bookkeeping, no I/O: amqp.c sends what ab_acks_flush() plans.
 * Private to src/broker.
 */
#ifndef CW_BROKER_AMQP_ACKS_H
#define CW_BROKER_AMQP_ACKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ab_acks {
	struct ab_slot {
		uint64_t tag;
		unsigned char st;     /* AB_OPEN, AB_ACK or AB_GONE */
	} *v;                         /* unsettled deliveries, tag order: v[head .. n) */
	size_t head, n, cap;
	size_t ngone;                 /* AB_GONE slots in v[head .. n) */
	uint64_t *pend;               /* queued acks, in the order they were queued */
	size_t npend, cappend;
	uint64_t last;                /* the highest tag delivered on this channel */
	bool lost;                    /* lost track: every ack goes alone (v is empty) */
};

/* An empty ledger for a new channel; a zeroed struct is one too. */
void ab_acks_reset(struct ab_acks *a);
void ab_acks_free(struct ab_acks *a);

/* A delivery arrived; needs_ack is false for a consumer without acks (no_ack). */
void ab_acks_delivered(struct ab_acks *a, uint64_t tag, bool needs_ack);
/* The delivery was settled another way (basic.reject sent). */
void ab_acks_settled(struct ab_acks *a, uint64_t tag);
/* Queue an ack for tag: 0, or -1 when it cannot be queued (send it now instead). */
int ab_acks_queue(struct ab_acks *a, uint64_t tag);
static inline bool ab_acks_pending(const struct ab_acks *a)
{
	return a->npend > 0;
}

/*
 * Send the queued acks: send(arg, tag, multiple) once per frame, in an order
 * the broker accepts.  Stops at the first send that fails (returns non-zero)
 * and returns -1; the ledger is then stale and the caller drops the channel.
 * send must not touch the ledger.
 */
int ab_acks_flush(struct ab_acks *a, int (*send)(void *arg, uint64_t tag, bool multiple),
		  void *arg);

#endif
