/*
 * The embedded HTTP server (see http.h): a listening socket on the loop,
 * bounded connections with deadlines, one request and one response each.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "loop/loop.h"
#include "util/log.h"

struct conn {
	int fd;
	char in[CW_HTTP_MAX_HEAD];
	size_t inlen;
	struct cw_mbuf out, body;  /* response head, then body: sent without joining them */
	size_t off;
	bool writing;
	bool draining;     /* response sent; reading until the client closes */
	uint64_t timer;
	struct cw_http *h;
};

struct cw_http {
	struct cw_loop *loop;
	int fd;
	int port;
	cw_http_route route;
	void *arg;
	struct conn *conns[CW_HTTP_MAX_CONNS];
	int nconns;
};

static void conn_close(struct conn *c)
{
	struct cw_http *h = c->h;
	if (c->timer)
		cw_loop_timer_cancel(h->loop, c->timer);
	cw_loop_watch(h->loop, c->fd, 0, NULL, NULL);
	close(c->fd);
	cw_mbuf_free(&c->out);
	cw_mbuf_free(&c->body);
	for (int i = 0; i < h->nconns; i++)
		if (h->conns[i] == c) {
			h->conns[i] = h->conns[--h->nconns];
			break;
		}
	free(c);
}

static void on_timeout(struct cw_loop *loop, void *arg)
{
	struct conn *c = arg;
	(void)loop;
	c->timer = 0;
	cw_log(CW_LOG_DEBUG, "http", "closing a connection that %s in time",
	       c->writing ? "did not read its response" : "sent no complete request");
	conn_close(c);
}

/*
 * Give c a deadline delay seconds from now.  The new timer is armed before
 * the old one is cancelled, so when arming fails (out of memory) c keeps its
 * earlier deadline; false when it has none at all: the caller closes c
 * rather than keep a connection nothing would ever time out.
 */
static bool set_deadline(struct conn *c, double delay)
{
	uint64_t t = cw_loop_timer(c->h->loop, delay, on_timeout, c);
	if (!t) {
		cw_log(CW_LOG_ERROR, "http", "cannot arm a connection timeout (out of memory): %s",
		       c->timer ? "it keeps its earlier deadline" : "closing it");
		return c->timer != 0;
	}
	if (c->timer)
		cw_loop_timer_cancel(c->h->loop, c->timer);
	c->timer = t;
	return true;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

static void flush(struct conn *c);

static void on_conn(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct conn *c = arg;
	(void)loop;
	(void)fd;
	if (c->writing) {
		if (ev & CW_WRITE)
			flush(c);
		else if (ev & CW_READ) {
			/* the client sent more (or closed): drop whatever it is */
			char sink[4096];
			ssize_t r = read(c->fd, sink, sizeof(sink));
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				conn_close(c);
		}
		return;
	}
	ssize_t r = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (r < 0)
		return;
	c->inlen += (size_t)r;
	struct cw_http_req req;
	int status = cw_http_parse(c->in, c->inlen, sizeof(c->in), &req);
	if (status == 0)
		return;
	struct cw_mbuf body = {0};
	const char *ctype = "text/plain; charset=utf-8";
	bool head = false;
	if (status == 200) {
		head = !strcmp(req.method, "HEAD");
		if (strcmp(req.method, "GET") && !head) {
			status = 405;
			cw_mbuf_puts(&body, "method not allowed\n");
		} else {
			status = c->h->route(c->h->arg, req.path, &body, &ctype);
		}
	} else {
		cw_mbuf_printf(&body, "%s\n", reason(status));
	}
	if (body.oom) {
		cw_mbuf_free(&body);
		status = 503;
		ctype = "text/plain; charset=utf-8";
	}
	cw_mbuf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		       "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n", status,
		       reason(status), ctype, body.len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head)
		c->body = body;
	else
		cw_mbuf_free(&body);
	if (c->out.oom) {
		conn_close(c);
		return;
	}
	c->writing = true;
	/* no half-close here: the client may still be sending; it sees EOF after the response */
	if (!set_deadline(c, CW_HTTP_WRITE_TIMEOUT)) {
		conn_close(c);
		return;
	}
	flush(c);
}

static void flush(struct conn *c)
{
	size_t total = c->out.len + c->body.len;
	while (c->off < total) {
		struct iovec iov[2];
		int n = 0;
		if (c->off < c->out.len)
			iov[n++] = (struct iovec){c->out.p + c->off, c->out.len - c->off};
		size_t boff = c->off > c->out.len ? c->off - c->out.len : 0;
		if (c->body.len > boff)
			iov[n++] = (struct iovec){c->body.p + boff, c->body.len - boff};
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				cw_loop_watch(c->h->loop, c->fd, CW_READ | CW_WRITE, on_conn, c);
				return;
			}
			conn_close(c);
			return;
		}
		c->off += (size_t)w;
	}
	/*
	 * All written: half-close and read the client's leftovers until it closes
	 * (bounded by the timer), so unread bytes do not turn our close into a
	 * reset that could destroy the response in flight.
	 */
	shutdown(c->fd, SHUT_WR);
	if (!c->draining) {
		c->draining = true;
		cw_loop_watch(c->h->loop, c->fd, CW_READ, on_conn, c);
		if (!set_deadline(c, CW_HTTP_HEAD_TIMEOUT))
			conn_close(c);
	}
}

