/*
 * The embedded HTTP server (see http.h): a listening socket on the loop,
 * bounded connections with deadlines, one request and one response each.
 *
 * Floods: every connection sits on one of two lists, oldest first.  "idle"
 * holds the ones that owe us nothing (waiting for their head, or draining
 * after their response); "busy" the ones with a response being written.
 * At the cap the oldest idle one is closed to admit the newcomer (a busy one
 * only when none is idle), so a probe always gets in.  A connection costs a
 * small struct until it sends a partial head, which is kept in a buffer that
 * starts small and grows; response buffers are freed once written.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "loop/loop.h"
#include "util/log.h"

#define ACCEPT_BATCH 64        /* accepts per loop turn: a flood cannot starve the loop */
#define IN_MIN 256             /* first allocation for a partial head */
#define ACCEPT_PAUSE 0.1       /* seconds without accepting when out of descriptors */
#define WARN_EVERY 10.0        /* seconds between two warnings about evictions */

enum conn_state {
	C_HEAD,      /* reading the request head */
	C_WRITING,   /* sending the response */
	C_DRAINING,  /* response sent and half-closed; reading until the client closes */
};

struct conn_list {
	struct conn *head, *tail;
};

struct conn {
	int fd;
	enum conn_state state;
	char *in;          /* a partial head kept between reads; NULL until there is one */
	size_t inlen, incap;
	struct cw_mbuf out, body;  /* response head, then body: sent without joining them */
	size_t off;
	uint64_t timer;
	struct cw_http *h;
	struct conn_list *list;
	struct conn *prev, *next;
};

struct cw_http {
	struct cw_loop *loop;
	int fd;
	int port;
	cw_http_route route;
	void *arg;
	struct conn_list idle, busy;
	int nconns, max_conns;
	uint64_t resume;           /* timer re-enabling accept after EMFILE; 0 when accepting */
	unsigned long evicted, evicted_warned;
	double warned_at;
};

/* ---- connection lists --------------------------------------------------- */

static void list_remove(struct conn *c)
{
	struct conn_list *l = c->list;
	if (!l)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
	c->list = NULL;
}

static void list_append(struct conn_list *l, struct conn *c)
{
	list_remove(c);
	c->prev = l->tail;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
	c->list = l;
}

static void conn_close(struct conn *c)
{
	struct cw_http *h = c->h;
	if (c->timer)
		cw_loop_timer_cancel(h->loop, c->timer);
	cw_loop_watch(h->loop, c->fd, 0, NULL, NULL);
	close(c->fd);
	free(c->in);
	cw_mbuf_free(&c->out);
	cw_mbuf_free(&c->body);
	list_remove(c);
	h->nconns--;
	free(c);
}

/*
 * Make room for one more connection (why: for the log): close the oldest
 * idle one, or the oldest busy one when every connection is writing.  False
 * when none is open.  Warns at most every WARN_EVERY seconds, with a count.
 */
static bool evict_oldest(struct cw_http *h, const char *why)
{
	struct conn *c = h->idle.head ? h->idle.head : h->busy.head;
	if (!c)
		return false;
	h->evicted++;
	double now = cw_loop_now(h->loop);
	if (h->evicted_warned == 0 || now - h->warned_at >= WARN_EVERY) {
		cw_log(CW_LOG_WARNING, "http", "%s with %d connections open: closing the oldest "
		       "%s ones to admit new ones (%lu closed since the last warning)", why,
		       h->nconns, c->state == C_WRITING ? "busy" : "idle",
		       h->evicted - h->evicted_warned);
		h->evicted_warned = h->evicted;
		h->warned_at = now;
	}
	conn_close(c);
	return true;
}

/* ---- deadlines ---------------------------------------------------------- */

