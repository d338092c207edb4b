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
 *    concurrency x prefetch_multiplier plus held ETA/rate-limited messages.
 *
 * Channel 1 consumes and acks; channel 2 declares and publishes, so a
 * refused publish (a queue declared with other arguments) never costs the
 * deliveries.  Setup RPCs are synchronous (loopback/LAN round trips, bounded
 * by the RPC timeout); everything afterwards is driven by the event loop:
 * frames are read without blocking and reassembled here.
 *
 * A delivery tag is only valid on the connection that delivered it, so a
 * delivery's tag string carries the connection generation: acks and rejects
 * of older generations are dropped (RabbitMQ requeued those messages when
 * the connection died).  Deliveries are handed to the consumer as kombu
 * envelopes (the same JSON a Redis list holds) so everything above the
 * transport is shared.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>

#include "broker/amqp_conn.h"
#include "broker/amqp_table.h"
#include "broker/broker.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

#define CH_CONSUME 1
#define CH_PUBLISH 2
#define CH_PROBE 3      /* passive queue.declare for queue depth samples */
#define MAX_PROBES 64
#define FRAME_MAX 131072
#define RPC_TIMEOUT 10.0
#define PUMP_BATCH 256
#define MAX_PENDING 100000
#define BACKOFF_MAX 8.0
#define PIDBOX_EXPIRES_MS 10000  /* control_queue_expires = 10.0 s */
#define PIDBOX_TTL_MS 300000     /* control_queue_ttl = 300.0 s */
#define CTAG_PREFIX "cw-"

/* A task publish waiting for the connection. */
struct pend {
	struct pend *next;
	char *queue, *raw;
	size_t len;
	int priority;
};

/* The message being reassembled from deliver + header + body frames. */
struct inmsg {
	bool active, discard;
	bool have_header;
	char *ctag, *exchange, *routing_key;
	uint64_t dtag;
	bool redelivered;
	json_t *props;        /* kombu-style properties + headers, from the header frame */
	char *body;
	size_t len, want;
};

struct amqp_broker {
	struct cw_broker base;
	struct cw_loop *loop;
	struct cw_broker_handler h;
	struct cw_broker_opts o;   /* strings below are our copies */
	struct cw_amqp_target t;  /* where and how to connect (TLS files point into o) */
	char redacted[512];
	char **queues;
	int nqueues;
	char **broadcast;
	int nbroadcast;
	char nodename[256];

	amqp_connection_state_t conn;
	int fd;
	bool up;
	uint64_t gen;             /* connection generation (delivery tag prefix) */
	double backoff;
	uint64_t retry_timer, hb_timer, pump_timer, down_timer;
	int window;               /* prefetch window the consumer wants; 0 = stopped */
	int qos_sent;             /* last basic.qos prefetch_count sent on this connection */
	bool consuming;
	bool closing;
	struct inmsg in;
	struct pend *pend_head, *pend_tail;
	int npend;
	char **declared;          /* queues declared on this connection */
	int ndeclared;
	/* queue depth samples in flight on CH_PROBE, answered in order */
	struct probe {
		char *queue;
		void (*cb)(void *arg, const char *queue, long depth);
		void *arg;
	} probes[MAX_PROBES];
	int nprobes;
};

static void conn_lost(struct amqp_broker *b, const char *why);
static void pump(struct amqp_broker *b);
static int start_consuming(struct amqp_broker *b);

static amqp_bytes_t cstr(const char *s)
{
	return amqp_cstring_bytes(s ? s : "");
}

/* ---- errors ------------------------------------------------------------ */

/* Text for an RPC reply; sends the close-ok the server expects after a close. */
static void rpc_error(struct amqp_broker *b, amqp_rpc_reply_t r, char *out, size_t outsz)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		snprintf(out, outsz, "ok");
		return;
	case AMQP_RESPONSE_NONE:
		snprintf(out, outsz, "missing RPC reply");
		return;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(out, outsz, "%s", amqp_error_string2(r.library_error));
		return;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *m = r.reply.decoded;
			snprintf(out, outsz, "connection closed by the broker: %u %.*s", m->reply_code,
				 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
			amqp_connection_close_ok_t ok = {0};
			(void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *m = r.reply.decoded;
			snprintf(out, outsz, "channel closed by the broker: %u %.*s", m->reply_code,
				 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
		} else {
			snprintf(out, outsz, "unexpected broker method 0x%08x", r.reply.id);
		}
		return;
	}
	snprintf(out, outsz, "unknown RPC outcome");
}

