/*
 * AMQP 0-9-1 transport (RabbitMQ) over rabbitmq-c, with the topology and
 * flow control of Celery on py-amqp:
 *
 *  - each consumed queue Q is declared durable and bound to a durable direct
 *    exchange Q with routing key Q (Celery's create_missing queues), with
 *    x-max-priority when task_queue_max_priority is set;
 *  - `celeryev` is a durable topic exchange (events, transient messages);
 *  - `celery.pidbox` is a non-durable fanout exchange; this worker consumes
 *    `<nodename>.celery.pidbox` (auto-delete, x-expires 10 s, x-message-ttl
 *    300 s: control_queue_expires / control_queue_ttl) without acks;
 *    replies go to the non-durable direct exchange `reply.celery.pidbox`;
 *  - basic.qos is channel-wide (RabbitMQ's global flag, as Celery sets it
 *    for RabbitMQ) with prefetch_count = the window the consumer asks for:
 *    concurrency x prefetch_multiplier plus held ETA/rate-limited messages;
 *    per consumer when a consumed queue is a quorum queue (they refuse
 *    global QoS), as Celery 5.5 does: the count is then fixed when the
 *    consumer starts;
 *  - a URL list (amqp://a;amqp://b) is a cluster: a lost connection moves
 *    to the next URL (round-robin or shuffle), which declares and consumes
 *    again; RabbitMQ has requeued what the old connection held.
 *
 * Channel 1 consumes and acks; channel 2 declares and publishes, so a
 * refused publish (a queue declared with other arguments) never costs the
 * deliveries.  Setup RPCs are synchronous (loopback/LAN round trips, bounded
 * by the RPC timeout); everything afterwards is driven by the event loop:
 * frames are read without blocking and reassembled (amqp_frames.c).
 * Declares are amqp_topology.c, publishing amqp_publish.c.
 *
 * A delivery tag is only valid on the connection that delivered it, so a
 * delivery's tag string carries the connection generation: acks and rejects
 * of older generations are dropped (RabbitMQ requeued those messages when
 * the connection died).  Deliveries are handed to the consumer as kombu
 * envelopes (the same JSON a Redis list holds) so everything above the
 * transport is shared.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "broker/amqp_int.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

static int start_consuming(struct amqp_broker *b);

/* ---- errors ------------------------------------------------------------ */

/*
 * Text and reply code (0 for a library error) of an RPC reply; sends the
 * close-ok the server expects after a connection close.
 */
static int rpc_error(struct amqp_broker *b, amqp_rpc_reply_t r, char *out, size_t outsz)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		snprintf(out, outsz, "ok");
		return 0;
	case AMQP_RESPONSE_NONE:
		snprintf(out, outsz, "missing RPC reply");
		return 0;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(out, outsz, "%s", amqp_error_string2(r.library_error));
		return 0;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *m = r.reply.decoded;
			snprintf(out, outsz, "connection closed by the broker: %u %.*s", m->reply_code,
				 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
			amqp_connection_close_ok_t ok = {0};
			(void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
			return m->reply_code;
		}
		if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *m = r.reply.decoded;
			snprintf(out, outsz, "channel closed by the broker: %u %.*s", m->reply_code,
				 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
			return m->reply_code;
		}
		snprintf(out, outsz, "unexpected broker method 0x%08x", r.reply.id);
		return 0;
	}
	snprintf(out, outsz, "unknown RPC outcome");
	return 0;
}

