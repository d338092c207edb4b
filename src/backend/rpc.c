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
 * (one per pool child, opened on first use, dropped after fork).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

struct rpc_backend {
	struct cw_backend base;
	struct cw_url url;
	char vhost[256];
	char redacted[512];
	bool tls, verify;
	char *ca, *cert, *key;
	double retry_for;
	int heartbeat;
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
	struct timeval tmo = {4, 0}, rpc = {10, 0};
	amqp_socket_t *s;
	int st;

	if (b->conn)
		return CW_OK;
	b->conn = amqp_new_connection();
	if (!b->conn) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	s = b->tls ? amqp_ssl_socket_new(b->conn) : amqp_tcp_socket_new(b->conn);
	if (!s)
		goto fail_msg;
	if (b->tls) {
		amqp_ssl_socket_set_verify_peer(s, b->verify);
		amqp_ssl_socket_set_verify_hostname(s, b->verify);
		if ((b->ca && amqp_ssl_socket_set_cacert(s, b->ca) != AMQP_STATUS_OK) ||
		    (b->cert && b->key && amqp_ssl_socket_set_key(s, b->cert, b->key) != AMQP_STATUS_OK)) {
			cw_error_set(err, CW_EINVAL, "rpc result backend: cannot load TLS files");
			drop(b);
			return CW_EINVAL;
		}
	}
	amqp_set_handshake_timeout(b->conn, &tmo);
	amqp_set_rpc_timeout(b->conn, &rpc);
	st = amqp_socket_open_noblock(s, b->url.host, b->url.port, &tmo);
	if (st != AMQP_STATUS_OK) {
		cw_error_set(err, CW_EIO, "rpc result backend: cannot connect to %s: %s", b->redacted,
			     amqp_error_string2(st));
		drop(b);
		return CW_EIO;
	}
	amqp_rpc_reply_t r = amqp_login(b->conn, b->vhost, 0, 131072, b->heartbeat,
					AMQP_SASL_METHOD_PLAIN,
					b->url.user[0] ? b->url.user : "guest",
					b->url.user[0] ? b->url.password : "guest");
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		goto fail_msg;
	amqp_channel_open(b->conn, 1);
	if (amqp_get_rpc_reply(b->conn).reply_type != AMQP_RESPONSE_NORMAL)
		goto fail_msg;
	return CW_OK;
fail_msg:
	cw_error_set(err, CW_EIO, "rpc result backend: %s refused the connection", b->redacted);
	drop(b);
	return CW_EIO;
}

static void vhost_of(const char *path, char *out, size_t outsz)
{
	size_t n = strcspn(path, "?"), w = 0;
	for (size_t i = 0; i < n && w + 1 < outsz; i++) {
		if (path[i] == '%' && i + 2 < n) {
			char hex[3] = {path[i + 1], path[i + 2], 0}, *end;
			long v = strtol(hex, &end, 16);
			if (!*end) {
				out[w++] = (char)v;
				i += 2;
				continue;
			}
		}
		out[w++] = path[i];
	}
	out[w] = '\0';
	if (!w)
		snprintf(out, outsz, "/");
}

static void rpc_free(struct rpc_backend *b)
{
	drop(b);
	free(b->ca);
	free(b->cert);
	free(b->key);
	free(b);
}

static struct cw_backend *rpc_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	const char *burl = o->broker_url;
	if (!burl || (strncmp(burl, "amqp://", 7) && strncmp(burl, "amqps://", 8) &&
		      strncmp(burl, "pyamqp://", 9))) {
		cw_error_set(err, CW_EINVAL, "the rpc:// result backend needs an amqp:// broker");
		return NULL;
	}
	struct rpc_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	if (cw_url_parse(burl, &b->url, err) != CW_OK) {
		free(b);
		return NULL;
	}
	b->tls = !strcmp(b->url.scheme, "amqps") || o->ssl;
	if (!b->url.port)
		b->url.port = b->tls ? 5671 : 5672;
	if (!b->url.host[0])
		snprintf(b->url.host, sizeof(b->url.host), "localhost");
	vhost_of(b->url.path, b->vhost, sizeof(b->vhost));
	cw_url_redact(burl, b->redacted, sizeof(b->redacted));
	b->verify = o->ssl_verify;
	b->heartbeat = 0; /* short-lived publishes between tasks; no heartbeats to keep */
	if ((o->ssl_ca && !(b->ca = strdup(o->ssl_ca))) ||
	    (o->ssl_cert && !(b->cert = strdup(o->ssl_cert))) ||
	    (o->ssl_key && !(b->key = strdup(o->ssl_key)))) {
		rpc_free(b);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
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
			cw_error_set(err, CW_EIO, "rpc result backend %s: %s", b->redacted,
				     amqp_error_string2(st));
			drop(b);
		}
		if (cw_now() + delay > deadline)
			break;
		if (attempt == 0)
			cw_log(CW_LOG_WARNING, "backend", "%s; retrying for up to %.0fs", err->msg,
			       b->retry_for);
		struct timespec ts = {(time_t)delay, (long)((delay - floor(delay)) * 1e9)};
		nanosleep(&ts, NULL);
		delay = fmin(delay * 2, 1.0);
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

const struct cw_backend_ops cw_rpc_backend_ops = {
	.scheme = "rpc",
	.open = rpc_open,
	.store = rpc_store,
	.reset = rpc_reset,
	.close = rpc_close,
};
