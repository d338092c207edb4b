/*
 * Unit tests: the event loop (src/loop) stepped with cw_loop_run_once under a
 * fake clock: timer order, cancel (root, last, fired, twice, stale ids of
 * reused slots), periodic timers, before-sleep hooks, fd watches.  Nothing
 * depends on wall-clock time; alarm() only guards against a loop that blocks.
 */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop/loop.h"
#include "util/err.h"

#include "check.h"

static double fake_now;

static double fake_clock(void *arg)
{
	return *(const double *)arg;
}

static struct cw_loop *new_loop(double start)
{
	struct cw_loop *l = cw_loop_new();

	if (!l)
		abort();
	fake_now = start;
	cw_loop_set_clock(l, fake_clock, &fake_now);
	return l;
}

/* xorshift64*: the same sequence on every run */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* ---- a reference model: every timer armed, in arm order ---------------- */

#define MAXT 20000

struct mtimer {
	uint64_t id;
	double when;
	bool pending;
	bool fired;
};

static struct mtimer model[MAXT];
static int nmodel;
static int fired_order[MAXT];
static int nfired;
static int bad_fires;	/* a cancelled timer fired, or one fired twice */

static void on_model(struct cw_loop *l, void *arg)
{
	int i = (int)(intptr_t)arg;

	(void)l;
	if (!model[i].pending)
		bad_fires++;
	if (nfired < MAXT)
		fired_order[nfired++] = i;
	model[i].fired = true;
	model[i].pending = false;
}

static int arm_model(struct cw_loop *l, double delay)
{
	int i = nmodel++;

	model[i].when = cw_loop_now(l) + (delay > 0 ? delay : 0);
	model[i].id = cw_loop_timer(l, delay, on_model, (void *)(intptr_t)i);
	model[i].pending = model[i].id != 0;
	model[i].fired = false;
	return i;
}

/* What fired since nfired was reset: exactly the timers due at now, by (when, arm order). */
static bool fired_as_model(double now)
{
	int prev = -1;

	for (int k = 0; k < nfired; k++) {
		int i = fired_order[k];
		if (model[i].when > now)
			return false;
		if (prev >= 0 && (model[prev].when > model[i].when ||
				  (prev > i && model[prev].when == model[i].when)))
			return false;
		prev = i;
	}
	for (int i = 0; i < nmodel; i++)
		if (model[i].pending && model[i].when <= now)
			return false;	/* due but not fired */
	return bad_fires == 0;
}

static void reset_model(void)
{
	nmodel = 0;
	nfired = 0;
	bad_fires = 0;
}

static void cancel_model(struct cw_loop *l, int i)
{
	cw_loop_timer_cancel(l, model[i].id);
	model[i].pending = false;
}

static int count_pending(void)
{
	int n = 0;

	for (int i = 0; i < nmodel; i++)
		n += model[i].pending;
	return n;
}

/* ---- timers ------------------------------------------------------------- */

static void test_many_timers_in_order(void)
{
	struct cw_loop *l = new_loop(1000.0);
	int n = 10000;

	reset_model();
	for (int i = 0; i < n; i++)
		/* millisecond grid: many equal deadlines, which must fire in arm order */
		arm_model(l, (double)rnd_below(5000) / 1000.0);
	CHECK(cw_loop_timers(l) == (size_t)n);
	CHECK(count_pending() == n);

	/* nothing is due yet: a 0 ms step fires nothing */
	fake_now = 999.0;
	CHECK(cw_loop_run_once(l, 0) == 0);

	/* step through time: each step fires exactly the due ones, in order */
	for (double t = 1000.0; t <= 1005.0; t += 0.25) {
		fake_now = t;
		CHECK(cw_loop_run_once(l, 0) >= 0);
	}
	CHECK(nfired == n);
	CHECK(fired_as_model(fake_now));
	CHECK(cw_loop_timers(l) == 0);
	cw_loop_free(l);
}

