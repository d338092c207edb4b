/*
 * AMQP transport, topology: what Celery on py-amqp declares (see amqp.c),
 * synchronously on the publish channel, remembered per connection.  Queues
 * are declared as the user configured them (task_default_queue_type, the
 * [queue:NAME] sections: x- arguments and passive), and a refusal is a fact
 * about one queue, logged once, not a reason to reconnect in a loop.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker/amqp_int.h"
#include "util/log.h"

#define REPLY_NOT_FOUND 404
#define REPLY_RESOURCE_LOCKED 405
#define REPLY_PRECONDITION_FAILED 406
#define MAX_ARGS 32

static bool declared(struct amqp_broker *b, const char *queue)
{
	for (int i = 0; i < b->ndeclared; i++)
		if (!strcmp(b->declared[i], queue))
			return true;
	return false;
}

static void remember_declared(struct amqp_broker *b, const char *q)
{
	char **d = realloc(b->declared, (size_t)(b->ndeclared + 1) * sizeof(*d));
	if (d) {
		b->declared = d;
		if ((d[b->ndeclared] = strdup(q)))
			b->ndeclared++;
	}
}

void ab_forget_declared(struct amqp_broker *b)
{
	for (int i = 0; i < b->ndeclared; i++)
		free(b->declared[i]);
	free(b->declared);
	b->declared = NULL;
	b->ndeclared = 0;
}


/* ---- what the user configured ----------------------------------------- */

static const struct qdecl *decl_of(const struct amqp_broker *b, const char *q)
{
	for (int i = 0; i < b->ndecls; i++)
		if (!strcmp(b->decls[i].name, q))
			return &b->decls[i];
	return NULL;
}

static const char *decl_value(const struct qdecl *d, const char *key)
{
	for (int i = 0; d && i < d->n; i++)
		if (!strcmp(d->keys[i], key))
			return d->vals[i];
	return NULL;
}

bool ab_queue_passive(const struct amqp_broker *b, const char *q)
{
	const char *v = decl_value(decl_of(b, q), "passive");
	if (!v)
		return b->o.queue_passive;
	return !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
	       !strcasecmp(v, "on");
}

bool ab_queue_quorum(const struct amqp_broker *b, const char *q)
{
	const char *v = decl_value(decl_of(b, q), "x-queue-type");
	if (!v)
		v = b->o.queue_type;
	return v && !strcmp(v, "quorum");
}

/*
 * RabbitMQ checks the AMQP type of the arguments it knows (an x-message-ttl
 * sent as a string is refused), so known keys get their type; an unknown
 * x- key is an integer or a boolean when it reads as one, else a string.
 */
static const char *const int_args[] = {
	"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority",
	"x-delivery-limit", "x-quorum-initial-group-size", "x-quorum-target-group-size",
	"x-max-in-memory-length", "x-max-in-memory-bytes", NULL};
static const char *const bool_args[] = {"x-single-active-consumer", NULL};
static const char *const str_args[] = {
	"x-queue-type", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow",
	"x-queue-mode", "x-dead-letter-strategy", "x-queue-leader-locator", "x-queue-master-locator",
	"x-max-age", "x-queue-version", NULL};

static bool listed(const char *const *list, const char *key)
{
	for (; *list; list++)
		if (!strcmp(*list, key))
			return true;
	return false;
}

static bool parse_long(const char *s, long long *out)
{
	char *end;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return !errno && end != s && !*end;
}

/* key = val as a typed field (val borrowed); false when a known key's value has the wrong form. */
static bool typed_arg(const char *q, const char *key, const char *val, amqp_table_entry_t *e)
{
	long long n;
	bool is_int = parse_long(val, &n);
	bool is_bool = !strcasecmp(val, "true") || !strcasecmp(val, "false");

	e->key = amqp_cstring_bytes(key);
	if (listed(int_args, key) || (!listed(str_args, key) && !listed(bool_args, key) && is_int)) {
		if (!is_int) {
			cw_log(CW_LOG_ERROR, "broker", "queue %s: %s = '%s' is not an integer; "
			       "argument left out", q, key, val);
			return false;
		}
		/* py-amqp's choice: a signed 32-bit field when it fits, else 64-bit */
		if (n >= INT32_MIN && n <= INT32_MAX) {
			e->value.kind = AMQP_FIELD_KIND_I32;
			e->value.value.i32 = (int32_t)n;
		} else {
			e->value.kind = AMQP_FIELD_KIND_I64;
			e->value.value.i64 = (int64_t)n;
		}
		return true;
	}
	if (listed(bool_args, key) || (!listed(str_args, key) && is_bool)) {
		if (!is_bool) {
			cw_log(CW_LOG_ERROR, "broker", "queue %s: %s = '%s' is not true or false; "
			       "argument left out", q, key, val);
			return false;
		}
		e->value.kind = AMQP_FIELD_KIND_BOOLEAN;
		e->value.value.boolean = !strcasecmp(val, "true");
		return true;
	}
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(val);
	return true;
}

