/*
 * Redis transport, the TLS link (rediss://): hiredis 0.14 has no TLS, so a
 * connection here is our own non-blocking socket and OpenSSL session in the
 * event loop, with hiredis's pure parts doing the protocol (the writer
 * redisFormatCommandArgv, the reader redisReader).  Replies are matched to
 * callbacks in order, as hiredis's async client does, and a (P)SUBSCRIBE
 * callback keeps receiving every later message.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"

enum tstate { T_CONNECTING, T_HANDSHAKE, T_OPEN };

struct pending {
	struct pending *next;
	redisCallbackFn *fn;
	void *priv;
	bool sticky;          /* (P)SUBSCRIBE: gets every later reply */
};

struct tls_link {
	struct rconn *c;      /* NULL once freed from inside a callback */
	struct cw_loop *loop;
	int fd;
	SSL *ssl;
	enum tstate state;
	redisReader *rd;
	char *out;            /* formatted commands not yet taken by SSL_write */
	size_t outlen, outoff, outcap;
	struct pending *head, *tail;
	bool read_wants_write;
	bool in_cb;           /* a reply callback is running */
	bool zombie;          /* freed during the callback: the dispatcher frees the rest */
	bool close_after;     /* disconnect asked during the callback */
	char host[256];
};

static void tls_io(struct cw_loop *loop, int fd, unsigned ev, void *arg);

static void watch(struct tls_link *l, unsigned mask)
{
	if (l->c && mask != l->c->mask) {
		l->c->mask = mask;
		cw_loop_watch(l->loop, l->fd, mask, tls_io, l);
	}
}

static void update_mask(struct tls_link *l)
{
	if (l->state == T_OPEN)
		watch(l, CW_READ | (l->outoff < l->outlen || l->read_wants_write ? CW_WRITE : 0));
}

/* Close the socket and session; every pending callback gets NULL (hiredis does the same). */
static void teardown(struct tls_link *l)
{
	if (l->fd >= 0) {
		cw_loop_watch(l->loop, l->fd, 0, NULL, NULL);
		if (l->c)
			l->c->mask = 0;
	}
	if (l->ssl) {
		if (l->state == T_OPEN)
			SSL_shutdown(l->ssl); /* best effort close_notify; never waits */
		SSL_free(l->ssl);
		l->ssl = NULL;
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	while (l->head) {
		struct pending *p = l->head;
		l->head = p->next;
		if (p->fn)
			p->fn(NULL, NULL, p->priv);
		free(p);
	}
	l->tail = NULL;
	if (l->rd)
		redisReaderFree(l->rd);
	l->rd = NULL;
	free(l->out);
	l->out = NULL;
}

static void destroy(struct tls_link *l)
{
	if (l->in_cb) {
		l->zombie = true; /* the dispatcher is on the stack: it frees l */
		return;
	}
	free(l);
}

/* The connection is gone: tell redis_conn.c, which retries. */
static void gone(struct tls_link *l, bool established, const char *why)
{
	struct rconn *c = l->c;
	char msg[256];

	snprintf(msg, sizeof(msg), "%s", why);
	if (c)
		c->link = NULL;
	l->c = NULL;
	teardown(l);
	destroy(l);
	if (!c)
		return;
	if (established)
		rb_conn_lost(c, msg);
	else
		rb_conn_failed(c, msg);
}

/* Hand every complete reply to its callback; false when l is gone (freed) meanwhile. */
static bool dispatch(struct tls_link *l)
{
	void *reply;

	for (;;) {
		if (redisReaderGetReply(l->rd, &reply) != REDIS_OK) {
			gone(l, true, l->rd->errstr[0] ? l->rd->errstr : "protocol error");
			return false;
		}
		if (!reply)
			return true;
		struct pending *p = l->head;
		if (!p) {
			freeReplyObject(reply);
			gone(l, true, "reply without a request");
			return false;
		}
		if (!p->sticky) {
			l->head = p->next;
			if (!l->head)
				l->tail = NULL;
		}
		l->in_cb = true;
		if (p->fn)
			p->fn(NULL, reply, p->priv);
		l->in_cb = false;
		freeReplyObject(reply);
		if (!p->sticky)
			free(p);
		if (l->zombie) {
			free(l);
			return false;
		}
		if (l->close_after) {
			gone(l, true, "closed");
			return false;
		}
	}
}

static bool do_read(struct tls_link *l)
{
	char buf[16384];

	l->read_wants_write = false;
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int n = SSL_read(l->ssl, buf, sizeof(buf));
		if (n > 0) {
			if (redisReaderFeed(l->rd, buf, (size_t)n) != REDIS_OK) {
				gone(l, true, "out of memory reading a reply");
				return false;
			}
			continue;
		}
		int e = SSL_get_error(l->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			return true;
		if (e == SSL_ERROR_WANT_WRITE) {
			l->read_wants_write = true;
			return true;
		}
		struct cw_error err = {0};
		cw_tls_error(l->ssl, n, "read", &err);
		gone(l, true, err.msg);
		return false;
	}
}

static bool do_write(struct tls_link *l)
{
	while (l->outoff < l->outlen) {
		ERR_clear_error();
		errno = 0;
		int n = SSL_write(l->ssl, l->out + l->outoff, (int)(l->outlen - l->outoff));
		if (n > 0) {
			l->outoff += (size_t)n;
			continue;
		}
		int e = SSL_get_error(l->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			return true;
		struct cw_error err = {0};
		cw_tls_error(l->ssl, n, "write", &err);
		gone(l, true, err.msg);
		return false;
	}
	l->outoff = l->outlen = 0; /* all taken: the buffer starts over */
	return true;
}

static void handshake(struct tls_link *l)
{
	struct cw_error err = {0};
	unsigned want = 0;
	int rc = cw_tls_handshake(l->ssl, &want, &err);

	if (rc == CW_EAGAIN) {
		watch(l, want);
		return;
	}
	if (rc != CW_OK) {
		/* a refused certificate will not fix itself: say so loudly, then retry like any failure */
		cw_log(CW_LOG_ERROR, "broker", "TLS connection to %s (%s) refused: %s", l->host,
		       l->c ? l->c->name : "?", err.msg);
		gone(l, false, err.msg);
		return;
	}
	l->state = T_OPEN;
	if (do_write(l))
		update_mask(l);
}

static void tls_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct tls_link *l = arg;
	(void)loop;
	(void)fd;

	if (l->state == T_CONNECTING) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			gone(l, false, strerror(soerr));
			return;
		}
		l->state = T_HANDSHAKE;
	}
	if (l->state == T_HANDSHAKE) {
		handshake(l);
		return;
	}
	(void)ev; /* whatever woke us, both directions may progress (TLS can swap them) */
	if (!do_read(l) || !dispatch(l))
		return;
	if (do_write(l))
		update_mask(l);
}