static void test_cancel_random(void)
{
	struct cw_loop *l = new_loop(0.0);
	int n = 10000, root = -1, last, cancelled = 0;

	reset_model();
	for (int i = 0; i < n; i++) {
		int k = arm_model(l, 1.0 + (double)rnd_below(100000) / 100.0);
		if (root < 0 || model[k].when < model[root].when)
			root = k;
	}
	last = n - 1;

	/* the root, the last armed, and the root again */
	cancel_model(l, root);
	cancel_model(l, last);
	cancel_model(l, root);
	CHECK(cw_loop_timers(l) == (size_t)n - 2);

	/* a third of the rest, some of them twice */
	for (int i = 0; i < n; i++) {
		if (rnd_below(3) != 0)
			continue;
		if (model[i].pending)
			cancelled++;
		cancel_model(l, i);
		if (rnd_below(4) == 0)
			cancel_model(l, i);
	}
	CHECK(cw_loop_timers(l) == (size_t)count_pending());
	CHECK(count_pending() == n - 2 - cancelled);

	/* fire the first half of the time range, then cancel fired ids: no effect */
	fake_now = 500.0;
	CHECK(cw_loop_run_once(l, 0) >= 0);
	CHECK(fired_as_model(fake_now));
	size_t left = cw_loop_timers(l);
	CHECK(left == (size_t)count_pending());
	for (int k = 0; k < nfired; k++)
		cw_loop_timer_cancel(l, model[fired_order[k]].id);
	CHECK(cw_loop_timers(l) == left);

	/* 0, unknown slots and garbage */
	cw_loop_timer_cancel(l, 0);
	cw_loop_timer_cancel(l, UINT64_MAX);
	cw_loop_timer_cancel(l, (uint64_t)7 << 32 | 0xfffffffeu);
	CHECK(cw_loop_timers(l) == left);

	fake_now = 2000.0;
	CHECK(cw_loop_run_once(l, 0) == (int)left);
	CHECK(fired_as_model(fake_now));
	CHECK(count_pending() == 0);
	CHECK(cw_loop_timers(l) == 0);
	cw_loop_free(l);
}

/* Random arm / cancel / advance against the model, so every heap path gets exercised. */
static void test_random_ops(void)
{
	struct cw_loop *l = new_loop(0.0);
	bool ok = true;

	reset_model();
	for (int step = 0; step < 15000 && nmodel < MAXT; step++) {
		unsigned op = rnd_below(10);
		if (op < 5) {
			arm_model(l, (double)rnd_below(200) / 10.0);
		} else if (op < 8 && nmodel) {
			cancel_model(l, (int)rnd_below((unsigned)nmodel));
		} else {
			fake_now += (double)rnd_below(30) / 10.0;
			nfired = 0;
			if (cw_loop_run_once(l, 0) < 0 || !fired_as_model(fake_now))
				ok = false;
		}
		if (cw_loop_timers(l) != (size_t)count_pending())
			ok = false;
	}
	CHECK(ok);
	cw_loop_free(l);
}

static int hits_a, hits_b;

static void on_a(struct cw_loop *l, void *arg)
{
	(void)l;
	(void)arg;
	hits_a++;
}

static void on_b(struct cw_loop *l, void *arg)
{
	(void)l;
	(void)arg;
	hits_b++;
}