static void on_accept(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct cw_http *h = arg;
	(void)loop;
	(void)ev;
	/* a bounded batch per turn: a connection flood cannot starve the rest of the loop */
	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				cw_log(CW_LOG_WARNING, "http", "accept: %s", strerror(errno));
			return;
		}
		struct conn *c = h->nconns < CW_HTTP_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0"
						   "\r\nConnection: close\r\n\r\n";
			char sink[4096];
			/* take what already arrived, so closing sends FIN rather than a reset */
			ssize_t r = recv(cfd, sink, sizeof(sink), MSG_DONTWAIT);
			ssize_t w = send(cfd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)r;
			(void)w;
			shutdown(cfd, SHUT_WR);
			close(cfd);
			continue;
		}
		c->fd = cfd;
		c->h = h;
		if (!set_deadline(c, CW_HTTP_HEAD_TIMEOUT) ||
		    cw_loop_watch(h->loop, cfd, CW_READ, on_conn, c) < 0) {
			if (c->timer)
				cw_loop_timer_cancel(h->loop, c->timer);
			close(cfd);
			free(c);
			continue;
		}
		h->conns[h->nconns++] = c;
	}
}

static int split_listen(const char *spec, char *host, size_t hn, char *port, size_t pn)
{
	const char *colon;
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':')
			return -1;
		snprintf(host, hn, "%.*s", (int)(end - spec - 1), spec + 1);
		colon = end + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon)
			return -1;
		snprintf(host, hn, "%.*s", (int)(colon - spec), spec);
	}
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end || p < 0 || p > 65535)
		return -1;
	snprintf(port, pn, "%ld", p);
	return 0;
}

/* A non-blocking listening socket on a, or -1 with *eno set. */
static int listen_on(const struct addrinfo *a, bool dual_stack, int *eno)
{
	int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*eno = errno;
		return -1;
	}
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ai_family == AF_INET6 && dual_stack)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		*eno = errno;
		close(fd);
		return -1;
	}
	return fd;
}

struct cw_http *cw_http_new(struct cw_loop *loop, const char *listen_spec, cw_http_route route,
			    void *arg, struct cw_error *err)
{
	char host[256], port[8];
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE}, *ai = NULL;

	if (split_listen(listen_spec, host, sizeof(host), port, sizeof(port)) < 0) {
		cw_error_set(err, CW_EINVAL, "--http: '%.100s' is not HOST:PORT", listen_spec);
		return NULL;
	}
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (gai) {
		cw_error_set(err, CW_EINVAL, "--http: %.100s: %s", listen_spec, gai_strerror(gai));
		return NULL;
	}
	struct cw_http *h = calloc(1, sizeof(*h));
	if (!h) {
		freeaddrinfo(ai);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->route = route;
	h->arg = arg;
	h->fd = -1;
	int eno = 0;
	/*
	 * ":PORT": IPv6 first, made dual-stack, so one socket takes both families;
	 * a named host: its addresses in resolver order, the first that binds.
	 */
	for (int pass = 0; pass < 2 && h->fd < 0; pass++)
		for (struct addrinfo *a = ai; a && h->fd < 0; a = a->ai_next)
			if (host[0] ? pass == 0 : (a->ai_family == AF_INET6) == (pass == 0))
				h->fd = listen_on(a, !host[0], &eno);
	freeaddrinfo(ai);
	if (h->fd < 0) {
		cw_error_set(err, CW_EIO, "--http: cannot listen on %.100s: %s", listen_spec,
			     strerror(eno ? eno : EADDRNOTAVAIL));
		free(h);
		return NULL;
	}
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	} bound;
	memset(&bound, 0, sizeof(bound));
	socklen_t sl = sizeof(bound);
	if (getsockname(h->fd, &bound.sa, &sl) == 0)
		h->port = ntohs(bound.sa.sa_family == AF_INET6 ? bound.in6.sin6_port : bound.in.sin_port);
	if (cw_loop_watch(loop, h->fd, CW_READ, on_accept, h) < 0) {
		cw_error_set(err, CW_EIO, "--http: cannot watch the socket");
		close(h->fd);
		free(h);
		return NULL;
	}
	return h;
}

int cw_http_port(const struct cw_http *h)
{
	return h ? h->port : 0;
}

void cw_http_free(struct cw_http *h)
{
	if (!h)
		return;
	struct conn *all[CW_HTTP_MAX_CONNS];
	int n = h->nconns;
	memcpy(all, h->conns, (size_t)n * sizeof(all[0]));
	for (int i = 0; i < n; i++)
		conn_close(all[i]);
	cw_loop_watch(h->loop, h->fd, 0, NULL, NULL);
	close(h->fd);
	free(h);
}