/* After a refused RPC on channel ch: acknowledge the close and reopen the channel. */
static int reopen_channel(struct amqp_broker *b, amqp_channel_t ch)
{
	amqp_channel_close_ok_t ok = {0};
	if (amqp_send_method(b->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
		return -1;
	amqp_channel_open(b->conn, ch);
	return amqp_get_rpc_reply(b->conn).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

/*
 * Check the last RPC; on failure log it and, for a channel-level refusal on
 * the publish channel, reopen that channel.  Returns 0 when it succeeded.
 */
static int rpc_ok(struct amqp_broker *b, amqp_channel_t ch, const char *what, const char *name)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
	char msg[512];
	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return 0;
	rpc_error(b, r, msg, sizeof(msg));
	cw_log(CW_LOG_ERROR, "broker", "%s %s on %s: %s", what, name, b->redacted, msg);
	/* a refused declaration closes only its channel: reopen it (publish and probe channels) */
	if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
	    ch != CH_CONSUME && reopen_channel(b, ch) == 0)
		return -1;
	/* the consuming channel (its deliveries are gone with it) or the connection: start over */
	if (b->up)
		conn_lost(b, msg);
	return -1;
}

/* ---- topology ---------------------------------------------------------- */

static bool declared(struct amqp_broker *b, const char *queue)
{
	for (int i = 0; i < b->ndeclared; i++)
		if (!strcmp(b->declared[i], queue))
			return true;
	return false;
}

static void forget_declared(struct amqp_broker *b)
{
	for (int i = 0; i < b->ndeclared; i++)
		free(b->declared[i]);
	free(b->declared);
	b->declared = NULL;
	b->ndeclared = 0;
}

/* Queue Q, its direct exchange Q, binding Q: what Celery declares for -Q Q. */
static int declare_task_queue(struct amqp_broker *b, const char *q)
{
	amqp_table_entry_t arg;
	amqp_table_t args = {0, NULL};

	if (declared(b, q))
		return 0;
	if (b->o.max_priority > 0) {
		arg.key = amqp_cstring_bytes("x-max-priority");
		arg.value.kind = AMQP_FIELD_KIND_I32;
		arg.value.value.i32 = b->o.max_priority;
		args.num_entries = 1;
		args.entries = &arg;
	}
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr(q), cstr("direct"), 0, 1, 0, 0,
			      amqp_empty_table);
	if (rpc_ok(b, CH_PUBLISH, "declaring exchange", q))
		return -1;
	amqp_queue_declare(b->conn, CH_PUBLISH, cstr(q), 0, 1, 0, 0, args);
	if (rpc_ok(b, CH_PUBLISH, "declaring queue", q))
		return -1;
	amqp_queue_bind(b->conn, CH_PUBLISH, cstr(q), cstr(q), cstr(q), amqp_empty_table);
	if (rpc_ok(b, CH_PUBLISH, "binding queue", q))
		return -1;
	char **d = realloc(b->declared, (size_t)(b->ndeclared + 1) * sizeof(*d));
	if (d) {
		b->declared = d;
		if ((d[b->ndeclared] = strdup(q)))
			b->ndeclared++;
	}
	return 0;
}