static void test_stale_ids(void)
{
	struct cw_loop *l = new_loop(0.0);

	/* cancelled: the slot is reused at once, the old id must not reach the new timer */
	hits_a = hits_b = 0;
	uint64_t a = cw_loop_timer(l, 1.0, on_a, NULL);
	cw_loop_timer_cancel(l, a);
	uint64_t b = cw_loop_timer(l, 1.0, on_b, NULL);
	CHECK(a != 0 && b != 0 && a != b);
	CHECK((uint32_t)a == (uint32_t)b);	/* same slot: the generation tells them apart */
	cw_loop_timer_cancel(l, a);
	CHECK(cw_loop_timers(l) == 1);
	fake_now = 2.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(hits_a == 0 && hits_b == 1);

	/* fired: same again */
	uint64_t c = cw_loop_timer(l, 1.0, on_a, NULL);
	fake_now = 3.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	uint64_t d = cw_loop_timer(l, 1.0, on_b, NULL);
	CHECK(c != d);
	cw_loop_timer_cancel(l, c);
	cw_loop_timer_cancel(l, b);
	CHECK(cw_loop_timers(l) == 1);
	fake_now = 4.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(hits_a == 1 && hits_b == 2);

	/* many generations of one slot: every id distinct, none cancels the live one */
	uint64_t prev = 0;
	bool distinct = true;
	for (int i = 0; i < 1000; i++) {
		uint64_t id = cw_loop_timer(l, 1.0, on_a, NULL);
		if (id == prev || id == 0)
			distinct = false;
		cw_loop_timer_cancel(l, prev);
		cw_loop_timer_cancel(l, id);
		prev = id;
	}
	CHECK(distinct);
	uint64_t live = cw_loop_timer(l, 1.0, on_b, NULL);
	cw_loop_timer_cancel(l, prev);
	CHECK(cw_loop_timers(l) == 1);
	cw_loop_timer_cancel(l, live);
	CHECK(cw_loop_timers(l) == 0);
	cw_loop_free(l);
}

/* A one-shot that re-arms itself with delay 0 fires once per iteration, never spins. */
static void rearm_zero(struct cw_loop *l, void *arg)
{
	int *n = arg;

	if (++*n < 100)
		cw_loop_timer(l, 0, rearm_zero, arg);
}

static void cancel_self_oneshot(struct cw_loop *l, void *arg)
{
	uint64_t *id = arg;

	/* already fired: a no-op that must not disturb the others */
	cw_loop_timer_cancel(l, *id);
	hits_a++;
}

static void stop_in_timer(struct cw_loop *l, void *arg)
{
	(void)arg;
	hits_a++;
	cw_loop_stop(l);
}

static void test_timer_callbacks(void)
{
	struct cw_loop *l = new_loop(0.0);
	int n = 0;

	cw_loop_timer(l, 0, rearm_zero, &n);
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(n == 1);
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(n == 2);

	while (cw_loop_timers(l))
		cw_loop_run_once(l, 0);
	CHECK(n == 100);

	/* negative and NaN delays are due at once */
	hits_a = 0;
	cw_loop_timer(l, -5.0, on_a, NULL);
	cw_loop_timer(l, NAN, on_a, NULL);
	CHECK(cw_loop_run_once(l, 0) == 2);

	/* cancelling your own, already fired id */
	uint64_t id = cw_loop_timer(l, 1.0, cancel_self_oneshot, &id);
	cw_loop_timer(l, 1.0, on_b, NULL);
	hits_a = hits_b = 0;
	fake_now += 1.0;
	CHECK(cw_loop_run_once(l, 0) == 2);
	CHECK(hits_a == 1 && hits_b == 1);

	/* stop from a timer: the other due timers wait for the next iteration */
	hits_a = hits_b = 0;
	cw_loop_timer(l, 1.0, stop_in_timer, NULL);
	cw_loop_timer(l, 1.0, on_b, NULL);
	fake_now += 1.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(hits_a == 1 && hits_b == 0);
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(hits_b == 1);

	/* a far timer does not make a bounded step wait (alarm guards a hang) */
	cw_loop_timer(l, 1e12, on_a, NULL);
	cw_loop_timer(l, INFINITY, on_a, NULL);
	CHECK(cw_loop_run_once(l, 0) == 0);
	CHECK(cw_loop_run_once(l, 1) == 0);
	cw_loop_free(l);
}

/* ---- periodic timers ---------------------------------------------------- */

struct periodic {
	uint64_t id;
	int hits, cancel_at;
	double at[16];
};

static void on_periodic(struct cw_loop *l, void *arg)
{
	struct periodic *p = arg;

	if (p->hits < 16)
		p->at[p->hits] = cw_loop_now(l);
	if (++p->hits == p->cancel_at)
		cw_loop_timer_cancel(l, p->id);
}