/* The declare arguments of q into e[MAX_ARGS] (strings borrowed): section, then defaults. */
static int queue_args(const struct amqp_broker *b, const char *q, amqp_table_entry_t *e)
{
	const struct qdecl *d = decl_of(b, q);
	int n = 0;

	for (int i = 0; d && i < d->n && n < MAX_ARGS - 2; i++)
		if (strcmp(d->keys[i], "passive") && typed_arg(q, d->keys[i], d->vals[i], &e[n]))
			n++;
	if (!decl_value(d, "x-queue-type") && ab_queue_quorum(b, q)) {
		e[n].key = amqp_cstring_bytes("x-queue-type");
		e[n].value.kind = AMQP_FIELD_KIND_UTF8;
		e[n++].value.value.bytes = amqp_cstring_bytes("quorum");
	}
	/* quorum queues have no priorities: task_queue_max_priority is for classic queues */
	if (b->o.max_priority > 0 && !decl_value(d, "x-max-priority") && !ab_queue_quorum(b, q)) {
		e[n].key = amqp_cstring_bytes("x-max-priority");
		e[n].value.kind = AMQP_FIELD_KIND_I32;
		e[n++].value.value.i32 = b->o.max_priority;
	}
	return n;
}


/* ---- refusals ---------------------------------------------------------- */

bool ab_refused_now(const struct amqp_broker *b, const char *q)
{
	for (int i = 0; i < b->nrefused; i++)
		if (!strcmp(b->refused[i].queue, q))
			return b->refused[i].now;
	return false;
}

void ab_refusals_reset(struct amqp_broker *b)
{
	for (int i = 0; i < b->nrefused; i++)
		b->refused[i].now = false;
}

void ab_refusals_free(struct amqp_broker *b)
{
	for (int i = 0; i < b->nrefused; i++)
		free(b->refused[i].queue);
	free(b->refused);
	b->refused = NULL;
	b->nrefused = 0;
}

/* Record that q was refused; true the first time (the caller logs it then, quietly later). */
static bool note_refusal(struct amqp_broker *b, const char *q)
{
	for (int i = 0; i < b->nrefused; i++)
		if (!strcmp(b->refused[i].queue, q)) {
			b->refused[i].now = true;
			return false;
		}
	struct refusal *r = realloc(b->refused, (size_t)(b->nrefused + 1) * sizeof(*r));
	if (!r)
		return true;
	b->refused = r;
	if (!(r[b->nrefused].queue = strdup(q)))
		return true;
	r[b->nrefused++].now = true;
	return true;
}

static void refused(struct amqp_broker *b, const char *q, bool passive)
{
	bool first = note_refusal(b, q);
	char h[512];
	if (passive)
		snprintf(h, sizeof(h), "it must exist for a passive declaration (worker_queue_passive "
			 "or passive = true in [queue:%s]): create it, or declare it normally", q);
	else
		snprintf(h, sizeof(h), "it exists with other arguments: declare it as it is "
			 "(task_default_queue_type = quorum, or x- arguments in a [queue:%s] section) "
			 "or consume it as it is (passive = true in [queue:%s], or "
			 "worker_queue_passive = true)", q, q);
	cw_log(first ? CW_LOG_ERROR : CW_LOG_DEBUG, "broker",
	       "Queue %s refused by %s: %s; not consuming it (declared again after a reconnect): %s",
	       q, b->redacted, b->last_text, h);
}


/* ---- declarations ------------------------------------------------------ */