static int declare_topology(struct amqp_broker *b)
{
	for (int i = 0; i < b->nqueues; i++)
		if (declare_task_queue(b, b->queues[i]))
			return -1;
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr("celeryev"), cstr("topic"), 0, 1, 0, 0,
			      amqp_empty_table);
	if (rpc_ok(b, CH_PUBLISH, "declaring exchange", "celeryev"))
		return -1;
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr("reply.celery.pidbox"), cstr("direct"), 0,
			      0, 0, 0, amqp_empty_table);
	if (rpc_ok(b, CH_PUBLISH, "declaring exchange", "reply.celery.pidbox"))
		return -1;
	for (int i = 0; i < b->nbroadcast && b->nodename[0]; i++) {
		char qname[512];
		amqp_table_entry_t e[2];
		amqp_table_t args = {2, e};
		e[0].key = amqp_cstring_bytes("x-expires");
		e[0].value.kind = AMQP_FIELD_KIND_I32;
		e[0].value.value.i32 = PIDBOX_EXPIRES_MS;
		e[1].key = amqp_cstring_bytes("x-message-ttl");
		e[1].value.kind = AMQP_FIELD_KIND_I32;
		e[1].value.value.i32 = PIDBOX_TTL_MS;
		snprintf(qname, sizeof(qname), "%s.%s", b->nodename, b->broadcast[i]);
		amqp_exchange_declare(b->conn, CH_PUBLISH, cstr(b->broadcast[i]), cstr("fanout"), 0, 0,
				      0, 0, amqp_empty_table);
		if (rpc_ok(b, CH_PUBLISH, "declaring exchange", b->broadcast[i]))
			return -1;
		amqp_queue_declare(b->conn, CH_PUBLISH, cstr(qname), 0, 0, 0, 1, args);
		if (rpc_ok(b, CH_PUBLISH, "declaring queue", qname))
			return -1;
		amqp_queue_bind(b->conn, CH_PUBLISH, cstr(qname), cstr(b->broadcast[i]), cstr(""),
				amqp_empty_table);
		if (rpc_ok(b, CH_PUBLISH, "binding queue", qname))
			return -1;
		/* mailbox messages are consumed without acks, like kombu's pidbox Node */
		char ctag[600];
		snprintf(ctag, sizeof(ctag), "%sbcast-%s", CTAG_PREFIX, b->broadcast[i]);
		amqp_basic_consume(b->conn, CH_CONSUME, cstr(qname), cstr(ctag), 0, 1, 0,
				   amqp_empty_table);
		if (rpc_ok(b, CH_CONSUME, "consuming", qname))
			return -1;
	}
	return 0;
}

/* ---- connection -------------------------------------------------------- */

static void on_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	(void)loop;
	(void)fd;
	(void)ev;
	pump(arg);
}

static void hb_tick(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	b->hb_timer = 0;
	if (!b->conn)
		return;
	pump(b); /* rabbitmq-c sends due heartbeats and notices missed ones while reading */
	if (b->conn && !b->hb_timer) {
		double every = b->o.heartbeat > 0 ? b->o.heartbeat / 4.0 : 5.0;
		b->hb_timer = cw_loop_timer(loop, every < 0.5 ? 0.5 : every, hb_tick, b);
	}
}

static void connect_now(struct cw_loop *loop, void *arg);

static void schedule_retry(struct amqp_broker *b)
{
	if (b->closing || b->retry_timer)
		return;
	b->backoff = b->backoff <= 0 ? 0.5 : (b->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : b->backoff * 2);
	b->retry_timer = cw_loop_timer(b->loop, b->backoff, connect_now, b);
}

static void in_reset(struct inmsg *m)
{
	free(m->ctag);
	free(m->exchange);
	free(m->routing_key);
	free(m->body);
	json_decref(m->props);
	memset(m, 0, sizeof(*m));
}

static void drop_probes(struct amqp_broker *b)
{
	for (int i = 0; i < b->nprobes; i++)
		free(b->probes[i].queue);
	b->nprobes = 0;
}

/* The oldest probe got its answer (depth < 0: the queue does not exist). */
static void probe_done(struct amqp_broker *b, long depth)
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
	in_reset(&b->in);
	forget_declared(b);
	drop_probes(b);
}

static void notify_down(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	(void)loop;
	b->down_timer = 0;
	if (b->h.on_state)
		b->h.on_state(b->h.arg, false);
}

static void conn_lost(struct amqp_broker *b, const char *why)
{
	bool was_up = b->up;
	teardown(b);
	b->up = false;
	if (was_up) {
		cw_log(CW_LOG_WARNING, "broker", "Connection to broker lost (%s): %s; reconnecting",
		       b->redacted, why);
		/* told from a timer: the consumer may be iterating its messages right now */
		if (!b->down_timer)
			b->down_timer = cw_loop_timer(b->loop, 0, notify_down, b);
	}
	schedule_retry(b);
}

static void flush_pending(struct amqp_broker *b);

