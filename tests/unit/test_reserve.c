/*
 * Unit tests: the reserve (held messages, the prefetch budget) and task rate
 * limits (token buckets and the messages waiting on them), driven by the
 * loop with an injected clock: no sleeping, no wall-clock assertions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/ratelimit.h"
#include "consumer/reserve.h"
#include "loop/loop.h"
#include "util/err.h"

#include "check.h"

static double fake_now;

static double fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

static struct held *mk(const char *task, const char *id)
{
	struct held *h = calloc(1, sizeof(*h));
	if (!h)
		abort();
	h->req.task = strdup(task);
	h->req.id = strdup(id);
	return h;
}

static void unmk(struct held *h)
{
	free(h->req.task);
	free(h->req.id);
	free(h);
}

static void count_cb(void *arg, struct held *h, enum cw_held_where where)
{
	int *n = arg;
	(void)h;
	n[where]++;
}

static void test_budget(void)
{
	struct cw_reserve *r = cw_reserve_new(2);
	struct held *a = mk("t", "a"), *b = mk("t", "b"), *c = mk("t", "c"), *e = mk("t", "e");

	CHECK(r != NULL);
	cw_reserve_set_limit(r, 2);
	CHECK(cw_reserve_credit(r, 0) == 2);
	CHECK(cw_reserve_push(r, a));
	CHECK(cw_reserve_push(r, b));
	/* the budget is spent: the broker gets no more credit */
	CHECK(cw_reserve_credit(r, 0) == 0);
	CHECK(cw_reserve_counted(r) == 2);
	/* ETA-held messages are outside the budget, as Celery's */
	CHECK(cw_reserve_hold(r, e));
	CHECK(cw_reserve_credit(r, 0) == 0 && cw_reserve_counted(r) == 2 && cw_reserve_neta(r) == 1);
	/* FIFO */
	struct held *first = cw_reserve_pop(r);
	CHECK(first == a);
	cw_reserve_run(r, 1, first);
	CHECK(cw_reserve_running(r, 1) == a && a->slot == 1);
	CHECK(cw_reserve_active(r) == 1 && cw_reserve_tasks(r) == 2);
	/* running still counts */
	CHECK(cw_reserve_credit(r, 0) == 0);
	/* a finished task leaves the budget once */
	CHECK(cw_reserve_finish(r, 1) == a);
	CHECK(cw_reserve_finish(r, 1) == NULL);
	cw_reserve_uncount(r, a);
	cw_reserve_uncount(r, a);
	CHECK(cw_reserve_counted(r) == 1 && cw_reserve_credit(r, 0) == 1);
	/* a push over the limit is still kept (the broker may have sent one in flight) */
	CHECK(cw_reserve_push(r, c));
	CHECK(cw_reserve_counted(r) == 2 && cw_reserve_credit(r, 0) == 0);
	cw_reserve_set_limit(r, 1);
	CHECK(cw_reserve_credit(r, 0) == 0);

	enum cw_held_where where;
	CHECK(cw_reserve_find(r, "c", &where) == c && where == CW_HELD_READY);
	CHECK(cw_reserve_find(r, "e", &where) == e && where == CW_HELD_ETA);
	CHECK(cw_reserve_find(r, "a", &where) == NULL);
	int n[3] = {0};
	cw_reserve_each(r, ~0u, count_cb, n);
	CHECK(n[CW_HELD_READY] == 2 && n[CW_HELD_ETA] == 1 && n[CW_HELD_RUNNING] == 0);

	CHECK(cw_reserve_unhold(r, e));
	CHECK(!cw_reserve_unhold(r, e));
	CHECK(cw_reserve_grow(r, 4) == CW_OK && cw_reserve_slots(r) == 4);
	CHECK(cw_reserve_running(r, 3) == NULL && cw_reserve_running(r, 4) == NULL);

	/* drain hands over ready and ETA messages, in order */
	CHECK(cw_reserve_hold(r, e));
	memset(n, 0, sizeof(n));
	CHECK(cw_reserve_drain(r, count_cb, n) == 3);
	CHECK(n[CW_HELD_READY] == 2 && n[CW_HELD_ETA] == 1);
	CHECK(cw_reserve_nready(r) == 0 && cw_reserve_neta(r) == 0 && cw_reserve_pop(r) == NULL);
	/* the budget still counts them until the owner uncounts */
	CHECK(cw_reserve_counted(r) == 2);
	cw_reserve_uncount(r, b);
	cw_reserve_uncount(r, c);
	CHECK(cw_reserve_counted(r) == 0);
	/* the window grows by the ETA-held/rate-limited messages, up to worker_eta_task_limit */
	cw_reserve_set_limit(r, 4);
	CHECK(cw_reserve_window(r, 3) == 7 && cw_reserve_credit(r, 3) == 4);
	cw_reserve_set_eta_cap(r, 5);
	CHECK(cw_reserve_window(r, 3) == 5);
	CHECK(cw_reserve_credit(r, 3) == 2);       /* 5 - 0 counted - 3 held */
	CHECK(cw_reserve_credit(r, 0) == 4);       /* no ETA: the cap leaves the limit alone */
	cw_reserve_set_eta_cap(r, 2);              /* a cap under the limit does not shrink it */
	CHECK(cw_reserve_window(r, 0) == 4 && cw_reserve_window(r, 6) == 4);
	/* worker_disable_prefetch: a cap of one per process bounds the credit, not the window */
	cw_reserve_set_eta_cap(r, 0);
	cw_reserve_set_cap(r, 2);
	CHECK(cw_reserve_credit(r, 0) == 2 && cw_reserve_window(r, 0) == 4);
	CHECK(cw_reserve_push(r, b));
	CHECK(cw_reserve_credit(r, 0) == 1);
	CHECK(cw_reserve_credit(r, 6) == 1);       /* ETA-held messages do not lift the cap */
	CHECK(cw_reserve_push(r, c));
	CHECK(cw_reserve_credit(r, 0) == 0);
	cw_reserve_set_cap(r, 0);                  /* no cap: the limit again */
	CHECK(cw_reserve_credit(r, 0) == 2);
	CHECK(cw_reserve_pop(r) == b && cw_reserve_pop(r) == c);
	cw_reserve_uncount(r, b);
	cw_reserve_uncount(r, c);
	cw_reserve_free(r);
	unmk(a);
	unmk(b);
	unmk(c);
	unmk(e);
}

