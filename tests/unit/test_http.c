/*
 * The HTTP request parser and the metrics table: label escaping, the
 * bounded label set, the exposition text, and the cost of a render with
 * 10k task names seen (must stay well under a millisecond of CPU).  The
 * server under floods, on loopback with a fake clock: past the cap the
 * oldest idle connection goes (a busy one last) and the newcomer is served,
 * an oversized head gets 431, a slow one is closed at its deadline, the cap
 * follows a low descriptor limit, and the limit is raised.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "http/http.h"
#include "http/metrics.h"
#include "loop/loop.h"

static int parse(const char *s, struct cw_http_req *r)
{
	return cw_http_parse(s, strlen(s), CW_HTTP_MAX_HEAD, r);
}

static void test_parse(void)
{
	struct cw_http_req r;
	CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 200);
	CHECK(!strcmp(r.method, "GET") && !strcmp(r.path, "/metrics"));
	CHECK(r.head_len == strlen("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
	CHECK(parse("GET /health/ready?x=1 HTTP/1.0\n\n", &r) == 200);
	CHECK(!strcmp(r.path, "/health/ready"));
	CHECK(parse("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", &r) == 200);
	CHECK(!strcmp(r.method, "POST"));
	/* incomplete */
	CHECK(parse("", &r) == 0);
	CHECK(parse("GE", &r) == 0);
	CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", &r) == 0);
	/* garbage is refused at once, not after the timeout */
	CHECK(parse("\x16\x03\x01\x02", &r) == 400);
	CHECK(parse("get / HTTP/1.1\r\n\r\n", &r) == 400);
	CHECK(parse("GET metrics HTTP/1.1\r\n\r\n", &r) == 400);
	CHECK(parse("GET / HTTP/2.0\r\n\r\n", &r) == 505);
	CHECK(parse("GET / FOO\r\n\r\n", &r) == 400);
	CHECK(parse("GET / HTTP/1.1\r\nno colon\r\n\r\n", &r) == 400);
	CHECK(parse("GET / HTTP/1.1\r\n folded: x\r\n\r\n", &r) == 400);
	CHECK(parse("GET / HTTP/1.1\r\nA: \x01\r\n\r\n", &r) == 400);
	CHECK(cw_http_parse("GET / HTTP/1.1\r\nA: b\0\r\n\r\n", 24, 8192, &r) == 400);
	/* limits */
	char *big = malloc(CW_HTTP_MAX_HEAD + 100);
	strcpy(big, "GET / HTTP/1.1\r\n");
	size_t n = strlen(big);
	while (n < CW_HTTP_MAX_HEAD + 50) {
		memcpy(big + n, "X-Pad: aaaaaaaaaa\r\n", 19);
		n += 19;
	}
	big[n] = '\0';
	CHECK(cw_http_parse(big, n, CW_HTTP_MAX_HEAD, &r) == 431);
	memset(big, 'a', n);
	memcpy(big, "GET /", 5);
	CHECK(cw_http_parse(big, n, CW_HTTP_MAX_HEAD, &r) == 414);
	free(big);
	char longpath[400] = "GET /";
	memset(longpath + 5, 'p', 300);
	strcpy(longpath + 305, " HTTP/1.1\r\n\r\n");
	CHECK(parse(longpath, &r) == 414);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void test_metrics(void)
{
	struct cw_metrics *m = cw_metrics_new(3, "1.0", "redis");
	struct cw_metrics_sample s = {.broker_up = true};
	struct cw_mbuf b = {0};

	CHECK(m);
	cw_metrics_task(m, "a", CW_M_RECEIVED, 1);
	cw_metrics_task(m, "q\"u\\o\nte", CW_M_RECEIVED, 1);
	cw_metrics_task(m, "bad\xff", CW_M_RECEIVED, 1);    /* not UTF-8: other */
	cw_metrics_task(m, "c", CW_M_RECEIVED, 2);
	cw_metrics_task(m, "d", CW_M_RECEIVED, 1);          /* over the cap: other */
	cw_metrics_task(m, "e", CW_M_FAILED, 1);
	cw_metrics_runtime(m, "a", 0.2);
	cw_metrics_runtime(m, "a", 7);
	cw_metrics_queue_depth(m, "celery", 12);
	CHECK(cw_metrics_task_labels(m) == 4);
	cw_metrics_render(m, &s, &b);
	CHECK(!b.oom);
	CHECK(strstr(b.p, "cworker_tasks_total{task=\"a\",state=\"received\"} 1\n"));
	CHECK(strstr(b.p, "cworker_tasks_total{task=\"q\\\"u\\\\o\\nte\",state=\"received\"} 1\n"));
	CHECK(strstr(b.p, "cworker_tasks_total{task=\"other\",state=\"received\"} 2\n"));
	CHECK(strstr(b.p, "cworker_tasks_total{task=\"other\",state=\"failed\"} 1\n"));
	CHECK(strstr(b.p, "cworker_tasks_total{task=\"c\",state=\"received\"} 2\n"));
	CHECK(!strstr(b.p, "task=\"d\""));
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_bucket{task=\"a\",le=\"0.1\"} 0\n"));
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_bucket{task=\"a\",le=\"0.25\"} 1\n"));
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_bucket{task=\"a\",le=\"10\"} 2\n"));
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_count{task=\"a\"} 2\n"));
	CHECK(strstr(b.p, "cworker_queue_depth{queue=\"celery\"} 12\n"));
	CHECK(count(b.p, "# TYPE cworker_tasks_total counter") == 1);
	/* the cached histogram follows new observations */
	cw_metrics_runtime(m, "a", 0.001);
	b.len = 0;
	cw_metrics_render(m, &s, &b);
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_count{task=\"a\"} 3\n"));
	CHECK(strstr(b.p, "cworker_task_runtime_seconds_bucket{task=\"a\",le=\"0.005\"} 1\n"));
	cw_metrics_queue_depth(m, "celery", -1);
	b.len = 0;
	cw_metrics_render(m, &s, &b);
	CHECK(!strstr(b.p, "queue=\"celery\""));
	cw_mbuf_free(&b);
	cw_metrics_free(m);
	cw_metrics_task(NULL, "x", CW_M_RECEIVED, 1);     /* --http off: no-ops */
	cw_metrics_runtime(NULL, "x", 1);
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 10k task names seen, every one received, started, finished: a render's CPU time. */
static void test_render_cost(void)
{
	struct cw_metrics *m = cw_metrics_new(1000, "1.0", "redis");
	struct cw_metrics_child kids[8];
	struct cw_metrics_sample s = {.children = kids, .nchildren = 8, .broker_up = true};
	struct cw_mbuf b = {0};
	char name[64];

	for (int i = 0; i < 8; i++)
		kids[i] = (struct cw_metrics_child){.slot = i, .pid = 1000 + i, .rss_kib = 4096};
	for (int i = 0; i < 10000; i++) {
		snprintf(name, sizeof(name), "tasks.generated.task_%05d", i);
		cw_metrics_task(m, name, CW_M_RECEIVED, 1);
		cw_metrics_task(m, name, CW_M_STARTED, 1);
		cw_metrics_task(m, name, i % 3 ? CW_M_SUCCEEDED : CW_M_FAILED, 1);
		cw_metrics_runtime(m, name, (i % 100) / 10.0);
	}
	CHECK(cw_metrics_task_labels(m) == 1001);
	cw_metrics_render(m, &s, &b);   /* first render fills the histogram caches */
	int rounds = 50;
	double best = 1e9, total = 0;
	for (int r = 0; r < rounds; r++) {
		/* a few tasks change between scrapes, as under load */
		for (int i = 0; i < 20; i++) {
			snprintf(name, sizeof(name), "tasks.generated.task_%05d", (r * 37 + i * 101) % 10000);
			cw_metrics_task(m, name, CW_M_SUCCEEDED, 1);
			cw_metrics_runtime(m, name, 0.01);
		}
		b.len = 0;
		double t0 = cpu_now();
		cw_metrics_render(m, &s, &b);
		double dt = cpu_now() - t0;
		total += dt;
		best = dt < best ? dt : best;
	}
	printf("render with 10k task names seen (1001 labels, %zu bytes): mean %.0f us, best %.0f us\n",
	       b.len, total / rounds * 1e6, best * 1e6);
	/* the time is printed, not asserted (a benchmark, not a test); what is checked
	 * is that every render kept the 1001 labels and the same shape */
	CHECK(cw_metrics_task_labels(m) == 1001);
	CHECK(b.len > 0 && !b.oom);
	cw_mbuf_free(&b);
	cw_metrics_free(m);
}