static void connect_now(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	struct cw_error err = {0};

	b->retry_timer = 0;
	if (b->closing || b->conn)
		return;
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
	if (rpc_ok(b, CH_CONSUME, "opening channel", "1"))
		goto fail;
	amqp_channel_open(b->conn, CH_PUBLISH);
	if (rpc_ok(b, CH_PUBLISH, "opening channel", "2"))
		goto fail;
	amqp_channel_open(b->conn, CH_PROBE);
	if (rpc_ok(b, CH_PROBE, "opening channel", "3"))
		goto fail;
	if (declare_topology(b))
		goto fail;
	b->fd = amqp_get_sockfd(b->conn);
	if (b->fd < 0 || cw_loop_watch(loop, b->fd, CW_READ, on_io, b) != 0)
		goto fail;
	b->gen++;
	b->up = true;
	b->backoff = 0;
	cw_log(CW_LOG_INFO, "broker", "Connected to %s", b->redacted);
	if (b->window > 0 && start_consuming(b))
		goto lost;
	flush_pending(b);
	if (!b->conn)
		return;
	hb_tick(loop, b);
	if (b->h.on_state && b->up)
		b->h.on_state(b->h.arg, true);
	if (b->conn)
		pump(b); /* frames that arrived during setup RPCs are queued inside rabbitmq-c */
	return;
lost:
	conn_lost(b, "setup failed");
	return;
fail:
	teardown(b);
	schedule_retry(b);
}

/* ---- flow control ------------------------------------------------------ */

static int send_qos(struct amqp_broker *b, int n)
{
	amqp_basic_qos_t m = {.prefetch_size = 0,
			      .prefetch_count = (uint16_t)(n > 65535 ? 65535 : n),
			      .global = 1};
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
	return rpc_ok(b, CH_CONSUME, "consuming", q);
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
	for (int i = 0; i < b->nqueues; i++)
		if (consume_queue(b, b->queues[i]))
			return -1;
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
				if (cancel_queue_consumer(b, b->queues[i])) {
					conn_lost(b, "cannot cancel consumers");
					return;
				}
			b->consuming = false;
		}
		return;
	}
	if (!b->consuming) {
		if (start_consuming(b))
			conn_lost(b, "cannot start consuming");
		return;
	}
	if (send_qos(b, b->window))
		conn_lost(b, "cannot send basic.qos");
}

static void set_credit(struct cw_broker *base, int n)
{
	/* AMQP flow control is the prefetch window (set_prefetch); credit is informational */
	(void)base;
	(void)n;
}

/* ---- incoming messages ------------------------------------------------- */

static char *bytes_dup(amqp_bytes_t b)
{
	char *s = malloc(b.len + 1);
	if (s) {
		if (b.len)
			memcpy(s, b.bytes, b.len);
		s[b.len] = '\0';
	}
	return s;
}

static void set_str(json_t *obj, const char *key, amqp_bytes_t v)
{
	json_t *s = json_stringn(v.len ? (const char *)v.bytes : "", v.len);
	if (s)
		json_object_set_new(obj, key, s);
}

/* {"content-type", "content-encoding", "headers", "properties"} from a header frame. */
static json_t *props_json(struct amqp_broker *b, const amqp_basic_properties_t *p,
			  struct cw_error *err)
{
	json_t *o = json_object(), *props = json_object(), *headers = NULL;
	if (!o || !props)
		goto fail;
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
		headers = cw_amqp_table_to_json(&p->headers, b->o.limits.max_depth, err);
		if (!headers)
			goto fail;
	} else {
		headers = json_object();
	}
	json_object_set_new(o, "headers", headers);
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
		set_str(o, "content-type", p->content_type);
	if (p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG)
		set_str(o, "content-encoding", p->content_encoding);
	if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
		set_str(props, "correlation_id", p->correlation_id);
	if (p->_flags & AMQP_BASIC_REPLY_TO_FLAG)
		set_str(props, "reply_to", p->reply_to);
	if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
		json_object_set_new(props, "priority", json_integer(p->priority));
	if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
		json_object_set_new(props, "delivery_mode", json_integer(p->delivery_mode));
	json_object_set_new(props, "body_encoding", json_string("base64"));
	json_object_set_new(o, "properties", props);
	return o;
fail:
	json_decref(o);
	json_decref(props);
	if (err && !err->code)
		cw_error_set(err, CW_ENOMEM, "out of memory");
	return NULL;
}

static uint64_t parse_tag(const char *tag, uint64_t *gen)
{
	char *end;
	*gen = strtoull(tag, &end, 10);
	return *end == ':' ? strtoull(end + 1, NULL, 10) : 0;
}

static void reject_tag(struct amqp_broker *b, uint64_t dtag, bool requeue)
{
	if (b->conn && amqp_basic_reject(b->conn, CH_CONSUME, dtag, requeue) != AMQP_STATUS_OK)
		conn_lost(b, "cannot send basic.reject");
}

