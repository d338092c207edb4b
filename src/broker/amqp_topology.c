/*
 * AMQP transport, topology: what Celery on py-amqp declares (see amqp.c),
 * synchronously on the publish channel, remembered per connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/amqp_int.h"

static bool declared(struct amqp_broker *b, const char *queue)
{
	for (int i = 0; i < b->ndeclared; i++)
		if (!strcmp(b->declared[i], queue))
			return true;
	return false;
}

void ab_forget_declared(struct amqp_broker *b)
{
	for (int i = 0; i < b->ndeclared; i++)
		free(b->declared[i]);
	free(b->declared);
	b->declared = NULL;
	b->ndeclared = 0;
}

/* Queue Q, its direct exchange Q, binding Q: what Celery declares for -Q Q. */
int ab_declare_task_queue(struct amqp_broker *b, const char *q)
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
	if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", q))
		return -1;
	amqp_queue_declare(b->conn, CH_PUBLISH, cstr(q), 0, 1, 0, 0, args);
	if (ab_rpc_ok(b, CH_PUBLISH, "declaring queue", q))
		return -1;
	amqp_queue_bind(b->conn, CH_PUBLISH, cstr(q), cstr(q), cstr(q), amqp_empty_table);
	if (ab_rpc_ok(b, CH_PUBLISH, "binding queue", q))
		return -1;
	char **d = realloc(b->declared, (size_t)(b->ndeclared + 1) * sizeof(*d));
	if (d) {
		b->declared = d;
		if ((d[b->ndeclared] = strdup(q)))
			b->ndeclared++;
	}
	return 0;
}

int ab_declare_topology(struct amqp_broker *b)
{
	for (int i = 0; i < b->nqueues; i++)
		if (ab_declare_task_queue(b, b->queues[i]))
			return -1;
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr("celeryev"), cstr("topic"), 0, 1, 0, 0,
			      amqp_empty_table);
	if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", "celeryev"))
		return -1;
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr("reply.celery.pidbox"), cstr("direct"), 0,
			      0, 0, 0, amqp_empty_table);
	if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", "reply.celery.pidbox"))
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
		if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", b->broadcast[i]))
			return -1;
		amqp_queue_declare(b->conn, CH_PUBLISH, cstr(qname), 0, 0, 0, 1, args);
		if (ab_rpc_ok(b, CH_PUBLISH, "declaring queue", qname))
			return -1;
		amqp_queue_bind(b->conn, CH_PUBLISH, cstr(qname), cstr(b->broadcast[i]), cstr(""),
				amqp_empty_table);
		if (ab_rpc_ok(b, CH_PUBLISH, "binding queue", qname))
			return -1;
		/* mailbox messages are consumed without acks, like kombu's pidbox Node */
		char ctag[600];
		snprintf(ctag, sizeof(ctag), "%sbcast-%s", CTAG_PREFIX, b->broadcast[i]);
		amqp_basic_consume(b->conn, CH_CONSUME, cstr(qname), cstr(ctag), 0, 1, 0,
				   amqp_empty_table);
		if (ab_rpc_ok(b, CH_CONSUME, "consuming", qname))
			return -1;
	}
	return 0;
}