static void test_every(void)
{
	struct cw_loop *l = new_loop(100.0);
	struct periodic p = {0};

	p.id = cw_loop_every(l, 1.0, on_periodic, &p);
	CHECK(p.id != 0);
	fake_now = 100.5;
	CHECK(cw_loop_run_once(l, 0) == 0);
	fake_now = 101.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(cw_loop_timers(l) == 1);
	/* re-armed for 102: not due again at 101 */
	CHECK(cw_loop_run_once(l, 0) == 0);
	fake_now = 102.25;
	CHECK(cw_loop_run_once(l, 0) == 1);
	/* cadence kept from the schedule (103, not 103.25) */
	fake_now = 102.99;
	CHECK(cw_loop_run_once(l, 0) == 0);
	fake_now = 103.0;
	CHECK(cw_loop_run_once(l, 0) == 1);
	/* a long stall: missed ticks are skipped, one firing, then every 1 s from now */
	fake_now = 110.5;
	CHECK(cw_loop_run_once(l, 0) == 1);
	fake_now = 111.0;
	CHECK(cw_loop_run_once(l, 0) == 0);
	fake_now = 111.5;
	CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(p.hits == 5);

	/* cancel from outside */
	cw_loop_timer_cancel(l, p.id);
	CHECK(cw_loop_timers(l) == 0);
	fake_now = 200.0;
	CHECK(cw_loop_run_once(l, 0) == 0);
	CHECK(p.hits == 5);

	/* cancel from inside its own callback, on the third firing */
	struct periodic q = {0};
	q.cancel_at = 3;
	q.id = cw_loop_every(l, 0.5, on_periodic, &q);
	for (int i = 0; i < 10; i++) {
		fake_now += 0.5;
		cw_loop_run_once(l, 0);
	}
	CHECK(q.hits == 3);
	CHECK(cw_loop_timers(l) == 0);
	cw_loop_timer_cancel(l, q.id);	/* stale now */

	/* interval 0: every iteration, once */
	struct periodic z = {0};
	z.id = cw_loop_every(l, 0, on_periodic, &z);
	for (int i = 0; i < 5; i++)
		CHECK(cw_loop_run_once(l, 0) == 1);
	CHECK(z.hits == 5);
	cw_loop_timer_cancel(l, z.id);

	/* periodic and one-shots interleave by deadline */
	reset_model();
	struct periodic r = {0};
	double t0 = fake_now;
	r.id = cw_loop_every(l, 1.0, on_periodic, &r);
	arm_model(l, 0.5);
	arm_model(l, 1.5);
	arm_model(l, 2.0);
	for (int i = 1; i <= 6; i++) {
		fake_now = t0 + 0.5 * i;
		cw_loop_run_once(l, 0);
	}
	CHECK(r.hits == 3);
	CHECK(nfired == 3);
	CHECK(r.at[0] == t0 + 1.0 && r.at[1] == t0 + 2.0 && r.at[2] == t0 + 3.0);
	cw_loop_free(l);
}

/* ---- fd watch callback (used by the hook and watch tests) --------------- */

struct io_seen {
	int calls;
	unsigned events;
	int other_fd;		/* unwatch this one when called */
};

static void on_io(struct cw_loop *l, int fd, unsigned events, void *arg)
{
	struct io_seen *s = arg;
	char buf[64];

	s->calls++;
	s->events = events;
	if ((events & CW_READ) && read(fd, buf, sizeof(buf)) < 0)
		s->events |= 0x100;
	if (s->other_fd >= 0)
		cw_loop_watch(l, s->other_fd, 0, NULL, NULL);
}

/* ---- before-sleep hooks ------------------------------------------------- */

static char hook_log[64];
static size_t hook_len;

struct hook_ctx {
	char name;
	int stop_at;		/* stop the loop on this call */
	int remove_self_at;
	bool arm_timer;		/* arm a delay-0 timer */
	bool add_hook;		/* register hook 'z' */
	int calls;
};

static void hook(struct cw_loop *l, void *arg);

/* file scope: the loop holds pointers to them between steps */
static struct hook_ctx ha = {'a', 0, 0, false, false, 0};
static struct hook_ctx hb = {'b', 0, 0, false, false, 0};
static struct hook_ctx hc = {'c', 0, 0, false, false, 0};
static struct hook_ctx hz = {'z', 0, 0, false, false, 0};