/* A whole message is here: turn it into a kombu envelope and hand it over. */
static void in_complete(struct amqp_broker *b)
{
	struct inmsg *m = &b->in;
	struct cw_error err = {0};
	char tagbuf[64], *text = NULL;
	size_t tlen = 0, blen = 0;
	json_t *env = m->props;
	bool bcast = !strncmp(m->ctag, CTAG_PREFIX "bcast-", strlen(CTAG_PREFIX "bcast-"));
	uint64_t dtag = m->dtag;

	m->props = NULL;
	snprintf(tagbuf, sizeof(tagbuf), "%" PRIu64 ":%" PRIu64, b->gen, dtag);
	char *body64 = cw_base64_encode((const unsigned char *)(m->body ? m->body : ""), m->len, &blen);
	json_t *props = json_object_get(env, "properties");
	json_t *di = json_pack("{s:s,s:s,s:b}", "exchange", m->exchange ? m->exchange : "",
			       "routing_key", m->routing_key ? m->routing_key : "",
			       "redelivered", m->redelivered);
	if (!body64 || !di || !props) {
		free(body64);
		json_decref(di);
		json_decref(env);
		cw_log(CW_LOG_ERROR, "broker", "out of memory taking a message; requeued");
		if (!bcast)
			reject_tag(b, dtag, true);
		in_reset(m);
		return;
	}
	json_object_set_new(props, "delivery_info", di);
	json_object_set_new(props, "delivery_tag", json_string(tagbuf));
	json_object_set_new(env, "body", json_stringn(body64, blen));
	free(body64);
	text = cw_json_dumps(env, &tlen);
	json_decref(env);

	if (bcast) {
		struct cw_envelope e;
		if (text && cw_proto_decode_envelope(text, tlen, &b->o.limits, &e, &err) == CW_OK) {
			if (b->h.on_broadcast)
				b->h.on_broadcast(b->h.arg, m->exchange ? m->exchange : "", &e);
			cw_envelope_clear(&e);
		} else {
			cw_log(CW_LOG_ERROR, "broker", "dropped undecodable broadcast on %s: %s",
			       m->exchange ? m->exchange : "?", text ? err.msg : "out of memory");
		}
		free(text);
		in_reset(m);
		return;
	}

	struct cw_delivery *d = calloc(1, sizeof(*d));
	const char *queue = m->ctag + strlen(CTAG_PREFIX);
	if (!d || !text || !(d->queue = strdup(queue)) || !(d->tag = strdup(tagbuf))) {
		cw_log(CW_LOG_ERROR, "broker", "out of memory taking a message; requeued");
		reject_tag(b, dtag, true);
		goto out;
	}
	if (cw_proto_decode_envelope(text, tlen, &b->o.limits, &d->env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message from queue %s (%zu bytes): %s", queue,
		       m->len, err.msg);
		reject_tag(b, dtag, false);
		goto out;
	}
	d->raw = text;
	d->raw_len = tlen;
	text = NULL;
	d->deliveries = m->redelivered ? 2 : 1;
	in_reset(m);
	b->h.on_delivery(b->h.arg, d);
	return;
out:
	free(text);
	cw_delivery_free(d);
	in_reset(m);
}