/* After a refused RPC on channel ch: acknowledge the close and reopen the channel. */
int ab_reopen_channel(struct amqp_broker *b, amqp_channel_t ch)
{
	amqp_channel_close_ok_t ok = {0};
	if (amqp_send_method(b->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
		return -1;
	amqp_channel_open(b->conn, ch);
	return amqp_get_rpc_reply(b->conn).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

/*
 * Check the last RPC; on failure log it (unless its channel refusal carries
 * reply code quiet) and, for a channel-level refusal on the publish or probe
 * channel, reopen that channel.  Returns 0 when it succeeded.
 */
int ab_rpc_quiet(struct amqp_broker *b, amqp_channel_t ch, const char *what, const char *name,
		 int quiet)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
	char msg[512];
	if (r.reply_type == AMQP_RESPONSE_NORMAL) {
		b->last_code = 0;
		return 0;
	}
	int code = rpc_error(b, r, msg, sizeof(msg));
	bool chan = r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
		    r.reply.id == AMQP_CHANNEL_CLOSE_METHOD;
	b->last_code = code;
	snprintf(b->last_text, sizeof(b->last_text), "%.*s", (int)sizeof(b->last_text) - 1, msg);
	bool silent = chan && ch != CH_CONSUME && quiet != 0 && (quiet == -1 || quiet == code);
	if (!silent)
		cw_log(CW_LOG_ERROR, "broker", "%s %s on %s: %s", what, name, b->redacted, msg);
	/* a refused declaration closes only its channel: reopen it (publish and probe channels) */
	if (chan && ch != CH_CONSUME && ab_reopen_channel(b, ch) == 0)
		return -1;
	/* the consuming channel (its deliveries are gone with it) or the connection: start over */
	b->last_code = 0;
	if (b->up)
		ab_conn_lost(b, msg);
	return -1;
}

int ab_rpc_ok(struct amqp_broker *b, amqp_channel_t ch, const char *what, const char *name)
{
	/* 0: no refusal is quiet */
	return ab_rpc_quiet(b, ch, what, name, 0);
}


/* ---- connection -------------------------------------------------------- */

static void on_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)fd;
	(void)ev;
	ab_pump(arg);
}

/* Periodic while connected: created by connect_now, cancelled by teardown. */
static void hb_tick(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	(void)loop;
	/*
	 * rabbitmq-c sends due heartbeats and notices missed ones while reading;
	 * this also reads frames left buffered when a pump_later could not be armed
	 */
	if (b->conn)
		ab_pump(b);
}

static double hb_interval(const struct amqp_broker *b)
{
	double every = b->o.heartbeat > 0 ? b->o.heartbeat / 4.0 : 5.0;
	return every < 0.5 ? 0.5 : every;
}

static void connect_now(struct cw_loop *loop, void *arg);

/* Point t, given and redacted at URL i of the list (checked at open). */
static int use_url(struct amqp_broker *b, int i, struct cw_error *err)
{
	if (cw_amqp_target_parse(b->urls[i], b->o.ssl, &b->t, err) != CW_OK ||
	    cw_url_parse(b->urls[i], &b->given, err) != CW_OK)
		return CW_EINVAL;
	b->t.verify = b->o.ssl_verify;
	b->t.ca = b->o.ssl_ca;
	b->t.cert = b->o.ssl_cert;
	b->t.key = b->o.ssl_key;
	b->t.heartbeat = b->o.heartbeat;
	b->t.connect_timeout = b->o.connect_timeout;
	snprintf(b->redacted, sizeof(b->redacted), "%s", b->t.redacted);
	b->cur = i;
	return CW_OK;
}

/* kombu's failover strategies: the next URL in order, or any other one at random. */
static void next_url(struct amqp_broker *b)
{
	struct cw_error err = {0};
	int i = (b->cur + 1) % b->nurls;
	if (b->o.failover_strategy && !strcmp(b->o.failover_strategy, "shuffle"))
		i = (b->cur + 1 + rand_r(&b->seed) % (b->nurls - 1)) % b->nurls;
	if (use_url(b, i, &err) != CW_OK)
		cw_log(CW_LOG_ERROR, "broker", "broker URL %d: %s", i + 1, err.msg);
}

/*
 * Connect again later.  With a URL list the next URL is tried at once until
 * each has been tried; then the backoff applies to the whole round.
 */
static void schedule_retry(struct amqp_broker *b)
{
	if (b->closing || b->retry_timer)
		return;
	if (b->nurls > 1) {
		next_url(b);
		if (++b->tried < b->nurls) {
			b->retry_timer = cw_loop_timer(b->loop, 0.1, connect_now, b);
			return;
		}
		b->tried = 0;
	}
	b->backoff = b->backoff <= 0 ? 0.5 : (b->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : b->backoff * 2);
	b->retry_timer = cw_loop_timer(b->loop, b->backoff, connect_now, b);
	if (!b->retry_timer)
		cw_log(CW_LOG_ERROR, "broker", "cannot arm the reconnect timer (out of memory): "
		       "the guard retries %s within %.0f s", b->redacted, GUARD_EVERY);
}