/* A non-blocking TCP socket connecting to host:port (the lookup itself blocks, as hiredis's). */
static int start_connect(const char *host, int port, char *why, size_t whysz)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	char ports[16];
	int fd = -1;

	snprintf(ports, sizeof(ports), "%d", port);
	int g = getaddrinfo(host, ports, &hints, &res);
	if (g) {
		snprintf(why, whysz, "%s: %s", host, gai_strerror(g));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
			break;
		snprintf(why, whysz, "%s", strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int tls_open(struct rconn *c, const char *host, int port)
{
	struct cw_error err = {0};
	char why[256] = "cannot connect";
	struct tls_link *l = calloc(1, sizeof(*l));

	if (!l)
		return CW_ENOMEM;
	l->c = c;
	l->loop = c->b->loop;
	snprintf(l->host, sizeof(l->host), "%s", host);
	l->rd = redisReaderCreate();
	l->fd = start_connect(host, port, why, sizeof(why));
	if (l->fd < 0 || !l->rd)
		goto fail;
	l->ssl = cw_tls_session(c->b->tls, l->fd, host, &err);
	if (!l->ssl) {
		snprintf(why, sizeof(why), "%s", err.msg);
		goto fail;
	}
	c->link = l;
	c->fd = l->fd;
	c->mask = 0;
	watch(l, CW_WRITE); /* writable once connected */
	return CW_OK;
fail:
	cw_log(CW_LOG_DEBUG, "broker", "connect %s: %s", c->name, why);
	l->c = NULL;
	teardown(l);
	free(l);
	return CW_EIO;
}

static int tls_command(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
		       const char **argv, const size_t *lens)
{
	struct tls_link *l = c->link;
	char *cmd = NULL;
	struct pending *p;

	if (!l || l->close_after)
		return CW_EIO;
	int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
	p = calloc(1, sizeof(*p));
	if (n < 0 || !p)
		goto oom;
	if (l->outlen + (size_t)n > l->outcap) {
		size_t cap = (l->outcap ? l->outcap : 4096);
		while (cap < l->outlen + (size_t)n)
			cap *= 2;
		char *o = realloc(l->out, cap);
		if (!o)
			goto oom;
		l->out = o;
		l->outcap = cap;
	}
	memcpy(l->out + l->outlen, cmd, (size_t)n);
	l->outlen += (size_t)n;
	redisFreeCommand(cmd);
	p->fn = fn;
	p->priv = priv;
	p->sticky = argc > 0 && (!strcasecmp(argv[0], "SUBSCRIBE") ||
				 !strcasecmp(argv[0], "PSUBSCRIBE"));
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
	update_mask(l); /* written when the socket says it can take it */
	return CW_OK;
oom:
	if (cmd)
		redisFreeCommand(cmd);
	free(p);
	return CW_ENOMEM;
}

static void tls_disconnect(struct rconn *c)
{
	struct tls_link *l = c->link;
	if (!l)
		return;
	if (l->in_cb)
		l->close_after = true;
	else
		gone(l, l->state == T_OPEN, "closed");
}

static void tls_free(struct rconn *c)
{
	struct tls_link *l = c->link;
	if (!l)
		return;
	c->link = NULL;
	l->c = NULL;
	teardown(l);
	destroy(l);
}

const struct rlink_ops rb_tls_link = {
	.open = tls_open,
	.command = tls_command,
	.disconnect = tls_disconnect,
	.free = tls_free,
};