static void on_method(struct amqp_broker *b, amqp_channel_t ch, amqp_method_t *mth)
{
	char msg[512];

	switch (mth->id) {
	case AMQP_BASIC_DELIVER_METHOD: {
		amqp_basic_deliver_t *d = mth->decoded;
		in_reset(&b->in);
		b->in.active = true;
		b->in.ctag = bytes_dup(d->consumer_tag);
		b->in.exchange = bytes_dup(d->exchange);
		b->in.routing_key = bytes_dup(d->routing_key);
		b->in.dtag = d->delivery_tag;
		b->in.redelivered = d->redelivered;
		if (!b->in.ctag || !b->in.exchange || !b->in.routing_key)
			b->in.discard = true;
		return;
	}
	case AMQP_BASIC_RETURN_METHOD:
		/* an unroutable mandatory publish: its header and body follow; drop them */
		in_reset(&b->in);
		b->in.active = b->in.discard = true;
		return;
	case AMQP_CHANNEL_CLOSE_METHOD: {
		amqp_channel_close_t *c = mth->decoded;
		snprintf(msg, sizeof(msg), "channel %u closed by the broker: %u %.*s", ch,
			 c->reply_code, (int)c->reply_text.len, (const char *)c->reply_text.bytes);
		if (ch == CH_PROBE) {
			/* a sampled queue does not exist (NOT_FOUND): depth 0, channel reopened */
			probe_done(b, -1);
			drop_probes(b);
			if (reopen_channel(b, ch))
				conn_lost(b, "cannot reopen the probe channel");
			return;
		}
		if (ch == CH_PUBLISH) {
			cw_log(CW_LOG_ERROR, "broker", "%s", msg);
			forget_declared(b);
			if (reopen_channel(b, ch))
				conn_lost(b, "cannot reopen the publish channel");
			return;
		}
		amqp_channel_close_ok_t ok = {0};
		(void)amqp_send_method(b->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
		conn_lost(b, msg);
		return;
	}
	case AMQP_CONNECTION_CLOSE_METHOD: {
		amqp_connection_close_t *c = mth->decoded;
		snprintf(msg, sizeof(msg), "connection closed by the broker: %u %.*s", c->reply_code,
			 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
		amqp_connection_close_ok_t ok = {0};
		(void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		conn_lost(b, msg);
		return;
	}
	case AMQP_QUEUE_DECLARE_OK_METHOD:
		if (ch == CH_PROBE)
			probe_done(b, (long)((amqp_queue_declare_ok_t *)mth->decoded)->message_count);
		return;
	case AMQP_BASIC_CANCEL_METHOD:
		/* the broker cancelled a consumer (queue deleted): start over, redeclaring */
		conn_lost(b, "consumer cancelled by the broker (queue deleted?)");
		return;
	default:
		return; /* qos-ok, cancel-ok, consume-ok, ... */
	}
}

static void on_frame(struct amqp_broker *b, amqp_frame_t *f)
{
	struct inmsg *m = &b->in;
	struct cw_error err = {0};

	switch (f->frame_type) {
	case AMQP_FRAME_METHOD:
		on_method(b, f->channel, &f->payload.method);
		return;
	case AMQP_FRAME_HEADER:
		if (!m->active || m->have_header) {
			conn_lost(b, "content header without a delivery");
			return;
		}
		m->have_header = true;
		m->want = (size_t)f->payload.properties.body_size;
		if (f->payload.properties.body_size > b->o.limits.max_message) {
			cw_log(CW_LOG_ERROR, "consumer",
			       "Received and deleted a message of %" PRIu64 " bytes (limit %zu)",
			       (uint64_t)f->payload.properties.body_size, b->o.limits.max_message);
			m->discard = true;
		}
		if (!m->discard) {
			m->props = props_json(b, f->payload.properties.decoded, &err);
			m->body = malloc(m->want + 1);
			if (!m->props || !m->body) {
				cw_log(CW_LOG_ERROR, "consumer",
				       "Received and deleted a message with unusable properties: %s",
				       err.code ? err.msg : "out of memory");
				m->discard = true;
			}
		}
		break;
	case AMQP_FRAME_BODY: {
		size_t n = f->payload.body_fragment.len;
		if (!m->active || !m->have_header || n > m->want - m->len) {
			conn_lost(b, "unexpected content body frame");
			return;
		}
		if (!m->discard)
			memcpy(m->body + m->len, f->payload.body_fragment.bytes, n);
		m->len += n;
		break;
	}
	default:
		return;
	}
	if (m->active && m->have_header && m->len == m->want) {
		if (m->discard) {
			bool task = m->ctag && strncmp(m->ctag, CTAG_PREFIX "bcast-",
						       strlen(CTAG_PREFIX "bcast-"));
			uint64_t dtag = m->dtag;
			in_reset(m);
			if (task)
				reject_tag(b, dtag, false);
			return;
		}
		in_complete(b);
	}
}

static void pump_later(struct cw_loop *loop, void *arg)
{
	struct amqp_broker *b = arg;
	(void)loop;
	b->pump_timer = 0;
	pump(b);
}

/* Read every frame available without blocking (a bounded batch per turn). */
static void pump(struct amqp_broker *b)
{
	for (int n = 0; n < PUMP_BATCH && b->conn; n++) {
		amqp_frame_t f;
		struct timeval zero = {0, 0};
		int st = amqp_simple_wait_frame_noblock(b->conn, &f, &zero);
		if (st == AMQP_STATUS_TIMEOUT) {
			amqp_maybe_release_buffers(b->conn);
			return;
		}
		if (st != AMQP_STATUS_OK) {
			conn_lost(b, amqp_error_string2(st));
			return;
		}
		on_frame(b, &f);
	}
	if (b->conn && !b->pump_timer)
		b->pump_timer = cw_loop_timer(b->loop, 0, pump_later, b);
}

/* ---- acks -------------------------------------------------------------- */

/* The channel-local tag of d, or 0 when d came over an earlier connection. */
static uint64_t live_tag(struct amqp_broker *b, const struct cw_delivery *d)
{
	uint64_t gen, tag = d->tag ? parse_tag(d->tag, &gen) : 0;
	if (!tag || !b->up || gen != b->gen) {
		cw_log(CW_LOG_DEBUG, "broker", "delivery %s is from an earlier connection: the "
		       "broker already requeued it", d->tag ? d->tag : "?");
		return 0;
	}
	return tag;
}

static void ack(struct cw_broker *base, struct cw_delivery *d)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	uint64_t tag = live_tag(b, d);
	if (tag && amqp_basic_ack(b->conn, CH_CONSUME, tag, 0) != AMQP_STATUS_OK)
		conn_lost(b, "cannot send basic.ack");
}

static void reject(struct cw_broker *base, struct cw_delivery *d, bool requeue)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	uint64_t tag = live_tag(b, d);
	if (tag)
		reject_tag(b, tag, requeue);
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

/* ---- publishing -------------------------------------------------------- */

/*
 * Publish a kombu envelope (what the encoder builds for Redis lists) as an
 * AMQP message: properties and headers from the envelope, the decoded body.
 */
static int publish_env(struct amqp_broker *b, const char *exchange, const char *rk,
		       const char *raw, size_t len, int priority, int dflt_mode)
{
	struct cw_envelope env;
	struct cw_error err = {0};
	amqp_pool_t pool;
	amqp_basic_properties_t p;
	int rc = 0;

	if (cw_proto_decode_envelope(raw, len, &b->o.limits, &env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "broker", "not publishing a malformed message to %s/%s: %s",
		       exchange, rk, err.msg);
		return 0;
	}
	init_amqp_pool(&pool, 4096);
	memset(&p, 0, sizeof(p));
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
		   AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
	p.content_type = cstr(env.content_type);
	p.content_encoding = cstr(env.content_encoding);
	json_t *dm = json_object_get(env.properties, "delivery_mode");
	p.delivery_mode = json_is_integer(dm) ? (uint8_t)json_integer_value(dm) : (uint8_t)dflt_mode;
	if (env.correlation_id) {
		p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
		p.correlation_id = cstr(env.correlation_id);
	}
	if (env.reply_to) {
		p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
		p.reply_to = cstr(env.reply_to);
	}
	if (priority > 0 || env.priority > 0) {
		p._flags |= AMQP_BASIC_PRIORITY_FLAG;
		p.priority = (uint8_t)(priority > 0 ? priority : env.priority);
	}
	if (cw_amqp_table_from_json(env.headers, &pool, &p.headers, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "broker", "not publishing to %s/%s: headers: %s", exchange, rk,
		       err.msg);
	} else {
		amqp_bytes_t body = {env.body_len, env.body};
		if (amqp_basic_publish(b->conn, CH_PUBLISH, cstr(exchange), cstr(rk), 0, 0, &p,
				       body) != AMQP_STATUS_OK)
			rc = -1;
	}
	empty_amqp_pool(&pool);
	cw_envelope_clear(&env);
	return rc;
}

static int publish_task(struct amqp_broker *b, const char *queue, int priority, const char *raw,
			size_t len)
{
	if (declare_task_queue(b, queue))
		return b->conn ? 0 : -1; /* refused (logged); dropped, as kombu raises */
	return publish_env(b, "", queue, raw, len, priority, 2);
}

static void pend_pop(struct amqp_broker *b)
{
	struct pend *p = b->pend_head;
	b->pend_head = p->next;
	if (!b->pend_head)
		b->pend_tail = NULL;
	b->npend--;
	free(p->queue);
	free(p->raw);
	free(p);
}

static void flush_pending(struct amqp_broker *b)
{
	while (b->pend_head && b->up) {
		struct pend *p = b->pend_head;
		if (publish_task(b, p->queue, p->priority, p->raw, p->len)) {
			conn_lost(b, "publish failed");
			return;
		}
		pend_pop(b);
	}
}

static void publish(struct cw_broker *base, const char *queue, int priority, const char *tag,
		    const char *raw, size_t len)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	(void)tag;
	if (b->up && !b->pend_head) {
		if (publish_task(b, queue, priority, raw, len) == 0)
			return;
		conn_lost(b, "publish failed");
	}
	if (b->npend >= MAX_PENDING) {
		cw_log(CW_LOG_ERROR, "broker", "broker unreachable and %d messages waiting: dropping "
		       "a message for %s", b->npend, queue);
		return;
	}
	struct pend *p = calloc(1, sizeof(*p));
	if (!p || !(p->queue = strdup(queue)) || !(p->raw = malloc(len + 1))) {
		if (p)
			free(p->queue);
		free(p);
		cw_log(CW_LOG_ERROR, "broker", "out of memory queueing a message for %s", queue);
		return;
	}
	memcpy(p->raw, raw, len);
	p->raw[len] = '\0';
	p->len = len;
	p->priority = priority;
	if (b->pend_tail)
		b->pend_tail->next = p;
	else
		b->pend_head = p;
	b->pend_tail = p;
	b->npend++;
}

static void publish_fanout(struct cw_broker *base, const char *exchange, const char *routing_key,
			   const char *raw, size_t len)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	if (b->up && publish_env(b, exchange, routing_key, raw, len, 0, 1))
		conn_lost(b, "publish failed");
}