static void test_bucket(void)
{
	struct cw_bucket b;
	cw_bucket_init(&b, 2.0, 100.0);        /* 2/s, capacity 1, full */
	CHECK(cw_bucket_take(&b, 100.0));
	CHECK(!cw_bucket_take(&b, 100.0));
	CHECK(cw_bucket_wait(&b, 100.0) > 0.49 && cw_bucket_wait(&b, 100.0) < 0.51);
	CHECK(!cw_bucket_take(&b, 100.25));
	CHECK(cw_bucket_wait(&b, 100.25) > 0.24 && cw_bucket_wait(&b, 100.25) < 0.26);
	CHECK(cw_bucket_take(&b, 100.5));
	/* capacity 1: a long idle time does not bank tokens */
	CHECK(cw_bucket_take(&b, 200.0));
	CHECK(!cw_bucket_take(&b, 200.0));
	/* rate 0: no limit */
	cw_bucket_init(&b, 0, 0);
	for (int i = 0; i < 10; i++)
		CHECK(cw_bucket_take(&b, 0));
	CHECK(cw_bucket_wait(&b, 0) == 0);
}

struct got {
	struct held *h[16];
	int n, calls;
};

static void on_ready(void *arg, struct held **hs, size_t n)
{
	struct got *g = arg;
	g->calls++;
	for (size_t i = 0; i < n && g->n < 16; i++)
		g->h[g->n++] = hs[i];
}

static void step(struct cw_loop *l, double to)
{
	fake_now = to;
	CHECK(cw_loop_run_once(l, 0) >= 0);
}

