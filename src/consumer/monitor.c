/*
 * --http: health probes and Prometheus metrics for the master.
 *
 * Everything here runs in the master's loop and never blocks:
 *  - the HTTP server (src/http/http.c) answers from state already in memory;
 *  - queue depths are sampled every DEPTH_INTERVAL seconds through the
 *    broker's optional queue_depth op (not per scrape);
 *  - the result backend is probed every PROBE_INTERVAL seconds with a
 *    non-blocking TCP connect (and a PING for redis://); readiness uses the
 *    cached outcome of the last probe.  The master's own backend handle is
 *    synchronous, so it is never used for this.
 */
#include "consumer/monitor.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "consumer/worker_int.h"
#include "cw_build.h"
#include "http/http.h"
#include "http/metrics.h"
#include "loop/loop.h"
#include "util/log.h"

#define DEPTH_INTERVAL 2.0
#define PROBE_INTERVAL 2.0
#define PROBE_TIMEOUT 1.5
#define MAX_TASK_LABELS 1000

struct cw_monitor {
	struct worker *w;
	struct cw_http *http;
	uint64_t depth_timer, probe_timer, probe_deadline;
	/* backend probe */
	bool backend_configured, backend_up, redis, probed;
	struct sockaddr_storage baddr;
	socklen_t baddrlen;
	int pfd;
	bool pwrote;
	struct cw_metrics_child *kids;
	int nkids, capkids;
	size_t last_metrics;      /* bytes of the last /metrics body */
};

static const char features[] = "redis"
#ifdef CW_HAVE_DOCCONV
			       ",docconv"
#endif
#ifdef CW_HAVE_POSTGRES
			       ",postgres"
#endif
#ifdef CW_HAVE_STORAGE
			       ",storage"
#endif
#ifdef CW_HAVE_AMQP
			       ",amqp"
#endif
			       ",http";

/* ---- backend probe ------------------------------------------------------ */

static void probe_end(struct cw_monitor *m, bool up)
{
	if (m->pfd >= 0) {
		cw_loop_watch(m->w->loop, m->pfd, 0, NULL, NULL);
		close(m->pfd);
		m->pfd = -1;
	}
	if (m->probe_deadline)
		cw_loop_timer_cancel(m->w->loop, m->probe_deadline);
	m->probe_deadline = 0;
	if (up != m->backend_up && (m->probed || !up))
		cw_log(up ? CW_LOG_INFO : CW_LOG_WARNING, "http", "result backend %s",
		       up ? "answers again" : "does not answer");
	m->backend_up = up;
	m->probed = true;
}

static void on_probe_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct cw_monitor *m = arg;
	(void)loop;
	if (!m->pwrote) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
			probe_end(m, false);
			return;
		}
		if (!m->redis) {
			probe_end(m, true);  /* accepting connections is all we can see */
			return;
		}
		static const char ping[] = "PING\r\n";
		if (send(fd, ping, sizeof(ping) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(ping) - 1) {
			probe_end(m, false);
			return;
		}
		m->pwrote = true;
		cw_loop_watch(m->w->loop, fd, CW_READ, on_probe_io, m);
		return;
	}
	if (!(ev & CW_READ))
		return;
	char buf[64];
	ssize_t r = recv(fd, buf, sizeof(buf), 0);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* +PONG, or an error reply such as -NOAUTH: either way the server answers */
	probe_end(m, r > 0 && (buf[0] == '+' || buf[0] == '-'));
}

static void on_probe_deadline(struct cw_loop *loop, void *arg)
{
	struct cw_monitor *m = arg;
	(void)loop;
	m->probe_deadline = 0;
	probe_end(m, false);
}

static void probe_tick(struct cw_loop *loop, void *arg)
{
	struct cw_monitor *m = arg;
	m->probe_timer = cw_loop_timer(loop, PROBE_INTERVAL, probe_tick, m);
	if (m->pfd >= 0)
		return;
	int fd = socket(m->baddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		probe_end(m, false);
		return;
	}
	if (connect(fd, (struct sockaddr *)&m->baddr, m->baddrlen) < 0 && errno != EINPROGRESS) {
		close(fd);
		probe_end(m, false);
		return;
	}
	m->pfd = fd;
	m->pwrote = false;
	cw_loop_watch(loop, fd, CW_WRITE, on_probe_io, m);
	m->probe_deadline = cw_loop_timer(loop, PROBE_TIMEOUT, on_probe_deadline, m);
}