static void on_timeout(struct cw_loop *loop, void *arg)
{
	struct conn *c = arg;
	(void)loop;
	c->timer = 0;
	cw_log(CW_LOG_DEBUG, "http", "closing a connection that %s in time",
	       c->state == C_WRITING ? "did not read its response" : "sent no complete request");
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

/* ---- requests and responses --------------------------------------------- */

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

/* Keep buf[0..n) after the partial head already held, growing the buffer by doubling. */
static bool keep_partial(struct conn *c, const char *buf, size_t n)
{
	if (c->inlen + n > c->incap) {
		size_t cap = c->incap ? c->incap : IN_MIN;
		while (cap < c->inlen + n)
			cap *= 2;
		if (cap > CW_HTTP_MAX_HEAD)
			cap = CW_HTTP_MAX_HEAD;
		char *p = realloc(c->in, cap);
		if (!p)
			return false;
		c->in = p;
		c->incap = cap;
	}
	memcpy(c->in + c->inlen, buf, n);
	c->inlen += n;
	return true;
}

static void flush(struct conn *c);

/* Build the answer to a parsed head (status 200) or the refusal (any other status), send it. */
static void respond(struct conn *c, int status, const struct cw_http_req *req)
{
	struct cw_mbuf body = {0};
	const char *ctype = "text/plain; charset=utf-8";
	bool head = false;
	if (status == 200) {
		head = !strcmp(req->method, "HEAD");
		if (strcmp(req->method, "GET") && !head) {
			status = 405;
			cw_mbuf_puts(&body, "method not allowed\n");
		} else {
			status = c->h->route(c->h->arg, req->path, &body, &ctype);
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
	c->state = C_WRITING;
	list_append(&c->h->busy, c);
	/* no half-close here: the client may still be sending; it sees EOF after the response */
	if (!set_deadline(c, CW_HTTP_WRITE_TIMEOUT)) {
		conn_close(c);
		return;
	}
	flush(c);
}

/*
 * Read more of the head.  The common case, a whole head in one read, is
 * parsed straight from the stack and never allocates; only a partial head
 * is kept on the heap until the rest arrives.
 */
static void read_head(struct conn *c)
{
	char buf[CW_HTTP_MAX_HEAD];
	size_t room = sizeof(buf) - c->inlen;
	ssize_t r = room ? read(c->fd, buf, room) : 0;
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (r < 0)
		return;
	const char *head = buf;
	size_t len = (size_t)r;
	if (c->inlen) {
		if (!keep_partial(c, buf, len)) {
			conn_close(c);
			return;
		}
		head = c->in;
		len = c->inlen;
	}
	struct cw_http_req req;
	int status = cw_http_parse(head, len, CW_HTTP_MAX_HEAD, &req);
	if (status == 0) {
		if (!c->inlen && !keep_partial(c, buf, len))
			conn_close(c);
		return;
	}
	free(c->in);
	c->in = NULL;
	c->inlen = c->incap = 0;
	respond(c, status, &req);
}

static void on_conn(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct conn *c = arg;
	(void)loop;
	(void)fd;
	if (c->state == C_HEAD) {
		read_head(c);
		return;
	}
	if (c->state == C_WRITING && (ev & CW_WRITE)) {
		flush(c);
		return;
	}
	if (ev & CW_READ) {
		/* the client sent more (or closed): drop whatever it is */
		char sink[4096];
		ssize_t r = read(c->fd, sink, sizeof(sink));
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			conn_close(c);
	}
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
	 * reset that could destroy the response in flight.  The connection now
	 * owes nothing: its buffers go and it may be evicted first.
	 */
	shutdown(c->fd, SHUT_WR);
	cw_mbuf_free(&c->out);
	cw_mbuf_free(&c->body);
	c->off = 0;
	c->state = C_DRAINING;
	list_append(&c->h->idle, c);
	cw_loop_watch(c->h->loop, c->fd, CW_READ, on_conn, c);
	if (!set_deadline(c, CW_HTTP_HEAD_TIMEOUT))
		conn_close(c);
}

/* ---- accepting ---------------------------------------------------------- */

static void on_accept(struct cw_loop *loop, int fd, unsigned ev, void *arg);

static void on_resume(struct cw_loop *loop, void *arg)
{
	struct cw_http *h = arg;
	h->resume = 0;
	if (cw_loop_watch(loop, h->fd, CW_READ, on_accept, h) < 0)
		cw_log(CW_LOG_ERROR, "http", "cannot watch the listening socket again");
}

/*
 * Out of descriptors with no connection of ours to give back: stop watching
 * the listener for a moment, or the level-triggered loop would spin on it.
 */
static void pause_accepting(struct cw_http *h)
{
	if (h->resume)
		return;
	h->resume = cw_loop_timer(h->loop, ACCEPT_PAUSE, on_resume, h);
	if (!h->resume)
		return;  /* out of memory: keep watching; the next turn tries again */
	cw_loop_watch(h->loop, h->fd, 0, NULL, NULL);
	cw_log(CW_LOG_WARNING, "http", "out of file descriptors: not accepting for %.1f s",
	       ACCEPT_PAUSE);
}

/* Out of memory for a connection: say so in one write and close. */
static void refuse(int cfd)
{
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
}

static void admit(struct cw_http *h, int cfd)
{
	while (h->nconns >= h->max_conns && evict_oldest(h, "at the connection limit"))
		;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		refuse(cfd);
		return;
	}
	c->fd = cfd;
	c->h = h;
	c->state = C_HEAD;
	if (!set_deadline(c, CW_HTTP_HEAD_TIMEOUT) ||
	    cw_loop_watch(h->loop, cfd, CW_READ, on_conn, c) < 0) {
		if (c->timer)
			cw_loop_timer_cancel(h->loop, c->timer);
		free(c);
		refuse(cfd);
		return;
	}
	h->nconns++;
	list_append(&h->idle, c);
}

static void on_accept(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct cw_http *h = arg;
	(void)loop;
	(void)ev;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			admit(h, cfd);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE) {
			/* give a descriptor of ours back for the newcomer, or wait a little */
			if (evict_oldest(h, "out of file descriptors"))
				continue;
			pause_accepting(h);
		} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
			cw_log(CW_LOG_WARNING, "http", "accept: %s", strerror(errno));
		}
		return;
	}
}

