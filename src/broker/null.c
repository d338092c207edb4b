/*
 * null:// — the in-memory test transport (see null.h).  Everything happens
 * in this process: queues are singly linked lists of raw envelopes, and a
 * zero-delay loop timer hands messages out while there is credit, so the
 * consumer sees the same re-entrancy rules as with a real broker.  A
 * periodic guard timer, armed at open, dispatches when arming that
 * zero-delay timer failed, so deliveries never stall for want of memory.
 */
#include "broker/null.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "loop/loop.h"
#include "util/log.h"

struct nmsg {
	struct nmsg *next;
	char *raw;
	size_t len;
	long deliveries;        /* times delivered before */
};

struct nqueue {
	struct nqueue *next;
	struct nmsg *head, *tail;
	size_t len;
	char name[];
};

struct null_broker {
	struct cw_broker base;
	struct cw_loop *loop;
	struct cw_broker_handler h;
	struct cw_proto_limits limits;
	struct nqueue *all;     /* every queue ever pushed to or consumed */
	char **consumed;
	int nconsumed;
	int credit;
	uint64_t timer;
	uint64_t guard;         /* periodic: dispatches when arming `timer` failed */
	bool stalled;           /* arming `timer` failed: the guard dispatches */
	unsigned long seq;      /* delivery tags */
	bool up;
	bool dispatching;       /* inside dispatch: a close waits for it to return */
	bool closing;
	struct cw_null_counts counts;
};

static struct nqueue *queue_get(struct null_broker *b, const char *name, bool create)
{
	for (struct nqueue *q = b->all; q; q = q->next)
		if (!strcmp(q->name, name))
			return q;
	if (!create)
		return NULL;
	size_t n = strlen(name) + 1;
	struct nqueue *q = calloc(1, sizeof(*q) + n);
	if (!q)
		return NULL;
	memcpy(q->name, name, n);
	q->next = b->all;
	b->all = q;
	return q;
}

#define NULL_GUARD_EVERY 1.0

static struct nmsg *msg_new(const char *raw, size_t len, long deliveries)
{
	struct nmsg *m = calloc(1, sizeof(*m));
	if (!m || !(m->raw = malloc(len + 1))) {
		free(m);
		return NULL;
	}
	memcpy(m->raw, raw, len);
	m->raw[len] = '\0';
	m->len = len;
	m->deliveries = deliveries;
	return m;
}

static void on_tick(struct cw_loop *loop, void *arg);

/* Deliveries always start from the loop, never from the caller's stack. */
static void schedule(struct null_broker *b)
{
	if (b->timer || b->closing)
		return;
	b->timer = cw_loop_timer(b->loop, 0, on_tick, b);
	if (!b->timer && !b->stalled) {
		b->stalled = true;
		cw_log(CW_LOG_ERROR, "broker", "null: cannot arm the delivery timer (out of memory): "
		       "deliveries wait up to %.0f s for the guard", NULL_GUARD_EVERY);
	}
}

/* Add m to queue name, at the head or the tail. */
static int enqueue(struct null_broker *b, const char *name, struct nmsg *m, bool head)
{
	struct nqueue *q = m ? queue_get(b, name, true) : NULL;
	if (!q) {
		if (m)
			free(m->raw);
		free(m);
		return CW_ENOMEM;
	}
	if (head) {
		m->next = q->head;
		q->head = m;
		if (!q->tail)
			q->tail = m;
	} else {
		if (q->tail)
			q->tail->next = m;
		else
			q->head = m;
		q->tail = m;
	}
	q->len++;
	if (b->credit > 0)
		schedule(b);
	return CW_OK;
}

/* The next message of the first consumed queue that has one. */
static struct nmsg *take(struct null_broker *b, const char **queue)
{
	for (int i = 0; i < b->nconsumed; i++) {
		struct nqueue *q = queue_get(b, b->consumed[i], false);
		if (!q || !q->head)
			continue;
		struct nmsg *m = q->head;
		q->head = m->next;
		if (!q->head)
			q->tail = NULL;
		q->len--;
		*queue = q->name;
		return m;
	}
	return NULL;
}

static struct cw_delivery *delivery_of(struct null_broker *b, struct nmsg *m, const char *queue)
{
	struct cw_delivery *d = calloc(1, sizeof(*d));
	struct cw_error err = {0};
	char tag[32];