void ab_in_reset(struct inmsg *m)
{
	free(m->ctag);
	free(m->exchange);
	free(m->routing_key);
	free(m->body);
	json_decref(m->props);
	memset(m, 0, sizeof(*m));
}

void ab_drop_probes(struct amqp_broker *b)
{
	for (int i = 0; i < b->nprobes; i++)
		free(b->probes[i].queue);
	b->nprobes = 0;
}

/* The oldest probe got its answer (depth < 0: the queue does not exist). */
void ab_probe_done(struct amqp_broker *b, long depth)
{
	if (!b->nprobes)
		return;
	struct probe p = b->probes[0];
	memmove(b->probes, b->probes + 1, (size_t)(b->nprobes - 1) * sizeof(p));
	b->nprobes--;
	if (p.cb)
		p.cb(p.arg, p.queue, depth < 0 ? 0 : depth);
	free(p.queue);
}

/* Tear the connection down without a handshake (it is gone or unusable). */
static void teardown(struct amqp_broker *b)
{
	if (b->fd >= 0)
		cw_loop_watch(b->loop, b->fd, 0, NULL, NULL);
	b->fd = -1;
	if (b->hb_timer)
		cw_loop_timer_cancel(b->loop, b->hb_timer);
	if (b->pump_timer)
		cw_loop_timer_cancel(b->loop, b->pump_timer);
	b->hb_timer = b->pump_timer = 0;
	if (b->conn)
		amqp_destroy_connection(b->conn);
	b->conn = NULL;
	b->consuming = false;
	b->qos_sent = 0;
	ab_acks_reset(&b->acks); /* what was queued goes back to the queue with the connection */
	ab_in_reset(&b->in);
	ab_forget_declared(b);
	ab_drop_probes(b);
}

static void tell_down(struct amqp_broker *b)
{
	b->down_lost = false;
	if (b->h.on_state)
		b->h.on_state(b->h.arg, false);
}

static void notify_down(struct cw_loop *loop, void *arg)
{
	(void)loop;
	((struct amqp_broker *)arg)->down_timer = 0;
	tell_down(arg);
}

void ab_conn_lost(struct amqp_broker *b, const char *why)
{
	bool was_up = b->up;
	teardown(b);
	b->up = false;
	if (was_up) {
		cw_log(CW_LOG_WARNING, "broker", "Connection to broker lost (%s): %s; reconnecting",
		       b->redacted, why);
		/* told from a timer: the consumer may be iterating its messages right now */
		if (!b->down_timer && !b->down_lost &&
		    !(b->down_timer = cw_loop_timer(b->loop, 0, notify_down, b))) {
			/* owed: told before the next connection's setup, or by the guard */
			b->down_lost = true;
			cw_log(CW_LOG_ERROR, "broker", "cannot arm a timer (out of memory): the "
			       "consumer learns of the lost connection late (within %.0f s)",
			       GUARD_EVERY);
		}
	}
	schedule_retry(b);
}

