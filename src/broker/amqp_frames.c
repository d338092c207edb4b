/*
 * AMQP transport, incoming frames: read without blocking from the event
 * loop, reassemble deliver + header + body frames into a kombu envelope
 * (the JSON a Redis list holds), handle the broker's methods.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "broker/amqp_int.h"
#include "broker/amqp_table.h"
#include "loop/loop.h"
#include "util/log.h"

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

uint64_t ab_parse_tag(const char *tag, uint64_t *gen)
{
	char *end;
	*gen = strtoull(tag, &end, 10);
	return *end == ':' ? strtoull(end + 1, NULL, 10) : 0;
}

void ab_reject_tag(struct amqp_broker *b, uint64_t dtag, bool requeue)
{
	if (!b->conn)
		return;
	if (amqp_basic_reject(b->conn, CH_CONSUME, dtag, requeue) != AMQP_STATUS_OK)
		ab_conn_lost(b, "cannot send basic.reject");
	else
		ab_acks_settled(&b->acks, dtag);
}

/*
 * How many times this message was delivered: a quorum queue counts failed
 * deliveries in x-delivery-count (absent the first time), so a message
 * requeued many times is recognised; classic queues only have the
 * redelivered flag.
 */
static long deliveries(const struct inmsg *m, const struct cw_envelope *env)
{
	json_t *n = json_object_get(env->headers, "x-delivery-count");
	long seen = m->redelivered ? 2 : 1;
	if (json_is_integer(n) && json_integer_value(n) >= 0 &&
	    json_integer_value(n) < 1000000000 && json_integer_value(n) + 1 > seen)
		seen = (long)json_integer_value(n) + 1;
	return seen;
}

/* A whole message is here: turn it into a kombu envelope and hand it over. */
static void in_complete(struct amqp_broker *b)
{
	struct inmsg *m = &b->in;
	struct cw_error err = {0};
	char tagbuf[64], *text = NULL;
	size_t tlen = 0, blen = 0;
	json_t *env = m->props;
	bool bcast = m->bcast;
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
			ab_reject_tag(b, dtag, true);
		ab_in_reset(m);
		return;
	}
	json_object_set_new(props, "delivery_info", di);
	json_object_set_new(props, "delivery_tag", json_string(tagbuf));
	json_object_set_new(env, "body", json_stringn(body64, blen));
	free(body64);
	/*
	 * The envelope is built, not parsed: it is adopted as it is, with the
	 * payload bytes as they came.  Only a task's needs its text (the pool
	 * child reads it).
	 */
	unsigned char *body = (unsigned char *)m->body;
	size_t body_len = m->len;
	m->body = NULL;

	if (bcast) {
		struct cw_envelope e;
		if (cw_proto_adopt_envelope(env, body, body_len, &e, &err) == CW_OK) {
			if (b->h.on_broadcast)
				b->h.on_broadcast(b->h.arg, m->exchange ? m->exchange : "", &e);
			cw_envelope_clear(&e);
		} else {
			cw_log(CW_LOG_ERROR, "broker", "dropped undecodable broadcast on %s: %s",
			       m->exchange ? m->exchange : "?", err.msg);
		}
		ab_in_reset(m);
		return;
	}

	text = cw_json_dumps(env, &tlen);
	struct cw_delivery *d = calloc(1, sizeof(*d));
	const char *queue = m->ctag + strlen(CTAG_PREFIX);
	if (!d || !text || !(d->queue = strdup(queue)) || !(d->tag = strdup(tagbuf))) {
		cw_log(CW_LOG_ERROR, "broker", "out of memory taking a message; requeued");
		json_decref(env);
		free(body);
		ab_reject_tag(b, dtag, true);
		goto out;
	}
	if (cw_proto_adopt_envelope(env, body, body_len, &d->env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message from queue %s (%zu bytes): %s", queue,
		       m->len, err.msg);
		ab_reject_tag(b, dtag, false);
		goto out;
	}
	d->raw = text;
	d->raw_len = tlen;
	text = NULL;
	d->deliveries = deliveries(m, &d->env);
	ab_in_reset(m);
	b->h.on_delivery(b->h.arg, d);
	return;
out:
	free(text);
	cw_delivery_free(d);
	ab_in_reset(m);
}