static void test_ratelimit(void)
{
	struct cw_loop *l = cw_loop_new();
	struct got g = {0};
	struct held *m[5];

	fake_now = 1000;
	cw_loop_set_clock(l, fake_clock, NULL);
	struct cw_ratelimit *rl = cw_ratelimit_new(l, on_ready, &g);
	CHECK(rl != NULL);
	for (int i = 0; i < 5; i++) {
		char id[8];
		snprintf(id, sizeof(id), "m%d", i);
		m[i] = mk(i < 4 ? "slow" : "free", id);
	}
	/* no limit set: everything goes ahead */
	CHECK(cw_ratelimit_admit(rl, m[0]) == 0);
	CHECK(cw_ratelimit_set(rl, "slow", 1.0) == CW_OK);
	CHECK(cw_ratelimit_rate(rl, "slow") == 1.0 && cw_ratelimit_rate(rl, "free") == 0);
	/* the bucket starts full: one goes, the next ones wait in line */
	CHECK(cw_ratelimit_admit(rl, m[0]) == 0);
	CHECK(cw_ratelimit_admit(rl, m[1]) == 1);
	CHECK(cw_ratelimit_admit(rl, m[2]) == 1);
	CHECK(cw_ratelimit_admit(rl, m[3]) == 1);
	/* other task names are never held back */
	CHECK(cw_ratelimit_admit(rl, m[4]) == 0);
	CHECK(cw_ratelimit_waiting(rl) == 3);
	CHECK(cw_ratelimit_find(rl, "m2") == m[2] && cw_ratelimit_find(rl, "m4") == NULL);
	/* not yet due */
	step(l, 1000.5);
	CHECK(g.n == 0);
	/* one token a second, oldest first */
	step(l, 1001.0);
	CHECK(g.n == 1 && g.h[0] == m[1]);
	step(l, 1001.9);
	CHECK(g.n == 1);
	step(l, 1002.0);
	CHECK(g.n == 2 && g.h[1] == m[2]);
	CHECK(cw_ratelimit_waiting(rl) == 1);
	/* a faster rate applies to the ones still waiting (times exact in binary) */
	CHECK(cw_ratelimit_set(rl, "slow", 4.0) == CW_OK);
	step(l, 1002.125);
	CHECK(g.n == 2);
	step(l, 1002.25);
	CHECK(g.n == 3 && g.h[2] == m[3]);
	CHECK(cw_ratelimit_waiting(rl) == 0);
	/* the token was just spent: the next ones wait again */
	CHECK(cw_ratelimit_admit(rl, m[1]) == 1);
	CHECK(cw_ratelimit_admit(rl, m[2]) == 1);
	/* lifting the limit releases everything waiting at once, in one call */
	int calls = g.calls;
	CHECK(cw_ratelimit_set(rl, "slow", 0) == CW_OK);
	CHECK(g.calls == calls + 1 && g.n == 5 && g.h[3] == m[1] && g.h[4] == m[2]);
	CHECK(cw_ratelimit_waiting(rl) == 0);
	CHECK(cw_ratelimit_admit(rl, m[0]) == 0);
	/* drain with stop: waiting ones are handed over, no timer fires later */
	step(l, 1010);
	CHECK(cw_ratelimit_set(rl, "slow", 0.5) == CW_OK);
	CHECK(cw_ratelimit_admit(rl, m[0]) == 0);
	CHECK(cw_ratelimit_admit(rl, m[1]) == 1);
	int n[3] = {0};
	CHECK(cw_ratelimit_drain(rl, true, count_cb, n) == 1 && n[CW_HELD_READY] == 1);
	int before = g.n;
	step(l, 2000);
	CHECK(g.n == before);
	cw_ratelimit_free(rl);
	cw_loop_free(l);
	for (int i = 0; i < 5; i++)
		unmk(m[i]);
}

int main(void)
{
	test_budget();
	test_bucket();
	test_ratelimit();
	return check_summary();
}
