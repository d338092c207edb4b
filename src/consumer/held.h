/*
 * A message the worker holds, from arrival to ack: waiting for its ETA,
 * waiting for a rate-limit token, reserved, or running in a pool slot.
 * Allocated once on arrival and moved between the reserve's lists by
 * pointer, so timers can refer to it.  Private to src/consumer.
 */
#ifndef CW_HELD_H
#define CW_HELD_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "protocol/protocol.h"

struct cw_worker;
struct cw_timelimit;

struct held {
	struct cw_delivery *d;
	struct cw_request req;     /* decoded once, on arrival */
	double eta;                /* wall clock; 0 = none */
	double expires;            /* wall clock; 0 = none */
	bool acks_late, reject_on_worker_lost;
	bool acked;                /* the broker has its ack: never twice (AMQP closes the channel) */
	bool terminated;           /* revoke(terminate=True) signalled its child */
	bool soft_fired;           /* the soft time limit was signalled */
	bool counted;              /* counts against the prefetch limit */
	double time_start;         /* wall clock when handed to the pool; 0 = not running */
	double soft, hard;         /* effective time limits, seconds; 0 = none */
	int slot;                  /* pool slot while running */
	uint64_t eta_timer, soft_timer, hard_timer;
	struct cw_worker *w;       /* for the ETA timer */
	struct cw_timelimit *tl;   /* for the time-limit timers */
};

#endif