/* ---- the server under floods -------------------------------------------- */

#define BIG_BODY (16u << 20)   /* more than loopback buffers hold: its writer stays busy */

static double fake_now = 1000.0;

static double fake_clock(void *arg)
{
	return *(double *)arg;
}

static int route(void *arg, const char *path, struct cw_mbuf *body, const char **ctype)
{
	(void)arg;
	(void)ctype;
	if (!strcmp(path, "/big")) {
		if (cw_mbuf_reserve(body, BIG_BODY)) {
			memset(body->p, 'x', BIG_BODY);
			body->len = BIG_BODY;
		}
		return 200;
	}
	cw_mbuf_puts(body, "ok\n");
	return 200;
}

/* A loopback client of port (connected through the backlog), non-blocking, sent what. */
static int client(int port, const char *what, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	if (what && send(fd, what, strlen(what), MSG_NOSIGNAL) < 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* What the server did to fd so far: 1 sent bytes, 0 closed it, -1 nothing yet. */
static int peer_state(int fd)
{
	char b[64];
	ssize_t r = recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
	if (r > 0)
		return 1;
	if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		return 0;
	return -1;
}

/* Turn the loop (a bounded number of short turns) until fd's state is want. */
static bool pump_until(struct cw_loop *loop, int fd, int want)
{
	for (int i = 0; i < 400; i++) {
		if (peer_state(fd) == want)
			return true;
		cw_loop_run_once(loop, 5);
	}
	return peer_state(fd) == want;
}

static void pump_conns(struct cw_loop *loop, struct cw_http *h, int n)
{
	for (int i = 0; i < 400 && cw_http_conns(h) != n; i++)
		cw_loop_run_once(loop, 5);
}

/* The whole response on fd (the server closes after it) into buf; its length. */
static size_t response(struct cw_loop *loop, int fd, char *buf, size_t cap)
{
	size_t n = 0;
	for (int i = 0; i < 400 && n + 1 < cap; i++) {
		ssize_t r = recv(fd, buf + n, cap - 1 - n, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r > 0)
			n += (size_t)r;
		else
			cw_loop_run_once(loop, 5);
	}
	buf[n] = '\0';
	return n;
}

static struct cw_http *server(struct cw_loop *loop, int *port)
{
	struct cw_error err = {0};
	cw_loop_set_clock(loop, fake_clock, &fake_now);
	struct cw_http *h = cw_http_new(loop, "127.0.0.1:0", route, NULL, &err);
	CHECK(h != NULL);
	*port = h ? cw_http_port(h) : 0;
	return h;
}

static void test_flood_evicts_oldest_idle(void)
{
	struct cw_loop *loop = cw_loop_new();
	int port;
	struct cw_http *h = server(loop, &port);
	if (!h)
		return;
	cw_http_set_max_conns(h, 4);
	const char *sent[] = {NULL, "GET /me", NULL, "GE"};  /* idle and slow ones */
	int fds[6];
	for (int i = 0; i < 4; i++)
		fds[i] = client(port, sent[i], 0);
	pump_conns(loop, h, 4);
	CHECK(cw_http_conns(h) == 4);
	/* at the cap, a probe: the oldest (fds[0]) makes room, the probe is answered */
	fds[4] = client(port, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	char buf[512];
	response(loop, fds[4], buf, sizeof(buf));
	CHECK(!strncmp(buf, "HTTP/1.1 200 OK\r\n", 17));
	CHECK(peer_state(fds[0]) == 0);
	CHECK(peer_state(fds[1]) == -1 && peer_state(fds[2]) == -1 && peer_state(fds[3]) == -1);
	CHECK(cw_http_conns(h) <= 4);
	/* the probe, served, is the newest idle one: the next newcomer evicts the slow fds[1] */
	fds[5] = client(port, NULL, 0);
	CHECK(pump_until(loop, fds[1], 0));
	pump_conns(loop, h, 4);
	CHECK(cw_http_conns(h) == 4);
	CHECK(peer_state(fds[2]) == -1 && peer_state(fds[3]) == -1 && peer_state(fds[5]) == -1);
	/* a lowered cap closes the oldest at once */
	cw_http_set_max_conns(h, 1);
	CHECK(cw_http_conns(h) == 1);
	CHECK(pump_until(loop, fds[2], 0) && pump_until(loop, fds[3], 0));
	CHECK(peer_state(fds[5]) == -1);
	for (int i = 0; i < 6; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	cw_http_free(h);
	cw_loop_free(loop);
}

static void test_flood_spares_a_busy_writer(void)
{
	struct cw_loop *loop = cw_loop_new();
	int port;
	struct cw_http *h = server(loop, &port);
	if (!h)
		return;
	cw_http_set_max_conns(h, 2);
	/* a reader too slow for its 16 MiB body: the response stays half written */
	int w = client(port, "GET /big HTTP/1.1\r\n\r\n", 4096);
	CHECK(pump_until(loop, w, 1));
	int idle = client(port, NULL, 0);
	pump_conns(loop, h, 2);
	CHECK(cw_http_conns(h) == 2);
	int fresh = client(port, NULL, 0);
	CHECK(pump_until(loop, idle, 0));
	CHECK(peer_state(w) == 1);   /* still there, bytes waiting, no EOF */
	char b[4096];
	CHECK(recv(w, b, sizeof(b), MSG_DONTWAIT) > 0);
	/* only when every connection is busy does a busy one go */
	int last = client(port, NULL, 0);
	CHECK(pump_until(loop, fresh, 0));
	CHECK(peer_state(w) == 1);
	close(w);
	close(idle);
	close(fresh);
	close(last);
	cw_http_free(h);
	cw_loop_free(loop);
}

static void test_big_head_and_slow_head(void)
{
	struct cw_loop *loop = cw_loop_new();
	int port;
	struct cw_http *h = server(loop, &port);
	if (!h)
		return;
	/* a head past the cap, arriving in pieces: 431 */
	int big = client(port, "GET /metrics HTTP/1.1\r\nX-Junk: ", 0);
	pump_conns(loop, h, 1);
	char junk[1024];
	memset(junk, 'j', sizeof(junk));
	for (int i = 0; i < 9; i++) {
		CHECK(send(big, junk, sizeof(junk), MSG_NOSIGNAL) == (ssize_t)sizeof(junk));
		cw_loop_run_once(loop, 5);
	}
	char buf[512];
	response(loop, big, buf, sizeof(buf));
	CHECK(!strncmp(buf, "HTTP/1.1 431 ", 13));
	close(big);
	pump_conns(loop, h, 0);
	CHECK(cw_http_conns(h) == 0);
	/* a head that stalls: open until its deadline, closed after it */
	int slow = client(port, "GET /metr", 0);
	pump_conns(loop, h, 1);
	fake_now += CW_HTTP_HEAD_TIMEOUT - 0.5;
	cw_loop_run_once(loop, 0);
	CHECK(peer_state(slow) == -1);
	fake_now += 1.0;
	CHECK(pump_until(loop, slow, 0));
	CHECK(cw_http_conns(h) == 0);
	close(slow);
	cw_http_free(h);
	cw_loop_free(loop);
}

static void test_fd_limit(void)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rlim_t hard = rl.rlim_max;
	/* a low soft limit when the server starts: the cap is half of it */
	struct rlimit low = {64, hard}, all = {hard, hard};
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	struct cw_loop *loop = cw_loop_new();
	int port;
	struct cw_http *h = server(loop, &port);
	CHECK(setrlimit(RLIMIT_NOFILE, &all) == 0);
	if (!h) {
		cw_loop_free(loop);
		return;
	}
	int fds[40];
	for (int i = 0; i < 40; i++) {
		fds[i] = client(port, NULL, 0);
		cw_loop_run_once(loop, 0);
	}
	CHECK(pump_until(loop, fds[7], 0));
	pump_conns(loop, h, 32);
	CHECK(cw_http_conns(h) == 32);
	CHECK(peer_state(fds[8]) == -1 && peer_state(fds[39]) == -1);
	for (int i = 0; i < 40; i++)
		close(fds[i]);
	pump_conns(loop, h, 0);
	CHECK(cw_http_conns(h) == 0);

	/*
	 * Out of descriptors below the cap (EMFILE on accept): the oldest
	 * connection gives its descriptor to the newcomer, which is served.
	 */
	for (int i = 0; i < 40; i++)
		fds[i] = client(port, i == 39 ? "GET / HTTP/1.1\r\n\r\n" : NULL, 0);
	struct rlimit tight = {(rlim_t)fds[39] + 8, hard};
	CHECK(setrlimit(RLIMIT_NOFILE, &tight) == 0);
	char buf[256];
	response(loop, fds[39], buf, sizeof(buf));
	CHECK(!strncmp(buf, "HTTP/1.1 200 OK\r\n", 17));
	CHECK(peer_state(fds[0]) == 0);
	CHECK(cw_http_conns(h) <= 8);
	CHECK(setrlimit(RLIMIT_NOFILE, &all) == 0);
	for (int i = 0; i < 40; i++)
		close(fds[i]);
	cw_http_free(h);
	cw_loop_free(loop);

	/* raised to what the full cap needs, or to the hard limit; never lowered */
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	long now = cw_http_raise_fd_limit();
	rlim_t want = hard < CW_HTTP_FD_WANT ? hard : CW_HTTP_FD_WANT;
	CHECK(now >= 0 && (rlim_t)now == want);
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == want && rl.rlim_max == hard);
	CHECK(setrlimit(RLIMIT_NOFILE, &all) == 0);
	CHECK(cw_http_raise_fd_limit() == (hard > LONG_MAX ? LONG_MAX : (long)hard));
}

int main(void)
{
	test_parse();
	test_metrics();
	test_render_cost();
	test_flood_evicts_oldest_idle();
	test_flood_spares_a_busy_writer();
	test_big_head_and_slow_head();
	test_fd_limit();
	return check_summary();
}