/* Queue Q, its direct exchange Q, binding Q: what Celery declares for -Q Q. */
int ab_declare_task_queue(struct amqp_broker *b, const char *q)
{
	amqp_table_entry_t e[MAX_ARGS];
	amqp_table_t args = {0, e};
	bool passive = ab_queue_passive(b, q);

	if (declared(b, q))
		return 0;
	if (passive) {
		/* as it is, whatever its arguments: no exchange, no binding, no arguments */
		amqp_queue_declare(b->conn, CH_PUBLISH, cstr(q), 1, 0, 0, 0, amqp_empty_table);
		if (ab_rpc_quiet(b, CH_PUBLISH, "declaring queue", q, REPLY_NOT_FOUND)) {
			if (b->conn && b->last_code == REPLY_NOT_FOUND) {
				refused(b, q, true);
				return AB_REFUSED;
			}
			return -1;
		}
		remember_declared(b, q);
		return 0;
	}
	args.num_entries = queue_args(b, q, e);
	amqp_exchange_declare(b->conn, CH_PUBLISH, cstr(q), cstr("direct"), 0, 1, 0, 0,
			      amqp_empty_table);
	if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", q))
		return -1;
	amqp_queue_declare(b->conn, CH_PUBLISH, cstr(q), 0, 1, 0, 0, args);
	if (ab_rpc_quiet(b, CH_PUBLISH, "declaring queue", q, REPLY_PRECONDITION_FAILED)) {
		if (b->conn && b->last_code == REPLY_PRECONDITION_FAILED) {
			refused(b, q, false);
			return AB_REFUSED;
		}
		return -1;
	}
	amqp_queue_bind(b->conn, CH_PUBLISH, cstr(q), cstr(q), cstr(q), amqp_empty_table);
	if (ab_rpc_ok(b, CH_PUBLISH, "binding queue", q))
		return -1;
	remember_declared(b, q);
	return 0;
}

/*
 * <node>.celery.pidbox: auto-delete with Celery's expiry and TTL; exclusive
 * when asked (control_queue_exclusive) or when the broker refuses transient
 * non-exclusive queues (RabbitMQ 4.3), as Celery 5.6 can and later defaults
 * to.  Returns 0 (declared), AB_REFUSED (no mailbox on this connection) or -1.
 */
static int declare_pidbox(struct amqp_broker *b, const char *qname)
{
	amqp_table_entry_t e[2];
	amqp_table_t args = {2, e};

	e[0].key = amqp_cstring_bytes("x-expires");
	e[0].value.kind = AMQP_FIELD_KIND_I32;
	e[0].value.value.i32 = PIDBOX_EXPIRES_MS;
	e[1].key = amqp_cstring_bytes("x-message-ttl");
	e[1].value.kind = AMQP_FIELD_KIND_I32;
	e[1].value.value.i32 = PIDBOX_TTL_MS;
	for (;;) {
		bool excl = b->pidbox_exclusive;
		amqp_queue_declare(b->conn, CH_PUBLISH, cstr(qname), 0, 0, excl, 1, args);
		if (!ab_rpc_quiet(b, CH_PUBLISH, "declaring queue", qname, -1))
			return 0;
		if (!b->conn || !b->last_code)
			return -1;
		if (!excl) {
			cw_log(CW_LOG_INFO, "broker", "%s refused a transient non-exclusive queue "
			       "(%s): declaring %s exclusive", b->redacted, b->last_text, qname);
			b->pidbox_exclusive = true;
			continue;
		}
		cw_log(b->last_code == REPLY_RESOURCE_LOCKED ? CW_LOG_WARNING : CW_LOG_ERROR,
		       "broker", "Mailbox queue %s refused (%s)%s; remote control is off on this "
		       "connection", qname, b->last_text, b->last_code == REPLY_RESOURCE_LOCKED ?
		       ": another worker with this node name is connected" : "");
		return AB_REFUSED;
	}
}

int ab_declare_topology(struct amqp_broker *b)
{
	ab_refusals_reset(b);
	for (int i = 0; i < b->nqueues; i++)
		if (ab_declare_task_queue(b, b->queues[i]) < 0)
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
		snprintf(qname, sizeof(qname), "%s.%s", b->nodename, b->broadcast[i]);
		amqp_exchange_declare(b->conn, CH_PUBLISH, cstr(b->broadcast[i]), cstr("fanout"), 0, 0,
				      0, 0, amqp_empty_table);
		if (ab_rpc_ok(b, CH_PUBLISH, "declaring exchange", b->broadcast[i]))
			return -1;
		int rc = declare_pidbox(b, qname);
		if (rc < 0)
			return -1;
		if (rc == AB_REFUSED)
			continue;
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