	snprintf(tag, sizeof(tag), "null.%lu", ++b->seq);
	if (!d || !(d->queue = strdup(queue)) || !(d->tag = strdup(tag))) {
		cw_delivery_free(d);
		return NULL;
	}
	d->raw = m->raw;
	d->raw_len = m->len;
	d->deliveries = m->deliveries + 1;
	m->raw = NULL;
	if (cw_proto_decode_task_envelope(d->raw, d->raw_len, &b->limits, &d->env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message from queue %s (%zu bytes): %s", queue,
		       d->raw_len, err.msg);
		cw_delivery_free(d);
		return NULL;
	}
	return d;
}

static void nb_free(struct null_broker *b);

/* Hand out messages while there is credit; runs from the loop only. */
static void dispatch(struct null_broker *b)
{
	const char *queue;
	struct nmsg *m;

	b->stalled = false;
	b->dispatching = true;
	if (!b->up) {
		b->up = true;
		if (b->h.on_state)
			b->h.on_state(b->h.arg, true);
	}
	while (!b->closing && b->credit > 0 && (m = take(b, &queue))) {
		struct cw_delivery *d = delivery_of(b, m, queue);
		free(m->raw);
		free(m);
		if (!d)
			continue;
		b->credit--;
		b->counts.delivered++;
		b->h.on_delivery(b->h.arg, d);
	}
	b->dispatching = false;
	if (b->closing)
		nb_free(b);
}

static void on_tick(struct cw_loop *loop, void *arg)
{
	struct null_broker *b = arg;
	(void)loop;
	b->timer = 0;
	dispatch(b);
}

static void on_guard(struct cw_loop *loop, void *arg)
{
	struct null_broker *b = arg;
	(void)loop;
	if (b->stalled && !b->timer)
		dispatch(b);
}

/* ---- ops ---------------------------------------------------------------- */

static struct cw_broker *nb_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				 const struct cw_broker_handler *h, struct cw_error *err)
{
	struct null_broker *b = calloc(1, sizeof(*b));
	if (!b)
		goto nomem;
	b->loop = loop;
	b->h = *h;
	b->limits = o->limits;
	if (!b->limits.max_message)
		b->limits = (struct cw_proto_limits)CW_PROTO_LIMITS_DEFAULT;
	b->consumed = calloc((size_t)o->nqueues + 1, sizeof(char *));
	if (!b->consumed)
		goto nomem;
	for (; b->nconsumed < o->nqueues; b->nconsumed++)
		if (!(b->consumed[b->nconsumed] = strdup(o->queues[b->nconsumed])))
			goto nomem;
	b->guard = cw_loop_every(loop, NULL_GUARD_EVERY, on_guard, b);
	b->timer = cw_loop_timer(loop, 0, on_tick, b); /* on_state(up) */
	if (!b->guard || !b->timer)
		goto nomem;
	return &b->base;
nomem:
	if (b) {
		cw_loop_timer_cancel(loop, b->guard);
		cw_loop_timer_cancel(loop, b->timer);
		nb_free(b);
	}
	cw_error_set(err, CW_ENOMEM, "out of memory");
	return NULL;
}

static void nb_set_credit(struct cw_broker *base, int n)
{
	struct null_broker *b = (struct null_broker *)base;
	b->credit = n > 0 ? n : 0;
	if (b->credit > 0)
		schedule(b);
}

static void nb_ack(struct cw_broker *base, struct cw_delivery *d)
{
	(void)d;
	((struct null_broker *)base)->counts.acks++;
}

static void nb_reject(struct cw_broker *base, struct cw_delivery *d, bool requeue)
{
	struct null_broker *b = (struct null_broker *)base;
	if (!requeue) {
		b->counts.rejects++;
		return;
	}
	b->counts.requeues++;
	(void)enqueue(b, d->queue, msg_new(d->raw, d->raw_len, d->deliveries), false);
}

static void nb_restore(struct cw_broker *base, struct cw_delivery *d)
{
	struct null_broker *b = (struct null_broker *)base;
	b->counts.restores++;
	(void)enqueue(b, d->queue, msg_new(d->raw, d->raw_len, d->deliveries), true);
}

static void nb_publish(struct cw_broker *base, const char *queue, int priority, const char *tag,
		       const char *raw, size_t len)
{
	struct null_broker *b = (struct null_broker *)base;
	(void)priority;
	(void)tag;
	b->counts.publishes++;
	(void)enqueue(b, queue, msg_new(raw, len, 0), false);
}

static void nb_publish_fanout(struct cw_broker *base, const char *exchange,
			      const char *routing_key, const char *raw, size_t len)
{
	(void)exchange;
	(void)routing_key;
	(void)raw;
	(void)len;
	((struct null_broker *)base)->counts.fanouts++;
}