static void publish_direct(struct cw_broker *base, const char *exchange, const char *routing_key,
			   const char *raw, size_t len, int expire)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	(void)expire; /* reply queues carry their own x-expires on RabbitMQ */
	if (b->up && publish_env(b, exchange, routing_key, raw, len, 0, 1))
		conn_lost(b, "publish failed");
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
	if (b->up && declare_task_queue(b, queue) == 0 && b->up && b->consuming)
		(void)consume_queue(b, queue);
	return CW_OK;
}

static int cancel_queue(struct cw_broker *base, const char *queue)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	for (int i = 0; i < b->nqueues; i++) {
		if (strcmp(b->queues[i], queue))
			continue;
		if (b->up && b->consuming && cancel_queue_consumer(b, queue))
			conn_lost(b, "cannot cancel a consumer");
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
		conn_lost(b, "cannot send queue.declare");
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
	free((char *)b->o.ssl_ca);
	free((char *)b->o.ssl_cert);
	free((char *)b->o.ssl_key);
	while (b->pend_head)
		pend_pop(b);
	free(b);
}

static void amqp_close(struct cw_broker *base)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	b->closing = true;
	if (b->retry_timer)
		cw_loop_timer_cancel(b->loop, b->retry_timer);
	if (b->down_timer)
		cw_loop_timer_cancel(b->loop, b->down_timer);
	if (b->pend_head)
		cw_log(CW_LOG_WARNING, "broker", "%d messages could not be published before exit",
		       b->npend);
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
	b->fd = -1;
	if (cw_amqp_target_parse(o->url, o->ssl, &b->t, err) != CW_OK)
		goto fail;
	b->t.verify = o->ssl_verify;
	b->t.ca = b->o.ssl_ca;
	b->t.cert = b->o.ssl_cert;
	b->t.key = b->o.ssl_key;
	b->t.heartbeat = o->heartbeat;
	b->t.connect_timeout = o->connect_timeout;
	snprintf(b->redacted, sizeof(b->redacted), "%s", b->t.redacted);
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
	b->o.url = NULL;
	b->o.queues = NULL;
	b->o.broadcast = NULL;
	b->o.nodename = NULL;
	b->retry_timer = cw_loop_timer(loop, 0, connect_now, b);
	if (!b->retry_timer)
		goto nomem;
	return &b->base;
nomem:
	cw_error_set(err, CW_ENOMEM, "out of memory");
fail:
	broker_free(b);
	return NULL;
}

const struct cw_broker_ops cw_amqp_broker_ops = {
	.scheme = "amqp",
	.redelivers = true,
	.open = amqp_open,
	.set_credit = set_credit,
	.set_prefetch = set_window,
	.ack = ack,
	.reject = reject,
	.restore = restore,
	.publish = publish,
	.publish_fanout = publish_fanout,
	.publish_direct = publish_direct,
	.add_queue = add_queue,
	.cancel_queue = cancel_queue,
	.queues = queues,
	.touch = touch,
	.busy = busy,
	.connected = connected,
	.queue_depth = queue_depth,
	.close = amqp_close,
};