static void connect_now(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	struct cw_error err = {0};

	b->retry_timer = 0;
	if (b->closing || b->conn)
		return;
	/* a "down" owed to the consumer goes first: this connection may deliver during setup */
	if (b->down_lost)
		tell_down(b);
	b->conn = cw_amqp_connect(&b->t, FRAME_MAX, RPC_TIMEOUT, &err);
	if (!b->conn) {
		/* unreachable: the first failure and every one at the longest backoff are warnings */
		bool quiet = err.code == CW_EIO && b->backoff > 0 && b->backoff < BACKOFF_MAX;
		cw_log(quiet ? CW_LOG_DEBUG : err.code == CW_EIO ? CW_LOG_WARNING : CW_LOG_ERROR,
		       "broker", "Cannot connect to %s: %s", b->redacted, err.msg);
		schedule_retry(b);
		return;
	}
	amqp_channel_open(b->conn, CH_CONSUME);
	if (ab_rpc_ok(b, CH_CONSUME, "opening channel", "1"))
		goto fail;
	amqp_channel_open(b->conn, CH_PUBLISH);
	if (ab_rpc_ok(b, CH_PUBLISH, "opening channel", "2"))
		goto fail;
	amqp_channel_open(b->conn, CH_PROBE);
	if (ab_rpc_ok(b, CH_PROBE, "opening channel", "3"))
		goto fail;
	if (ab_declare_topology(b))
		goto fail;
	b->fd = amqp_get_sockfd(b->conn);
	if (b->fd < 0 || cw_loop_watch(loop, b->fd, CW_READ, on_io, b) != 0)
		goto fail;
	b->gen++;
	b->up = true;
	b->backoff = 0;
	b->tried = 0;
	cw_log(CW_LOG_INFO, "broker", "Connected to %s", b->redacted);
	if (b->window > 0 && start_consuming(b))
		goto lost;
	ab_flush_pending(b);
	if (!b->conn)
		return;
	/* one periodic timer per connection: its re-arms cannot fail, so heartbeats never stop */
	b->hb_timer = cw_loop_every(loop, hb_interval(b), hb_tick, b);
	if (!b->hb_timer) {
		ab_conn_lost(b, "cannot arm the heartbeat timer (out of memory)");
		return;
	}
	hb_tick(loop, b);
	if (b->h.on_state && b->up)
		b->h.on_state(b->h.arg, true);
	if (b->conn)
		ab_pump(b); /* frames that arrived during setup RPCs are queued inside rabbitmq-c */
	return;
lost:
	ab_conn_lost(b, "setup failed");
	return;
fail:
	teardown(b);
	schedule_retry(b);
}

/*
 * Every GUARD_EVERY seconds from open to close: finishes what a failed timer
 * arm left undone, so the transport is never stranded.  While disconnected a
 * reconnect timer is always pending, unless arming it failed.
 */
static void guard_tick(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	if (b->down_lost)
		tell_down(b);
	if (!b->closing && !b->conn && !b->retry_timer) {
		cw_log(CW_LOG_WARNING, "broker", "reconnecting to %s (its retry timer was lost)",
		       b->redacted);
		connect_now(loop, b);
	}
}


/* ---- flow control ------------------------------------------------------ */

static int send_qos(struct amqp_broker *b, int n)
{
	amqp_basic_qos_t m = {.prefetch_size = 0,
			      .prefetch_count = (uint16_t)(n > 65535 ? 65535 : n),
			      .global = b->qos_global};
	if (b->qos_sent == n)
		return 0;
	if (amqp_send_method(b->conn, CH_CONSUME, AMQP_BASIC_QOS_METHOD, &m) != AMQP_STATUS_OK)
		return -1;
	b->qos_sent = n;
	return 0;
}

static int consume_queue(struct amqp_broker *b, const char *q)
{
	char ctag[300];
	snprintf(ctag, sizeof(ctag), "%s%s", CTAG_PREFIX, q);
	amqp_basic_consume(b->conn, CH_CONSUME, cstr(q), cstr(ctag), 0, 0, 0, amqp_empty_table);
	return ab_rpc_ok(b, CH_CONSUME, "consuming", q);
}

static int cancel_queue_consumer(struct amqp_broker *b, const char *q)
{
	char ctag[300];
	snprintf(ctag, sizeof(ctag), "%s%s", CTAG_PREFIX, q);
	amqp_basic_cancel_t m = {.consumer_tag = cstr(ctag), .nowait = 0};
	return amqp_send_method(b->conn, CH_CONSUME, AMQP_BASIC_CANCEL_METHOD, &m) ==
			       AMQP_STATUS_OK ? 0 : -1;
}

static int start_consuming(struct amqp_broker *b)
{
	if (send_qos(b, b->window))
		return -1;
	for (int i = 0; i < b->nqueues; i++) {
		if (ab_refused_now(b, b->queues[i]))
			continue;
		if (consume_queue(b, b->queues[i]) == 0)
			continue;
		/* a queue we could not know was a quorum queue (passive, or added later) */
		if (b->qos_global && strcasestr(b->last_text, "global qos")) {
			cw_log(CW_LOG_WARNING, "broker", "queue %s refuses global QoS (a quorum "
			       "queue): prefetch is per consumer from now on", b->queues[i]);
			b->qos_global = false;
		}
		return -1;
	}
	b->consuming = true;
	return 0;
}

