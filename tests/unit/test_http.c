/*
 * The HTTP request parser and the metrics table: label escaping, the
 * bounded label set, the exposition text, and the cost of a render with
 * 10k task names seen (must stay well under a millisecond of CPU).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "http/http.h"
#include "http/metrics.h"

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
	const char *strict = getenv("CW_TEST_RENDER_BUDGET_US");
	double budget = strict ? atof(strict) : 5000; /* sanitizer/debug builds are slower */
	CHECK(total / rounds * 1e6 < budget);
	cw_mbuf_free(&b);
	cw_metrics_free(m);
}

int main(void)
{
	test_parse();
	test_metrics();
	test_render_cost();
	return check_summary();
}