static void on_method(struct amqp_broker *b, amqp_channel_t ch, amqp_method_t *mth)
{
	char msg[512];

	switch (mth->id) {
	case AMQP_BASIC_DELIVER_METHOD: {
		amqp_basic_deliver_t *d = mth->decoded;
		ab_in_reset(&b->in);
		b->in.active = true;
		b->in.ctag = bytes_dup(d->consumer_tag);
		b->in.exchange = bytes_dup(d->exchange);
		b->in.routing_key = bytes_dup(d->routing_key);
		b->in.dtag = d->delivery_tag;
		b->in.redelivered = d->redelivered;
		/* mailbox consumers take no acks (amqp_topology.c) */
		amqp_bytes_t ct = d->consumer_tag;
		size_t pl = strlen(CTAG_PREFIX "bcast-");
		b->in.bcast = ct.len >= pl && !memcmp(ct.bytes, CTAG_PREFIX "bcast-", pl);
		if (ch == CH_CONSUME) /* held until acked or rejected, unless no-ack */
			ab_acks_delivered(&b->acks, d->delivery_tag, !b->in.bcast);
		if (!b->in.ctag || !b->in.exchange || !b->in.routing_key)
			b->in.discard = true;
		return;
	}
	case AMQP_BASIC_RETURN_METHOD:
		/* an unroutable mandatory publish: its header and body follow; drop them */
		ab_in_reset(&b->in);
		b->in.active = b->in.discard = true;
		return;
	case AMQP_CHANNEL_CLOSE_METHOD: {
		amqp_channel_close_t *c = mth->decoded;
		snprintf(msg, sizeof(msg), "channel %u closed by the broker: %u %.*s", ch,
			 c->reply_code, (int)c->reply_text.len, (const char *)c->reply_text.bytes);
		if (ch == CH_PROBE) {
			/* a sampled queue does not exist (NOT_FOUND): depth 0, channel reopened */
			ab_probe_done(b, -1);
			ab_drop_probes(b);
			if (ab_reopen_channel(b, ch))
				ab_conn_lost(b, "cannot reopen the probe channel");
			return;
		}
		if (ch == CH_PUBLISH) {
			cw_log(CW_LOG_ERROR, "broker", "%s", msg);
			ab_forget_declared(b);
			if (ab_reopen_channel(b, ch))
				ab_conn_lost(b, "cannot reopen the publish channel");
			return;
		}
		amqp_channel_close_ok_t ok = {0};
		(void)amqp_send_method(b->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
		ab_conn_lost(b, msg);
		return;
	}
	case AMQP_CONNECTION_CLOSE_METHOD: {
		amqp_connection_close_t *c = mth->decoded;
		snprintf(msg, sizeof(msg), "connection closed by the broker: %u %.*s", c->reply_code,
			 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
		amqp_connection_close_ok_t ok = {0};
		(void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
		ab_conn_lost(b, msg);
		return;
	}
	case AMQP_QUEUE_DECLARE_OK_METHOD:
		if (ch == CH_PROBE)
			ab_probe_done(b, (long)((amqp_queue_declare_ok_t *)mth->decoded)->message_count);
		return;
	case AMQP_BASIC_CANCEL_METHOD:
		/* the broker cancelled a consumer (queue deleted): start over, redeclaring */
		ab_conn_lost(b, "consumer cancelled by the broker (queue deleted?)");
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
			ab_conn_lost(b, "content header without a delivery");
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
			ab_conn_lost(b, "unexpected content body frame");
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
			bool task = m->ctag && !m->bcast;
			uint64_t dtag = m->dtag;
			ab_in_reset(m);
			if (task)
				ab_reject_tag(b, dtag, false);
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
	ab_pump(b);
}

/* Read every frame available without blocking (a bounded batch per turn). */
void ab_pump(struct amqp_broker *b)
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
			ab_conn_lost(b, amqp_error_string2(st));
			return;
		}
		on_frame(b, &f);
	}
	/* more frames may wait in rabbitmq-c's buffer, where epoll cannot see them */
	if (b->conn && !b->pump_timer &&
	    !(b->pump_timer = cw_loop_timer(b->loop, 0, pump_later, b)))
		cw_log(CW_LOG_ERROR, "broker", "cannot arm a timer (out of memory): buffered frames "
		       "wait for new data or the next heartbeat tick");
}

