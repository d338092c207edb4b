/*
 * Celery's RPC result backend (celery/backends/rpc.py): every state is a
 * message to the client's reply queue, through the default exchange with
 * routing key = the request's reply_to and correlation_id = the request's
 * correlation id (or the task id), JSON, transient (result_persistent off).
 * The client declared that queue; a result for a client that went away is
 * dropped by the broker, as with Python workers.  Tasks sent without
 * reply_to get no result.
 *
 * It talks to the broker of broker_url over its own blocking connection
 * (one per pool child, opened on first use, dropped after fork).  With a URL
 * list ("amqp://a;amqp://b") a connection that cannot be made moves on to the
 * next URL, in the list's order, as the broker connection fails over.
 */
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "backend/backend.h"
#include "broker/amqp_conn.h"
#include "broker/broker.h"
#include "loop/loop.h"

#define RPC_MAX_URLS 16

struct rpc_backend {
	struct cw_backend base;
	struct cw_amqp_target t[RPC_MAX_URLS];
	int nt, cur;                /* targets of the broker URL list; the one in use */
	char *ca, *cert, *key;
	double retry_for;
	amqp_connection_state_t conn;
};

static void drop(struct rpc_backend *b)
{
	if (b->conn)
		amqp_destroy_connection(b->conn);
	b->conn = NULL;
}

static int ensure(struct rpc_backend *b, struct cw_error *err)
{
	struct cw_error cerr = {0};

	if (b->conn)
		return CW_OK;
	/* the current URL first, then each other one once */
	for (int k = 0; k < b->nt && !b->conn; k++) {
		int i = (b->cur + k) % b->nt;
		b->conn = cw_amqp_connect(&b->t[i], 131072, 10.0, &cerr);
		if (b->conn)
			b->cur = i;
	}
	if (!b->conn) {
		cw_error_set(err, CW_EIO, "rpc result backend: cannot connect to %s%s: %s",
			     b->t[b->cur].redacted, b->nt > 1 ? " (nor the other URLs)" : "",
			     cerr.msg);
		return CW_EIO;
	}
	amqp_channel_open(b->conn, 1);
	if (amqp_get_rpc_reply(b->conn).reply_type != AMQP_RESPONSE_NORMAL) {
		cw_error_set(err, CW_EIO, "rpc result backend: %s refused a channel",
			     b->t[b->cur].redacted);
		drop(b);
		b->cur = (b->cur + 1) % b->nt;
		return CW_EIO;
	}
	return CW_OK;
}

static void rpc_free(struct rpc_backend *b)
{
	drop(b);
	free(b->ca);
	free(b->cert);
	free(b->key);
	free(b);
}

/* Results travel over the broker's connection settings: only with an AMQP broker. */
static bool amqp_broker(const char *broker_url)
{
	const char *transport = cw_broker_url_transport(broker_url);
	return transport && !strcmp(transport, "amqp") && strstr(broker_url, "://");
}

static struct cw_backend *rpc_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	const char *burl = o->broker_url;
	if (!burl || !amqp_broker(burl)) {
		cw_error_set(err, CW_EINVAL, "the rpc:// result backend needs an amqp:// broker");
		return NULL;
	}
	struct rpc_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	/* every URL of the broker's list (Celery's ';' separator) */
	for (const char *p = burl; *p && b->nt < RPC_MAX_URLS;) {
		while (*p == ' ' || *p == ';')
			p++;
		size_t n = strcspn(p, ";");
		if (!n)
			break;
		char *one = strndup(p, n);
		int rc = one ? cw_amqp_target_parse(one, o->ssl, &b->t[b->nt], err) : CW_ENOMEM;
		free(one);
		if (rc != CW_OK) {
			if (rc == CW_ENOMEM)
				cw_error_set(err, CW_ENOMEM, "out of memory");
			free(b);
			return NULL;
		}
		b->nt++;
		p += n;
	}
	if (!b->nt) {
		cw_error_set(err, CW_EINVAL, "the rpc:// result backend needs an amqp:// broker URL");
		free(b);
		return NULL;
	}
	if ((o->ssl_ca && !(b->ca = strdup(o->ssl_ca))) ||
	    (o->ssl_cert && !(b->cert = strdup(o->ssl_cert))) ||
	    (o->ssl_key && !(b->key = strdup(o->ssl_key)))) {
		rpc_free(b);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	for (int i = 0; i < b->nt; i++) {
		struct cw_amqp_target *t = &b->t[i];
		t->verify = o->ssl_verify;
		t->ca = b->ca;
		t->cert = b->cert;
		t->key = b->key;
		t->heartbeat = 0; /* short publishes between tasks: no heartbeats to keep */
	}
	b->retry_for = o->retry_for > 0 ? o->retry_for : 60;
	return &b->base;
}

