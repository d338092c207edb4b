/*
 * AMQP transport, publishing: kombu envelopes out as AMQP messages; task
 * publishes wait in order while the broker is away (events and replies,
 * transient, are dropped).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/amqp_int.h"
#include "broker/amqp_table.h"
#include "util/log.h"

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
	int rc = ab_declare_task_queue(b, queue);
	if (rc == AB_REFUSED)
		cw_log(CW_LOG_ERROR, "broker", "not publishing to %s: its declaration was refused "
		       "(see above); message dropped", queue);
	if (rc)
		return b->conn ? 0 : -1; /* refused (logged); dropped, as kombu raises */
	return publish_env(b, "", queue, raw, len, priority, 2);
}

void ab_pend_pop(struct amqp_broker *b)
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

void ab_flush_pending(struct amqp_broker *b)
{
	while (b->pend_head && b->up) {
		struct pend *p = b->pend_head;
		if (publish_task(b, p->queue, p->priority, p->raw, p->len)) {
			ab_conn_lost(b, "publish failed");
			return;
		}
		ab_pend_pop(b);
	}
}

void ab_publish(struct cw_broker *base, const char *queue, int priority, const char *tag,
		    const char *raw, size_t len)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	(void)tag;
	if (b->up && !b->pend_head) {
		if (publish_task(b, queue, priority, raw, len) == 0)
			return;
		ab_conn_lost(b, "publish failed");
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

void ab_publish_fanout(struct cw_broker *base, const char *exchange, const char *routing_key,
			   const char *raw, size_t len)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	if (b->up && publish_env(b, exchange, routing_key, raw, len, 0, 1))
		ab_conn_lost(b, "publish failed");
}

void ab_publish_direct(struct cw_broker *base, const char *exchange, const char *routing_key,
			   const char *raw, size_t len, int expire)
{
	struct amqp_broker *b = (struct amqp_broker *)base;
	(void)expire; /* reply queues carry their own x-expires on RabbitMQ */
	if (b->up && publish_env(b, exchange, routing_key, raw, len, 0, 1))
		ab_conn_lost(b, "publish failed");
}