static void set_window(struct cw_broker *base, int n)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	b->window = n > 0 ? n : 0;
	if (!b->up)
		return;
	if (b->window == 0) {
		if (b->consuming) {
			for (int i = 0; i < b->nqueues; i++)
				if (!ab_refused_now(b, b->queues[i]) &&
				    cancel_queue_consumer(b, b->queues[i])) {
					ab_conn_lost(b, "cannot cancel consumers");
					return;
				}
			b->consuming = false;
		}
		return;
	}
	if (!b->consuming) {
		if (start_consuming(b))
			ab_conn_lost(b, "cannot start consuming");
		return;
	}
	if (send_qos(b, b->window))
		ab_conn_lost(b, "cannot send basic.qos");
}

static void set_credit(struct cw_broker *base, int n)
{
	/* AMQP flow control is the prefetch window (set_prefetch); credit is informational */
	(void)base;
	(void)n;
}


/* ---- acks -------------------------------------------------------------- */

/* The channel-local tag of d, or 0 when d came over an earlier connection. */
static uint64_t live_tag(struct amqp_broker *b, const struct cw_delivery *d)
{
	uint64_t gen, tag = d->tag ? ab_parse_tag(d->tag, &gen) : 0;
	if (!tag || !b->up || gen != b->gen) {
		cw_log(CW_LOG_DEBUG, "broker", "delivery %s is from an earlier connection: the "
		       "broker already requeued it", d->tag ? d->tag : "?");
		return 0;
	}
	return tag;
}

static int send_ack(void *arg, uint64_t tag, bool multiple)
{
	struct amqp_broker *b = arg;
	return amqp_basic_ack(b->conn, CH_CONSUME, tag, multiple) == AMQP_STATUS_OK ? 0 : -1;
}

/* Send the acks queued since the loop last slept (amqp_acks.h: runs share a frame). */
static void flush_acks(struct amqp_broker *b)
{
	if (b->conn && b->up && ab_acks_pending(&b->acks) &&
	    ab_acks_flush(&b->acks, send_ack, b) != 0)
		ab_conn_lost(b, "cannot send basic.ack");
}

static void flush_acks_hook(struct cw_loop *loop, void *arg)
{
	(void)loop;
	flush_acks(arg);
}

/*
 * The ack is queued and leaves before the loop next sleeps, with the others
 * of this turn: a turn that starts or finishes several tasks sends one frame
 * for the lot where the channel allows it (amqp_acks.h), not one each.
 */
static void ack(struct cw_broker *base, struct cw_delivery *d)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	uint64_t tag = live_tag(b, d);
	if (!tag || (b->acks_hooked && ab_acks_queue(&b->acks, tag) == 0))
		return;
	if (send_ack(b, tag, false)) {
		ab_conn_lost(b, "cannot send basic.ack");
		return;
	}
	ab_acks_settled(&b->acks, tag);
}

static void reject(struct cw_broker *base, struct cw_delivery *d, bool requeue)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	uint64_t tag = live_tag(b, d);
	if (tag)
		ab_reject_tag(b, tag, requeue);
}

static void restore(struct cw_broker *base, struct cw_delivery *d)
{
	reject(base, d, true);
}

static void touch(struct cw_broker *base, struct cw_delivery *d)
{
	/* RabbitMQ holds unacked messages for as long as the connection lives */
	(void)base;
	(void)d;
}


/* ---- queues ------------------------------------------------------------ */

static int add_queue(struct cw_broker *base, const char *queue)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	for (int i = 0; i < b->nqueues; i++)
		if (!strcmp(b->queues[i], queue))
			return CW_EINVAL;
	char **q = realloc(b->queues, (size_t)(b->nqueues + 1) * sizeof(*q));
	if (!q)
		return CW_ENOMEM;
	b->queues = q;
	if (!(q[b->nqueues] = strdup(queue)))
		return CW_ENOMEM;
	b->nqueues++;
	/*
	 * Declared and consumed now when connected (a refusal is logged; a lost
	 * connection consumes the queue on the next one, with the others).
	 */
	if (b->up && ab_declare_task_queue(b, queue) == 0 && b->up && b->consuming)
		(void)consume_queue(b, queue);
	return CW_OK;
}