/*
 * Where the backend listens: host and port from redis://, rediss:// or
 * db+postgresql:// URLs.  Resolved once, at start-up (before the loop runs).
 */
static void probe_setup(struct cw_monitor *m, const char *url)
{
	const char *p = url ? strstr(url, "://") : NULL;
	if (!url || !*url || !strcmp(url, "disabled") || !p)
		return;
	m->backend_configured = true;
	/* PING only in clear text; rediss:// (TLS) and databases: an accepted connection */
	m->redis = !strncmp(url, "redis://", 8);
	const char *defport = !strncmp(url, "redis", 5) ? "6379" : "5432";
	p += 3;
	size_t alen = strcspn(p, "/?#");
	const char *at = memrchr(p, '@', alen);
	if (at) {
		alen -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	char host[256] = "", port[8];
	snprintf(port, sizeof(port), "%s", defport);
	if (*p == '[') {
		const char *rb = memchr(p, ']', alen);
		if (rb) {
			snprintf(host, sizeof(host), "%.*s", (int)(rb - p - 1), p + 1);
			if (rb[1] == ':')
				snprintf(port, sizeof(port), "%.*s", (int)(alen - (size_t)(rb + 2 - p)),
					 rb + 2);
		}
	} else {
		const char *colon = memchr(p, ':', alen);
		size_t hl = colon ? (size_t)(colon - p) : alen;
		snprintf(host, sizeof(host), "%.*s", (int)(hl < 255 ? hl : 255), p);
		if (colon)
			snprintf(port, sizeof(port), "%.*s", (int)(alen - hl - 1), colon + 1);
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	if (!host[0] || getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
		cw_log(CW_LOG_WARNING, "http", "cannot resolve the result backend's address for "
		       "readiness probes; reporting it as up");
		m->backend_configured = false;
		return;
	}
	memcpy(&m->baddr, ai->ai_addr, ai->ai_addrlen);
	m->baddrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	probe_tick(m->w->loop, m);
}

/* ---- queue depth -------------------------------------------------------- */

static void on_depth(void *arg, const char *queue, long depth)
{
	struct worker *w = arg;
	cw_metrics_queue_depth(w->metrics, queue, depth);
}

static void depth_tick(struct cw_loop *loop, void *arg)
{
	struct cw_monitor *m = arg;
	struct worker *w = m->w;
	m->depth_timer = cw_loop_timer(loop, DEPTH_INTERVAL, depth_tick, m);
	if (!w->bops->queue_depth || !w->bops->connected(w->broker))
		return;
	const char *const *qs = NULL;
	int n = w->bops->queues ? w->bops->queues(w->broker, &qs) : 0;
	for (int i = 0; i < n; i++)
		w->bops->queue_depth(w->broker, qs[i], on_depth, w);
}

/* ---- routes ------------------------------------------------------------- */

static void sample_children(struct cw_monitor *m, bool rss)
{
	struct worker *w = m->w;
	int slots = cw_pool_slots(w->pool);
	if (slots > m->capkids) {
		struct cw_metrics_child *k = realloc(m->kids, (size_t)slots * sizeof(*k));
		if (k) {
			m->kids = k;
			m->capkids = slots;
		}
	}
	m->nkids = 0;
	for (int i = 0; i < slots && m->nkids < m->capkids; i++) {
		pid_t pid = cw_pool_pid(w->pool, i);
		if (pid <= 0)
			continue;
		m->kids[m->nkids++] = (struct cw_metrics_child){
			.slot = i, .pid = pid, .busy = i < w->nslots && w->running[i],
			.rss_kib = rss && w->cfg->pool_kind == CW_POOL_PREFORK ? cw_proc_rss_kib(pid) : 0};
	}
}

static int route(void *arg, const char *path, struct cw_mbuf *body, const char **ctype)
{
	struct cw_monitor *m = arg;
	struct worker *w = m->w;

	if (!strcmp(path, "/health/live")) {
		cw_mbuf_puts(body, "{\"status\":\"live\"}\n");
		*ctype = "application/json";
		return 200;
	}
	if (!strcmp(path, "/health/ready")) {
		sample_children(m, false);
		int busy = 0;
		for (int i = 0; i < m->nkids; i++)
			busy += m->kids[i].busy;
		bool broker = w->bops->connected(w->broker);
		bool backend = !m->backend_configured || m->backend_up;
		bool children = m->nkids > 0;
		bool running = w->phase == RUNNING;
		bool ok = broker && backend && children && running;
		cw_mbuf_printf(body, "{\"status\":\"%s\",\"broker\":\"%s\",\"backend\":\"%s\","
			       "\"children\":{\"busy\":%d,\"idle\":%d},\"down\":[",
			       ok ? "ready" : "unavailable", broker ? "up" : "down",
			       !m->backend_configured ? "none" : backend ? "up" : "down", busy,
			       m->nkids - busy);
		const char *sep = "";
		if (!broker) {
			cw_mbuf_printf(body, "%s\"broker\"", sep);
			sep = ",";
		}
		if (!backend) {
			cw_mbuf_printf(body, "%s\"backend\"", sep);
			sep = ",";
		}
		if (!children) {
			cw_mbuf_printf(body, "%s\"children\"", sep);
			sep = ",";
		}
		if (!running)
			cw_mbuf_printf(body, "%s\"shutting_down\"", sep);
		cw_mbuf_puts(body, "]}\n");
		*ctype = "application/json";
		return ok ? 200 : 503;
	}
	if (!strcmp(path, "/metrics")) {
		sample_children(m, true);
		struct cw_metrics_sample s = {
			.eta = (long)w->neta, .children = m->kids, .nchildren = m->nkids,
			.master_rss_kib = cw_proc_rss_kib(getpid()),
			.broker_up = w->bops->connected(w->broker), .backend_up = m->backend_up,
			.backend_configured = m->backend_configured};
		s.reserved = (long)w->nready;
		for (int b = 0; b < w->nbuckets; b++)
			s.reserved += (long)w->buckets[b]->n;
		for (int r = 0; r < CW_RECYCLE_N; r++)
			s.recycles[r] = cw_pool_recycles(w->pool, (enum cw_recycle_reason)r);
		/* one allocation of the last scrape's size instead of doubling up to it */
		cw_mbuf_reserve(body, m->last_metrics + m->last_metrics / 8);
		cw_metrics_render(w->metrics, &s, body);
		m->last_metrics = body->len;
		*ctype = "text/plain; version=0.0.4; charset=utf-8";
		return 200;
	}
	cw_mbuf_puts(body, "not found; try /metrics, /health/live or /health/ready\n");
	return 404;
}

/* ---- life cycle --------------------------------------------------------- */

int cw_monitor_start(struct worker *w, struct cw_error *err)
{
	if (!w->cfg->http_listen || !*w->cfg->http_listen)
		return CW_OK;
	struct cw_monitor *m = calloc(1, sizeof(*m));
	w->metrics = cw_metrics_new(MAX_TASK_LABELS, CW_VERSION, features);
	if (!m || !w->metrics) {
		free(m);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	m->w = w;
	m->pfd = -1;
	w->monitor = m;
	m->http = cw_http_new(w->loop, w->cfg->http_listen, route, m, err);
	if (!m->http)
		return err->code ? err->code : CW_EIO;
	cw_log(CW_LOG_INFO, "http", "serving /metrics, /health/live and /health/ready on %s "
	       "(port %d)", w->cfg->http_listen, cw_http_port(m->http));
	probe_setup(m, w->cfg->result_backend);
	return CW_OK;
}

void cw_monitor_started(struct worker *w)
{
	struct cw_monitor *m = w->monitor;
	if (m && !m->depth_timer)
		depth_tick(w->loop, m);
}

void cw_monitor_free(struct worker *w)
{
	struct cw_monitor *m = w->monitor;
	if (m) {
		if (m->pfd >= 0 || m->probe_deadline)
			probe_end(m, m->backend_up);
		if (m->probe_timer)
			cw_loop_timer_cancel(w->loop, m->probe_timer);
		if (m->depth_timer)
			cw_loop_timer_cancel(w->loop, m->depth_timer);
		cw_http_free(m->http);
		free(m->kids);
		free(m);
	}
	w->monitor = NULL;
	cw_metrics_free(w->metrics);
	w->metrics = NULL;
}