static void nb_publish_direct(struct cw_broker *base, const char *exchange,
			      const char *routing_key, const char *raw, size_t len, int expire)
{
	(void)exchange;
	(void)routing_key;
	(void)raw;
	(void)len;
	(void)expire;
	((struct null_broker *)base)->counts.directs++;
}

static int nb_add_queue(struct cw_broker *base, const char *queue)
{
	struct null_broker *b = (struct null_broker *)base;
	for (int i = 0; i < b->nconsumed; i++)
		if (!strcmp(b->consumed[i], queue))
			return CW_EINVAL;
	char **v = realloc(b->consumed, (size_t)(b->nconsumed + 2) * sizeof(*v));
	if (!v)
		return CW_ENOMEM;
	b->consumed = v;
	if (!(v[b->nconsumed] = strdup(queue)))
		return CW_ENOMEM;
	v[++b->nconsumed] = NULL;
	if (b->credit > 0)
		schedule(b);
	return CW_OK;
}

static int nb_cancel_queue(struct cw_broker *base, const char *queue)
{
	struct null_broker *b = (struct null_broker *)base;
	for (int i = 0; i < b->nconsumed; i++)
		if (!strcmp(b->consumed[i], queue)) {
			free(b->consumed[i]);
			memmove(b->consumed + i, b->consumed + i + 1,
				(size_t)(b->nconsumed - i) * sizeof(char *));
			b->nconsumed--;
			return CW_OK;
		}
	return CW_ENOTFOUND;
}

static int nb_queues(struct cw_broker *base, const char *const **out)
{
	struct null_broker *b = (struct null_broker *)base;
	*out = (const char *const *)b->consumed;
	return b->nconsumed;
}

static void nb_touch(struct cw_broker *base, struct cw_delivery *d)
{
	(void)d;
	((struct null_broker *)base)->counts.touches++;
}

static bool nb_busy(struct cw_broker *base)
{
	(void)base;
	return false; /* nothing is ever on its way to a server */
}

static bool nb_connected(struct cw_broker *base)
{
	return ((struct null_broker *)base)->up;
}

static json_t *nb_info(struct cw_broker *base)
{
	(void)base;
	return json_pack("{s:s,s:s,s:{}}", "hostname", "localhost", "transport", "null",
			 "transport_options");
}

static void nb_free(struct null_broker *b)
{
	while (b->all) {
		struct nqueue *q = b->all;
		b->all = q->next;
		while (q->head) {
			struct nmsg *m = q->head;
			q->head = m->next;
			free(m->raw);
			free(m);
		}
		free(q);
	}
	for (int i = 0; b->consumed && i < b->nconsumed; i++)
		free(b->consumed[i]);
	free(b->consumed);
	free(b);
}

static void nb_close(struct cw_broker *base)
{
	struct null_broker *b = (struct null_broker *)base;
	if (!b)
		return;
	if (b->timer)
		cw_loop_timer_cancel(b->loop, b->timer);
	cw_loop_timer_cancel(b->loop, b->guard);
	b->timer = b->guard = 0;
	b->closing = true;
	if (!b->dispatching) /* else dispatch frees it when the handler returns */
		nb_free(b);
}

static const char *const nb_schemes[] = {"null", NULL};

const struct cw_broker_ops cw_null_broker_ops = {
	.scheme = "null",
	.url_schemes = nb_schemes,
	.listed = 0, /* tests only: not offered to --broker */
	.info = nb_info,
	.open = nb_open,
	.set_credit = nb_set_credit,
	.ack = nb_ack,
	.reject = nb_reject,
	.restore = nb_restore,
	.publish = nb_publish,
	.publish_fanout = nb_publish_fanout,
	.publish_direct = nb_publish_direct,
	.add_queue = nb_add_queue,
	.cancel_queue = nb_cancel_queue,
	.queues = nb_queues,
	.touch = nb_touch,
	.busy = nb_busy,
	.connected = nb_connected,
	.close = nb_close,
};

/* ---- test-facing -------------------------------------------------------- */

int cw_null_broker_push(struct cw_broker *base, const char *queue, const char *raw, size_t len)
{
	return enqueue((struct null_broker *)base, queue, msg_new(raw, len, 0), false);
}

size_t cw_null_broker_queue_len(struct cw_broker *base, const char *queue)
{
	struct nqueue *q = queue_get((struct null_broker *)base, queue, false);
	return q ? q->len : 0;
}

void cw_null_broker_counts(struct cw_broker *base, struct cw_null_counts *out)
{
	*out = ((struct null_broker *)base)->counts;
}