static int cancel_queue(struct cw_broker *base, const char *queue)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	for (int i = 0; i < b->nqueues; i++) {
		if (strcmp(b->queues[i], queue))
			continue;
		if (b->up && b->consuming && !ab_refused_now(b, queue) &&
		    cancel_queue_consumer(b, queue))
			ab_conn_lost(b, "cannot cancel a consumer");
		free(b->queues[i]);
		memmove(b->queues + i, b->queues + i + 1, (size_t)(b->nqueues - i - 1) * sizeof(char *));
		b->nqueues--;
		return CW_OK;
	}
	return CW_ENOTFOUND;
}

static int queues(struct cw_broker *base, const char *const **out)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	*out = (const char *const *)b->queues;
	return b->nqueues;
}

static void queue_depth(struct cw_broker *base, const char *queue,
			void (*cb)(void *arg, const char *queue, long depth), void *arg)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	amqp_queue_declare_t m = {.queue = cstr(queue), .passive = 1};
	if (!b->up || b->nprobes >= MAX_PROBES)
		return;
	char *q = strdup(queue);
	if (!q)
		return;
	if (amqp_send_method(b->conn, CH_PROBE, AMQP_QUEUE_DECLARE_METHOD, &m) != AMQP_STATUS_OK) {
		free(q);
		ab_conn_lost(b, "cannot send queue.declare");
		return;
	}
	b->probes[b->nprobes].queue = q;
	b->probes[b->nprobes].cb = cb;
	b->probes[b->nprobes].arg = arg;
	b->nprobes++;
}

static bool busy(struct cw_broker *base)
{
	return ((struct amqp_broker *)base)->pend_head != NULL;
}

static bool connected(struct cw_broker *base)
{
	return ((struct amqp_broker *)base)->up;
}


/* ---- open / close ------------------------------------------------------ */

static void free_strv(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void broker_free(struct amqp_broker *b)
{
	free_strv(b->queues, b->nqueues);
	free_strv(b->broadcast, b->nbroadcast);
	free_strv(b->urls, b->nurls);
	for (int i = 0; i < b->ndecls; i++) {
		free(b->decls[i].name);
		free_strv(b->decls[i].keys, b->decls[i].n);
		free_strv(b->decls[i].vals, b->decls[i].n);
	}
	free(b->decls);
	free((char *)b->o.queue_type);
	free((char *)b->o.failover_strategy);
	ab_refusals_free(b);
	free((char *)b->o.ssl_ca);
	free((char *)b->o.ssl_cert);
	free((char *)b->o.ssl_key);
	while (b->pend_head)
		ab_pend_pop(b);
	if (b->acks_hooked)
		cw_loop_before_sleep_remove(b->loop, flush_acks_hook, b);
	ab_acks_free(&b->acks);
	free(b);
}

static void amqp_close(struct cw_broker *base)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	b->closing = true;
	cw_loop_timer_cancel(b->loop, b->guard_timer);
	if (b->retry_timer)
		cw_loop_timer_cancel(b->loop, b->retry_timer);
	if (b->down_timer)
		cw_loop_timer_cancel(b->loop, b->down_timer);
	if (b->pend_head)
		cw_log(CW_LOG_WARNING, "broker", "%d messages could not be published before exit",
		       b->npend);
	flush_acks(b); /* the acks of this last turn */
	if (b->conn && b->up) {
		/* an orderly close: RabbitMQ requeues whatever we still hold */
		amqp_channel_close(b->conn, CH_PUBLISH, AMQP_REPLY_SUCCESS);
		amqp_channel_close(b->conn, CH_CONSUME, AMQP_REPLY_SUCCESS);
		amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
	}
	teardown(b);
	broker_free(b);
}