static void hook(struct cw_loop *l, void *arg)
{
	struct hook_ctx *h = arg;

	h->calls++;
	if (hook_len < sizeof(hook_log) - 1)
		hook_log[hook_len++] = h->name;
	if (h->stop_at == h->calls)
		cw_loop_stop(l);
	if (h->remove_self_at == h->calls)
		CHECK(cw_loop_before_sleep_remove(l, hook, h) == CW_OK);
	if (h->arm_timer)
		cw_loop_timer(l, 0, on_a, NULL);
	if (h->add_hook) {
		h->add_hook = false;
		CHECK(cw_loop_before_sleep(l, hook, &hz) == CW_OK);
	}
}

static void log_reset(void)
{
	memset(hook_log, 0, sizeof(hook_log));
	hook_len = 0;
}

static void test_hooks(void)
{
	struct cw_loop *l = new_loop(0.0);
	struct io_seen never = {0, 0, -1};
	int fds[2];

	/* a pipe nobody writes to: a step that waited without limit would hang (alarm) */
	CHECK(pipe(fds) == 0);
	CHECK(cw_loop_watch(l, fds[0], CW_READ, on_io, &never) == 0);

	CHECK(cw_loop_before_sleep(l, hook, &ha) == CW_OK);
	CHECK(cw_loop_before_sleep(l, hook, &hb) == CW_OK);
	CHECK(cw_loop_before_sleep(l, hook, &hc) == CW_OK);
	log_reset();
	CHECK(cw_loop_run_once(l, 0) == 0);
	CHECK(cw_loop_run_once(l, 0) == 0);
	CHECK(strcmp(hook_log, "abcabc") == 0);

	/* b stops the loop: c still runs, the step does not wait (max_wait -1) */
	hb.stop_at = hb.calls + 1;
	log_reset();
	CHECK(cw_loop_run_once(l, -1) == 0);
	CHECK(strcmp(hook_log, "abc") == 0);

	/* cw_loop_run: b stops it on its third call; a 0 s periodic keeps the waits short */
	uint64_t spin = cw_loop_every(l, 0, on_a, NULL);
	hb.stop_at = hb.calls + 3;
	log_reset();
	CHECK(cw_loop_run(l) == 0);
	CHECK(strcmp(hook_log, "abcabcabc") == 0);
	hb.stop_at = 0;
	cw_loop_timer_cancel(l, spin);

	/* a hook arms a delay-0 timer: the wait accounts for it, it fires in this step */
	hits_a = 0;
	ha.arm_timer = true;
	CHECK(cw_loop_run_once(l, -1) == 1);
	CHECK(hits_a == 1);
	ha.arm_timer = false;

	/* b removes itself; a adds z (runs from the next iteration) */
	hb.remove_self_at = hb.calls + 1;
	ha.add_hook = true;
	log_reset();
	cw_loop_run_once(l, 0);
	cw_loop_run_once(l, 0);
	CHECK(strcmp(hook_log, "abcacz") == 0);

	/* removing from outside, unknown pairs, and a hook removed while hooks run */
	CHECK(cw_loop_before_sleep_remove(l, hook, &hb) == CW_ENOTFOUND);
	CHECK(cw_loop_before_sleep_remove(l, hook, NULL) == CW_ENOTFOUND);
	CHECK(cw_loop_before_sleep_remove(l, hook, &ha) == CW_OK);
	log_reset();
	cw_loop_run_once(l, 0);
	CHECK(strcmp(hook_log, "cz") == 0);
	hc.remove_self_at = hc.calls + 1;
	log_reset();
	cw_loop_run_once(l, 0);
	cw_loop_run_once(l, 0);
	CHECK(strcmp(hook_log, "czz") == 0);

	/* the same pair twice runs twice; removing takes one */
	CHECK(cw_loop_before_sleep(l, hook, &hz) == CW_OK);
	log_reset();
	cw_loop_run_once(l, 0);
	CHECK(strcmp(hook_log, "zz") == 0);
	CHECK(cw_loop_before_sleep_remove(l, hook, &hz) == CW_OK);
	log_reset();
	cw_loop_run_once(l, 0);
	CHECK(strcmp(hook_log, "z") == 0);

	CHECK(never.calls == 0);
	cw_loop_watch(l, fds[0], 0, NULL, NULL);
	close(fds[0]);
	close(fds[1]);
	cw_loop_free(l);
}

