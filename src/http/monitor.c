/*
 * --http: health probes and Prometheus metrics for the master.
 *
 * Everything here runs in the master's loop and never blocks:
 *  - the HTTP server (src/http/http.c) answers from state already in memory;
 *  - queue depths are sampled every DEPTH_INTERVAL seconds through the
 *    broker's optional queue_depth op (not per scrape);
 *  - the result backend is probed every PROBE_INTERVAL seconds with a
 *    non-blocking TCP connect (and the backend's own greeting, e.g. a Redis
 *    PING, where its ops give one: cw_backend_probe_target); readiness uses the
 *    cached outcome of the last probe.  The master's own backend handle is
 *    synchronous, so it is never used for this.
 */
#include "http/monitor.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "backend/backend.h"
#include "consumer/worker.h"
#include "pool/pool.h"
#include "cw_build.h"
#include "http/http.h"
#include "http/metrics.h"
#include "loop/loop.h"
#include "util/log.h"

#define DEPTH_INTERVAL 2.0
#define PROBE_INTERVAL 2.0
#define PROBE_TIMEOUT 1.5

struct cw_monitor {
	struct cw_worker *w;
	struct cw_http *http;
	uint64_t depth_timer, probe_timer, probe_deadline;
	/* backend probe */
	struct cw_loop *loop;
	bool backend_configured, backend_up, probed;
	char hello[64];           /* bytes to send once connected; "" = connecting is all */
	char answers[16];         /* first reply bytes that mean "up"; "" = any reply */
	struct sockaddr_storage baddr;
	socklen_t baddrlen;
	int pfd;
	bool pwrote;
	struct cw_metrics_child *kids;
	int nkids, capkids;
	size_t last_metrics;      /* bytes of the last /metrics body */
};

/* ---- backend probe ------------------------------------------------------ */

static void probe_end(struct cw_monitor *m, bool up)
{
	if (m->pfd >= 0) {
		cw_loop_watch(m->loop, m->pfd, 0, NULL, NULL);
		close(m->pfd);
		m->pfd = -1;
	}
	if (m->probe_deadline)
		cw_loop_timer_cancel(m->loop, m->probe_deadline);
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
		if (!m->hello[0]) {
			probe_end(m, true);  /* accepting connections is all we can see */
			return;
		}
		size_t hl = strlen(m->hello);
		if (send(fd, m->hello, hl, MSG_NOSIGNAL) != (ssize_t)hl) {
			probe_end(m, false);
			return;
		}
		m->pwrote = true;
		cw_loop_watch(m->loop, fd, CW_READ, on_probe_io, m);
		return;
	}
	if (!(ev & CW_READ))
		return;
	char buf[64];
	ssize_t r = recv(fd, buf, sizeof(buf), 0);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* an answer of the expected kind (Redis: +PONG, or an error such as -NOAUTH) */
	probe_end(m, r > 0 && (!m->answers[0] || strchr(m->answers, buf[0])));
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
	if (!m->probe_deadline) {
		cw_log(CW_LOG_ERROR, "http", "out of memory arming the backend probe's timeout");
		probe_end(m, false);
	}
}

/* Where the backend listens, from its ops; resolved once, at start-up (before the loop runs). */
static void probe_setup(struct cw_monitor *m, const char *url)
{
	struct cw_probe_target t;
	if (cw_backend_probe_target(url, &t) != CW_OK)
		return;
	m->backend_configured = true;
	snprintf(m->hello, sizeof(m->hello), "%s", t.hello ? t.hello : "");
	snprintf(m->answers, sizeof(m->answers), "%s", t.answers ? t.answers : "");
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	if (!t.host[0] || getaddrinfo(t.host, t.port, &hints, &ai) != 0 || !ai) {
		cw_log(CW_LOG_WARNING, "http", "cannot resolve the result backend's address for "
		       "readiness probes; reporting it as up");
		m->backend_configured = false;
		return;
	}
	memcpy(&m->baddr, ai->ai_addr, ai->ai_addrlen);
	m->baddrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	m->probe_timer = cw_loop_every(m->loop, PROBE_INTERVAL, probe_tick, m);
	if (!m->probe_timer)
		cw_log(CW_LOG_ERROR, "http", "out of memory arming the backend probe; readiness "
		       "keeps the first probe's answer");
	probe_tick(m->loop, m);
}

/* ---- queue depth -------------------------------------------------------- */

static void on_depth(void *arg, const char *queue, long depth)
{
	struct cw_monitor *m = arg;
	cw_metrics_queue_depth(cw_worker_metrics(m->w), queue, depth);
}