static char *dup_opt(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

/* "amqp://a;amqp://b" (Celery's separator; blanks around URLs ignored) into b->urls. */
static int split_urls(struct amqp_broker *b, const char *list)
{
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == ';')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, ";");
		while (n && p[n - 1] == ' ')
			n--;
		char **v = realloc(b->urls, (size_t)(b->nurls + 1) * sizeof(*v));
		if (!v)
			return CW_ENOMEM;
		b->urls = v;
		if (!(v[b->nurls] = strndup(p, n)))
			return CW_ENOMEM;
		b->nurls++;
		p += n;
	}
	if (!b->nurls) {
		char **v = calloc(1, sizeof(*v));
		if (!v || !(v[0] = strdup(list))) {
			free(v);
			return CW_ENOMEM;
		}
		b->urls = v;
		b->nurls = 1;
	}
	return CW_OK;
}

static char **dup_strv(char *const *v, int n)
{
	char **out = calloc((size_t)n + 1, sizeof(*out));
	for (int i = 0; out && i < n; i++)
		if (!(out[i] = strdup(v[i]))) {
			free_strv(out, i);
			return NULL;
		}
	return out;
}

static int copy_decl(struct amqp_broker *b, const struct cw_queue_decl *d)
{
	struct qdecl *v = realloc(b->decls, (size_t)(b->ndecls + 1) * sizeof(*v));
	if (!v)
		return CW_ENOMEM;
	b->decls = v;
	v = &b->decls[b->ndecls];
	*v = (struct qdecl){.name = strdup(d->name), .keys = dup_strv(d->keys, d->n),
			    .vals = dup_strv(d->vals, d->n), .n = d->n};
	b->ndecls++;
	if (v->name && v->keys && v->vals)
		return CW_OK;
	free_strv(v->keys, v->keys ? v->n : 0);
	free_strv(v->vals, v->vals ? v->n : 0);
	v->keys = v->vals = NULL;
	v->n = 0;
	return CW_ENOMEM;
}

static struct cw_broker *amqp_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				   const struct cw_broker_handler *h, struct cw_error *err)
{
	struct amqp_broker *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	b->loop = loop;
	b->h = *h;
	b->o = *o;
	b->o.ssl_ca = dup_opt(o->ssl_ca);
	b->o.ssl_cert = dup_opt(o->ssl_cert);
	b->o.ssl_key = dup_opt(o->ssl_key);
	b->o.queue_type = dup_opt(o->queue_type);
	b->o.failover_strategy = dup_opt(o->failover_strategy);
	b->o.queue_decls = NULL;
	b->fd = -1;
	b->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	b->pidbox_exclusive = o->control_exclusive;
	if (split_urls(b, o->url) != CW_OK)
		goto nomem;
	for (int i = 0; i < b->nurls; i++)
		if (use_url(b, i, err) != CW_OK)
			goto fail;
	/* round-robin starts with the first URL, shuffle anywhere */
	if (use_url(b, b->o.failover_strategy && !strcmp(b->o.failover_strategy, "shuffle") ?
		    rand_r(&b->seed) % b->nurls : 0, err) != CW_OK)
		goto fail;
	for (int i = 0; i < o->nqueue_decls; i++)
		if (copy_decl(b, &o->queue_decls[i]) != CW_OK)
			goto nomem;
	if (o->nodename)
		snprintf(b->nodename, sizeof(b->nodename), "%s", o->nodename);
	if (o->nqueues > 0) {
		b->queues = calloc((size_t)o->nqueues, sizeof(char *));
		if (!b->queues)
			goto nomem;
		for (int i = 0; i < o->nqueues; i++, b->nqueues++)
			if (!(b->queues[i] = strdup(o->queues[i])))
				goto nomem;
	}
	for (int i = 0; o->broadcast && o->broadcast[i]; i++) {
		char **v = realloc(b->broadcast, (size_t)(b->nbroadcast + 1) * sizeof(*v));
		if (!v)
			goto nomem;
		b->broadcast = v;
		if (!(v[b->nbroadcast] = strdup(o->broadcast[i])))
			goto nomem;
		b->nbroadcast++;
	}
	/* quorum queues refuse channel-wide QoS (Celery 5.5's worker_detect_quorum_queues) */
	b->qos_global = true;
	for (int i = 0; i < b->nqueues; i++)
		if (ab_queue_quorum(b, b->queues[i]))
			b->qos_global = false;
	b->o.url = NULL;
	b->o.queues = NULL;
	b->o.broadcast = NULL;
	b->o.nodename = NULL;
	/* without the hook (out of memory) every ack is sent as it comes, one frame each */
	b->acks_hooked = cw_loop_before_sleep(loop, flush_acks_hook, b) == 0;
	b->guard_timer = cw_loop_every(loop, GUARD_EVERY, guard_tick, b);
	b->retry_timer = cw_loop_timer(loop, 0, connect_now, b);
	if (!b->guard_timer || !b->retry_timer)
		goto nomem;
	return &b->base;
nomem:
	cw_error_set(err, CW_ENOMEM, "out of memory");
fail:
	cw_loop_timer_cancel(loop, b->guard_timer);
	cw_loop_timer_cancel(loop, b->retry_timer);
	broker_free(b);
	return NULL;
}