static int rpc_store(struct cw_backend *base, const struct cw_result_meta *m, struct cw_error *err)
{
	struct rpc_backend *b = (struct rpc_backend *)base;
	double deadline = cw_now() + b->retry_for, delay = 0.05;
	int rc = CW_EIO;
	size_t len;
	char *val;

	if (!m->reply_to || !*m->reply_to)
		return CW_OK; /* nobody asked: Celery's rpc backend stores nothing either */
	val = cw_proto_encode_result_meta(m, &len);
	if (!val) {
		cw_error_set(err, CW_ENOMEM, "out of memory encoding result");
		return CW_ENOMEM;
	}
	amqp_basic_properties_t p = {0};
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
		   AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
	p.content_type = amqp_cstring_bytes("application/json");
	p.content_encoding = amqp_cstring_bytes("utf-8");
	p.delivery_mode = 1;
	p.correlation_id = amqp_cstring_bytes(m->correlation_id && *m->correlation_id
						      ? m->correlation_id : m->task_id);
	amqp_bytes_t body = {len, val};
	for (int attempt = 0;; attempt++) {
		if (ensure(b, err) == CW_OK) {
			int st = amqp_basic_publish(b->conn, 1, amqp_cstring_bytes(""),
						    amqp_cstring_bytes(m->reply_to), 0, 0, &p, body);
			if (st == AMQP_STATUS_OK) {
				rc = CW_OK;
				break;
			}
			cw_error_set(err, CW_EIO, "rpc result backend %s: %s",
				     b->t[b->cur].redacted, amqp_error_string2(st));
			drop(b);
		}
		if (!cw_backend_backoff(attempt, &delay, deadline, b->retry_for, err->msg))
			break;
	}
	free(val);
	return rc;
}

static void rpc_reset(struct cw_backend *base)
{
	struct rpc_backend *b = (struct rpc_backend *)base;
	/* after fork: the socket belongs to the parent; forget it without a handshake */
	if (b->conn) {
		amqp_destroy_connection(b->conn);
		b->conn = NULL;
	}
}

static void rpc_close(struct cw_backend *base)
{
	struct rpc_backend *b = (struct rpc_backend *)base;
	if (b->conn) {
		amqp_channel_close(b->conn, 1, AMQP_REPLY_SUCCESS);
		amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
	}
	rpc_free(b);
}

static int rpc_check_url(const char *url, const char *broker_url, struct cw_error *err)
{
	if (strncmp(url, "rpc://", 6))
		return CW_ENOTFOUND;
	if (!broker_url || !amqp_broker(broker_url)) {
		cw_error_set(err, CW_EINVAL, "rpc:// needs an amqp:// broker");
		return CW_EINVAL;
	}
	return CW_OK;
}

/* No probe_target: the results go through the broker, whose state readiness already shows. */
const struct cw_backend_ops cw_rpc_backend_ops = {
	.scheme = "rpc",
	.check_url = rpc_check_url,
	.open = rpc_open,
	.store = rpc_store,
	.reset = rpc_reset,
	.close = rpc_close,
};
