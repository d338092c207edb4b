/*
 * Opening an AMQP connection (rabbitmq-c): URL -> target, then socket, TLS
 * (with IP-address certificates verified by OpenSSL), timeouts and login.
 */
#include "broker/amqp_conn.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static struct timeval tv_of(double s)
{
	struct timeval tv = {.tv_sec = (time_t)s,
			     .tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6)};
	return tv;
}

/* Virtual host from the URL path: "" or "/" -> "/", else percent-decoded path before '?'. */
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

/* An IPv4 or IPv6 address literal (the URL parser has removed IPv6 brackets). */
static bool ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/*
 * rabbitmq-c matches the host against the certificate's DNS names only, so
 * a broker addressed by IP (amqps://10.0.0.5) could never be verified.  For
 * an IP literal its name check is off and OpenSSL checks the IP SAN instead,
 * as part of the chain verification rabbitmq-c enforces (verify_peer): the
 * socket's SSL_CTX parameters are copied into the SSL it creates.  DNS
 * names keep rabbitmq-c's own check.
 */
static int verify_ip(amqp_socket_t *s, const char *host)
{
	SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
	X509_VERIFY_PARAM *param = ctx ? SSL_CTX_get0_param(ctx) : NULL;
	if (!param || X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
		return -1;
	amqp_ssl_socket_set_verify_hostname(s, 0);
	return 0;
}

int cw_amqp_target_parse(const char *url, bool force_tls, struct cw_amqp_target *t,
			 struct cw_error *err)
{
	char first[1024];

	memset(t, 0, sizeof(*t));
	/* a URL list (amqp://a;amqp://b): its first URL (the transport splits lists itself) */
	snprintf(first, sizeof(first), "%.*s", (int)strcspn(url, ";"), url);
	url = first;
	if (cw_url_parse(url, &t->url, err) != CW_OK)
		return CW_EINVAL;
	if (strcmp(t->url.scheme, "amqp") && strcmp(t->url.scheme, "amqps") &&
	    strcmp(t->url.scheme, "pyamqp")) {
		cw_error_set(err, CW_EINVAL, "not an AMQP URL");
		return CW_EINVAL;
	}
	t->tls = !strcmp(t->url.scheme, "amqps") || force_tls;
	if (!t->url.port)
		t->url.port = t->tls ? 5671 : 5672;
	if (!t->url.host[0])
		snprintf(t->url.host, sizeof(t->url.host), "localhost");
	vhost_of(t->url.path, t->vhost, sizeof(t->vhost));
	cw_url_redact(url, t->redacted, sizeof(t->redacted));
	t->verify = true;
	t->connect_timeout = 4.0;
	return CW_OK;
}

amqp_connection_state_t cw_amqp_connect(const struct cw_amqp_target *t, int frame_max,
					double rpc_timeout, struct cw_error *err)
{
	struct timeval tmo = tv_of(t->connect_timeout > 0 ? t->connect_timeout : 4.0);
	struct timeval rpc = tv_of(rpc_timeout);
	amqp_connection_state_t c = amqp_new_connection();
	amqp_socket_t *s;
	int st;

	if (!c) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	s = t->tls ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
	if (!s) {
		cw_error_set(err, CW_EIO, "cannot create a socket");
		goto fail;
	}
	if (t->tls) {
		amqp_ssl_socket_set_verify_peer(s, t->verify);
		amqp_ssl_socket_set_verify_hostname(s, t->verify);
		if (t->verify && ip_literal(t->url.host) && verify_ip(s, t->url.host)) {
			cw_error_set(err, CW_EINVAL, "cannot set up verification of IP address %s",
				     t->url.host);
			goto fail;
		}
		if (t->ca && amqp_ssl_socket_set_cacert(s, t->ca) != AMQP_STATUS_OK) {
			cw_error_set(err, CW_EINVAL, "cannot load CA certificates from %s", t->ca);
			goto fail;
		}
		if (t->cert && t->key && amqp_ssl_socket_set_key(s, t->cert, t->key) != AMQP_STATUS_OK) {
			cw_error_set(err, CW_EINVAL, "cannot load client certificate %s / key %s",
				     t->cert, t->key);
			goto fail;
		}
	}
	amqp_set_handshake_timeout(c, &tmo);
	amqp_set_rpc_timeout(c, &rpc);
	st = amqp_socket_open_noblock(s, t->url.host, t->url.port, &tmo);
	if (st != AMQP_STATUS_OK) {
		cw_error_set(err, CW_EIO, "%s", amqp_error_string2(st));
		goto fail;
	}
	amqp_rpc_reply_t r = amqp_login(c, t->vhost, 0, frame_max, t->heartbeat,
					AMQP_SASL_METHOD_PLAIN, t->url.user[0] ? t->url.user : "guest",
					t->url.user[0] ? t->url.password : "guest");
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
		cw_error_set(err, CW_EPROTO, "login failed: %s", amqp_error_string2(r.library_error));
		goto fail;
	}
	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
		    r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
			amqp_connection_close_t *m = r.reply.decoded;
			cw_error_set(err, CW_EPROTO, "login refused: %u %.*s", m->reply_code,
				     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
		} else {
			cw_error_set(err, CW_EPROTO, "login refused");
		}
		goto fail;
	}
	return c;
fail:
	amqp_destroy_connection(c);
	return NULL;
}