/* kombu's Connection.info() for this transport, as a Python worker's stats show it. */
static json_t *amqp_info(struct cw_broker *base)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	const struct cw_url *u = &b->given;
	char vhost[256];

	/* kombu reports the virtual host as given in the URL path, "/" when empty */
	snprintf(vhost, sizeof(vhost), "%.*s", (int)strcspn(u->path, "?"), u->path);
	if (!vhost[0])
		snprintf(vhost, sizeof(vhost), "/");
	json_t *alternates = json_array();
	for (int i = 0; b->nurls > 1 && i < b->nurls; i++) {
		char r[512];
		cw_url_redact(b->urls[i], r, sizeof(r));
		json_array_append_new(alternates, json_string(r));
	}
	return json_pack("{s:s,s:o,s:s,s:i,s:b,s:b,s:s,s:f,s:{},s:n,s:n,s:f,s:s,s:o}", "hostname",
			 u->host[0] ? u->host : "127.0.0.1", "userid",
			 u->user[0] ? json_string(u->user) : json_null(), "virtual_host", vhost,
			 "port", b->t.url.port, "insist", 0, "ssl", b->t.tls, "transport", "amqp",
			 "connect_timeout", b->t.connect_timeout, "transport_options",
			 "login_method", "uri_prefix", "heartbeat", (double)b->t.heartbeat,
			 "failover_strategy",
			 b->o.failover_strategy ? b->o.failover_strategy : "round-robin",
			 "alternates", alternates);
}

/* Every URL of a list (amqp://a;amqp://b) must be an AMQP URL. */
static int amqp_check_url(const char *url, struct cw_error *err)
{
	struct amqp_broker b = {0};
	struct cw_amqp_target t;
	int rc = split_urls(&b, url);
	for (int i = 0; rc == CW_OK && i < b.nurls; i++)
		rc = cw_amqp_target_parse(b.urls[i], false, &t, err);
	if (rc == CW_ENOMEM)
		cw_error_set(err, CW_ENOMEM, "out of memory");
	free_strv(b.urls, b.nurls);
	return rc;
}

/* amqps:// is the same transport over TLS; pyamqp:// is Celery's name for amqp:// */
static const char *const amqp_schemes[] = {"amqp", "amqps", "pyamqp", NULL};

const struct cw_broker_ops cw_amqp_broker_ops = {
	.scheme = "amqp",
	.url_schemes = amqp_schemes,
	.listed = 2,
	.check_url = amqp_check_url,
	.info = amqp_info,
	.redelivers = true,
	.open = amqp_open,
	.set_credit = set_credit,
	.set_prefetch = set_window,
	.ack = ack,
	.reject = reject,
	.restore = restore,
	.publish = ab_publish,
	.publish_fanout = ab_publish_fanout,
	.publish_direct = ab_publish_direct,
	.add_queue = add_queue,
	.cancel_queue = cancel_queue,
	.queues = queues,
	.touch = touch,
	.busy = busy,
	.connected = connected,
	.queue_depth = queue_depth,
	.close = amqp_close,
};