/* ---- descriptors -------------------------------------------------------- */

long cw_http_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur < CW_HTTP_FD_WANT) {
		rlim_t want = rl.rlim_max < CW_HTTP_FD_WANT ? rl.rlim_max : CW_HTTP_FD_WANT;
		if (want > rl.rlim_cur) {
			struct rlimit nl = {want, rl.rlim_max};
			if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
				rl.rlim_cur = want;
			else
				cw_log(CW_LOG_WARNING, "http", "cannot raise the open files limit "
				       "to %lu: %s", (unsigned long)want, strerror(errno));
		}
	}
	return rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
}

/* The default connection cap: CW_HTTP_MAX_CONNS, or half the descriptors when fewer. */
static int default_max_conns(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur / 2 >= CW_HTTP_MAX_CONNS)
		return CW_HTTP_MAX_CONNS;
	return rl.rlim_cur / 2 < CW_HTTP_MIN_CONNS ? CW_HTTP_MIN_CONNS : (int)(rl.rlim_cur / 2);
}

void cw_http_set_max_conns(struct cw_http *h, int max)
{
	h->max_conns = max < 1 ? 1 : max;
	while (h->nconns > h->max_conns && evict_oldest(h, "over a lowered limit"))
		;
}

int cw_http_conns(const struct cw_http *h)
{
	return h ? h->nconns : 0;
}

/* ---- listening ---------------------------------------------------------- */

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
	if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
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
	h->max_conns = default_max_conns();
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
	while (h->idle.head)
		conn_close(h->idle.head);
	while (h->busy.head)
		conn_close(h->busy.head);
	if (h->resume)
		cw_loop_timer_cancel(h->loop, h->resume);
	cw_loop_watch(h->loop, h->fd, 0, NULL, NULL);
	close(h->fd);
	free(h);
}