static void depth_tick(struct cw_loop *loop, void *arg)
{
	struct cw_monitor *m = arg;
	struct cw_broker *b = cw_worker_broker(m->w);
	(void)loop;
	if (!b->ops->queue_depth || !b->ops->connected(b))
		return;
	const char *const *qs = NULL;
	int n = b->ops->queues ? b->ops->queues(b, &qs) : 0;
	for (int i = 0; i < n; i++)
		b->ops->queue_depth(b, qs[i], on_depth, m);
}

/* ---- routes ------------------------------------------------------------- */

static void sample_children(struct cw_monitor *m, bool rss)
{
	struct cw_worker *w = m->w;
	struct cw_pool *pool = cw_worker_pool(w);
	bool prefork = cw_worker_config(w)->pool_kind == CW_POOL_PREFORK;
	int slots = cw_pool_slots(pool);
	if (slots > m->capkids) {
		struct cw_metrics_child *k = realloc(m->kids, (size_t)slots * sizeof(*k));
		if (k) {
			m->kids = k;
			m->capkids = slots;
		}
	}
	m->nkids = 0;
	for (int i = 0; i < slots && m->nkids < m->capkids; i++) {
		pid_t pid = cw_pool_pid(pool, i);
		if (pid <= 0)
			continue;
		m->kids[m->nkids++] = (struct cw_metrics_child){
			.slot = i, .pid = pid, .busy = cw_worker_slot_busy(w, i),
			.rss_kib = rss && prefork ? cw_proc_rss_kib(pid) : 0};
	}
}

static int route(void *arg, const char *path, struct cw_mbuf *body, const char **ctype)
{
	struct cw_monitor *m = arg;
	struct cw_worker *w = m->w;
	struct cw_broker *b = cw_worker_broker(w);
	struct cw_worker_counts k;

	cw_worker_counts(w, &k);
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
		bool broker = b->ops->connected(b);
		bool backend = !m->backend_configured || m->backend_up;
		bool children = m->nkids > 0;
		bool running = k.running;
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
			.eta = k.scheduled, .reserved = k.reserved, .children = m->kids, .nchildren = m->nkids,
			.master_rss_kib = cw_proc_rss_kib(getpid()),
			.broker_up = b->ops->connected(b), .backend_up = m->backend_up,
			.backend_configured = m->backend_configured};
		for (int r = 0; r < CW_RECYCLE_N; r++)
			s.recycles[r] = cw_pool_recycles(cw_worker_pool(w), (enum cw_recycle_reason)r);
		/* one allocation of the last scrape's size instead of doubling up to it */
		cw_mbuf_reserve(body, m->last_metrics + m->last_metrics / 8);
		cw_metrics_render(cw_worker_metrics(w), &s, body);
		m->last_metrics = body->len;
		*ctype = "text/plain; version=0.0.4; charset=utf-8";
		return 200;
	}
	cw_mbuf_puts(body, "not found; try /metrics, /health/live or /health/ready\n");
	return 404;
}

/* ---- life cycle --------------------------------------------------------- */

int cw_monitor_start(struct cw_worker *w, struct cw_monitor **out, struct cw_error *err)
{
	const struct cw_config *cfg = cw_worker_config(w);
	*out = NULL;
	if (!cfg->http_listen || !*cfg->http_listen)
		return CW_OK;
	struct cw_monitor *m = calloc(1, sizeof(*m));
	if (!m) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	m->w = w;
	m->loop = cw_worker_loop(w);
	m->pfd = -1;
	m->http = cw_http_new(m->loop, cfg->http_listen, route, m, err);
	if (!m->http) {
		free(m);
		return err->code ? err->code : CW_EIO;
	}
	*out = m;
	cw_log(CW_LOG_INFO, "http", "serving /metrics, /health/live and /health/ready on %s "
	       "(port %d)", cfg->http_listen, cw_http_port(m->http));
	probe_setup(m, cfg->result_backend);
	return CW_OK;
}

void cw_monitor_started(struct cw_monitor *m)
{
	if (m && !m->depth_timer) {
		m->depth_timer = cw_loop_every(m->loop, DEPTH_INTERVAL, depth_tick, m);
		depth_tick(m->loop, m);
	}
}

void cw_monitor_free(struct cw_monitor *m)
{
	if (!m)
		return;
	if (m->pfd >= 0 || m->probe_deadline)
		probe_end(m, m->backend_up);
	if (m->probe_timer)
		cw_loop_timer_cancel(m->loop, m->probe_timer);
	if (m->depth_timer)
		cw_loop_timer_cancel(m->loop, m->depth_timer);
	cw_http_free(m->http);
	free(m->kids);
	free(m);
}