/* ---- fd watches ------------------------------------------------------- */

static void test_watch(void)
{
	struct cw_loop *l = new_loop(0.0);
	struct io_seen r = {0, 0, -1}, w = {0, 0, -1};
	int fds[2];

	CHECK(pipe2(fds, O_NONBLOCK) == 0);
	CHECK(cw_loop_mask(l, fds[0]) == 0);
	CHECK(cw_loop_mask(l, -1) == 0);
	CHECK(cw_loop_watch(l, -1, CW_READ, on_io, &r) == -1);
	CHECK(cw_loop_watch(l, fds[0], CW_READ, on_io, &r) == 0);
	CHECK(cw_loop_mask(l, fds[0]) == CW_READ);

	/* nothing to read: a bounded step runs nothing */
	CHECK(cw_loop_run_once(l, 0) == 0);
	CHECK(write(fds[1], "x", 1) == 1);
	CHECK(cw_loop_run_once(l, 1000) == 1);
	CHECK(r.calls == 1 && r.events == CW_READ);

	/* the write end is writable at once */
	CHECK(cw_loop_watch(l, fds[1], CW_WRITE, on_io, &w) == 0);
	CHECK(cw_loop_run_once(l, 1000) == 1);
	CHECK(w.calls == 1 && w.events == CW_WRITE);
	CHECK(cw_loop_watch(l, fds[1], 0, NULL, NULL) == 0);
	CHECK(cw_loop_mask(l, fds[1]) == 0);

	/* an eventfd and the pipe ready together; the first callback unwatches the other */
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct io_seen e = {0, 0, fds[0]};
	r.other_fd = efd;
	CHECK(efd >= 0);
	CHECK(cw_loop_watch(l, efd, CW_READ, on_io, &e) == 0);
	uint64_t one = 1;
	CHECK(write(efd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	CHECK(write(fds[1], "y", 1) == 1);
	r.calls = 0;
	CHECK(cw_loop_run_once(l, 1000) == 1);
	CHECK(r.calls + e.calls == 1);

	/* a due timer and I/O in one step: both counted */
	int still = r.calls ? fds[0] : efd;
	struct io_seen *s = r.calls ? &r : &e;
	s->other_fd = -1;
	if (still == efd)
		CHECK(write(efd, &one, sizeof(one)) == (ssize_t)sizeof(one));
	else
		CHECK(write(fds[1], "z", 1) == 1);
	hits_a = 0;
	cw_loop_timer(l, 0, on_a, NULL);
	CHECK(cw_loop_run_once(l, 1000) == 2);
	CHECK(hits_a == 1);

	/* mask 0 on an fd never watched (and past the table) is fine */
	CHECK(cw_loop_watch(l, 100000, 0, NULL, NULL) == 0);
	cw_loop_watch(l, fds[0], 0, NULL, NULL);
	cw_loop_watch(l, efd, 0, NULL, NULL);
	close(efd);
	close(fds[0]);
	close(fds[1]);
	cw_loop_free(l);
}

static void test_clock(void)
{
	struct cw_loop *l = cw_loop_new();
	double fake = 42.0;

	if (!l)
		abort();
	double a = cw_loop_now(l), b = cw_now();
	CHECK(a > 0 && b >= a);
	cw_loop_set_clock(l, fake_clock, &fake);
	CHECK(cw_loop_now(l) == 42.0);
	cw_loop_set_clock(l, NULL, NULL);
	CHECK(cw_loop_now(l) >= b);
	cw_loop_free(l);
	cw_loop_free(NULL);
}

int main(void)
{
	alarm(20);	/* a step that blocks is a failure, not a hung test */
	test_clock();
	test_many_timers_in_order();
	test_cancel_random();
	test_random_ops();
	test_stale_ids();
	test_timer_callbacks();
	test_every();
	test_hooks();
	test_watch();
	return check_summary();
}
