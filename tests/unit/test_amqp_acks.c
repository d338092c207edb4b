/*
 * The AMQP ack ledger (src/broker/amqp_acks.c): which queued acks share one
 * basic.ack frame.  A plan is checked frame by frame against what RabbitMQ
 * would settle: a model of the channel's unsettled deliveries applies each
 * planned frame as the broker does (multiple=1 settles every unsettled tag up
 * to and including its own, which must itself be unsettled), and the test
 * checks that exactly the acked deliveries were settled, never a held one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/amqp_acks.h"
#include "check.h"

#define MAXTAG 4096

/* The broker's side: which deliveries are unsettled, and the frames it got. */
struct model {
	unsigned char open[MAXTAG];   /* 1: delivered with acks, not settled */
	unsigned char acked[MAXTAG];  /* settled by an ack */
	int frames, multiples, errors;
	int fail_after;               /* a send fails after this many frames (-1: never) */
};

static int model_send(void *arg, uint64_t tag, bool multiple)
{
	struct model *m = arg;
	if (m->fail_after >= 0 && m->frames >= m->fail_after)
		return -1;
	m->frames++;
	if (tag >= MAXTAG || !m->open[tag]) {
		m->errors++; /* PRECONDITION_FAILED: unknown delivery tag */
		return 0;
	}
	if (multiple) {
		m->multiples++;
		for (uint64_t t = 1; t <= tag; t++)
			if (m->open[t]) {
				m->open[t] = 0;
				m->acked[t] = 1;
			}
	} else {
		m->open[tag] = 0;
		m->acked[tag] = 1;
	}
	return 0;
}

static void deliver(struct ab_acks *a, struct model *m, uint64_t tag, bool needs_ack)
{
	ab_acks_delivered(a, tag, needs_ack);
	if (needs_ack)
		m->open[tag] = 1;
}

/* Deliveries 1..n, each needing an ack. */
static void deliver_upto(struct ab_acks *a, struct model *m, uint64_t n)
{
	for (uint64_t t = 1; t <= n; t++)
		deliver(a, m, t, true);
}

static void reject(struct ab_acks *a, struct model *m, uint64_t tag)
{
	m->open[tag] = 0; /* basic.reject, sent at once */
	ab_acks_settled(a, tag);
}

static void model_init(struct model *m)
{
	*m = (struct model){.fail_after = -1};
}

/* Tasks started in delivery order: one frame for the whole turn. */
static void test_in_order_run(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver_upto(&a, &m, 8);
	for (uint64_t t = 1; t <= 5; t++)
		CHECK(ab_acks_queue(&a, t) == 0);
	CHECK(ab_acks_pending(&a));
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(!ab_acks_pending(&a));
	CHECK(m.frames == 1 && m.multiples == 1 && m.errors == 0);
	for (uint64_t t = 1; t <= 8; t++)
		CHECK(m.acked[t] == (t <= 5));
	/* the next turn: a single ack goes without multiple */
	CHECK(ab_acks_queue(&a, 6) == 0);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 2 && m.multiples == 1 && m.acked[6] && !m.acked[7]);
	/* nothing queued: nothing sent */
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 2);
	ab_acks_free(&a);
}

/* A held delivery (an ETA task) at the front: acks behind it go alone, and it is never acked. */
static void test_held_front(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver_upto(&a, &m, 6);
	for (uint64_t t = 2; t <= 4; t++)
		ab_acks_queue(&a, t);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 3 && m.multiples == 0 && m.errors == 0);
	CHECK(m.open[1] && !m.acked[1]);
	CHECK(m.acked[2] && m.acked[3] && m.acked[4] && !m.acked[5]);
	/* the held one is acked at last: it and 5, 6 now make a run (2..4 are settled) */
	ab_acks_queue(&a, 6);
	ab_acks_queue(&a, 1);
	ab_acks_queue(&a, 5);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 4 && m.multiples == 1 && m.errors == 0);
	for (uint64_t t = 1; t <= 6; t++)
		CHECK(m.acked[t] && !m.open[t]);
	ab_acks_free(&a);
}

/* Rejects and no-ack (mailbox) deliveries inside a run do not break it. */
static void test_gaps_in_run(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver(&a, &m, 1, true);
	deliver(&a, &m, 2, false); /* a broadcast, consumed without acks */
	deliver(&a, &m, 3, true);
	deliver(&a, &m, 4, true);
	deliver(&a, &m, 5, true);
	deliver(&a, &m, 6, true);
	reject(&a, &m, 3); /* requeued (a restore), settled by its reject */
	ab_acks_queue(&a, 1);
	ab_acks_queue(&a, 4);
	ab_acks_queue(&a, 6); /* behind 5, which is still held */
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 2 && m.multiples == 1 && m.errors == 0);
	CHECK(m.acked[1] && !m.acked[3] && m.acked[4] && m.open[5] && m.acked[6]);
	ab_acks_free(&a);
}

/* Out-of-order completions (acks_late): the run is the settled front, the rest alone. */
static void test_out_of_order(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver_upto(&a, &m, 10);
	uint64_t order[] = {3, 1, 2, 7, 5};
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		ab_acks_queue(&a, order[i]);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	/* 1..3 in one frame; 5 and 7 behind the held 4, one frame each */
	CHECK(m.frames == 3 && m.multiples == 1 && m.errors == 0);
	CHECK(m.acked[1] && m.acked[2] && m.acked[3] && m.open[4] && m.acked[5] && m.open[6] &&
	      m.acked[7]);
	ab_acks_free(&a);
}

/* An ack asked twice, or for a rejected delivery, is not sent again (it would close the channel). */
static void test_no_double_ack(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver_upto(&a, &m, 3);
	ab_acks_queue(&a, 2);
	ab_acks_queue(&a, 2);
	reject(&a, &m, 3);
	ab_acks_queue(&a, 3);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 1 && m.errors == 0 && m.acked[2] && m.open[1]);
	ab_acks_free(&a);
}

/* Tags out of order: the ledger stops trusting itself, every ack goes alone, none is lost. */
static void test_lost_track(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver(&a, &m, 5, true);
	deliver(&a, &m, 6, true);
	deliver(&a, &m, 3, true); /* lower than one already seen */
	ab_acks_queue(&a, 5);
	ab_acks_queue(&a, 6);
	ab_acks_queue(&a, 3);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 3 && m.multiples == 0 && m.errors == 0);
	CHECK(m.acked[3] && m.acked[5] && m.acked[6]);
	/* a new channel starts trusting again */
	ab_acks_reset(&a);
	model_init(&m);
	deliver_upto(&a, &m, 2);
	ab_acks_queue(&a, 1);
	ab_acks_queue(&a, 2);
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	CHECK(m.frames == 1 && m.multiples == 1 && m.acked[1] && m.acked[2]);
	ab_acks_free(&a);
}

/* A failed send stops the flush and says so (the caller drops the connection). */
static void test_send_failure(void)
{
	struct ab_acks a = {0};
	struct model m;
	model_init(&m);
	deliver_upto(&a, &m, 4);
	ab_acks_queue(&a, 1);
	ab_acks_queue(&a, 3);
	m.fail_after = 1;
	CHECK(ab_acks_flush(&a, model_send, &m) == -1);
	CHECK(m.frames == 1 && m.acked[1] && !m.acked[3]);
	ab_acks_free(&a);
}

/*
 * A long random run against the model: deliveries, some without acks, some
 * held for a while, rejects, acks queued in any order, flushes at random
 * turns.  Every delivery ends acked or rejected exactly as asked, the broker
 * never sees an unknown tag, and runs do share frames.
 */
static void test_random_against_model(void)
{
	struct ab_acks a = {0};
	static struct model m;
	model_init(&m);
	unsigned seed = 12345;
	uint64_t next = 1;
	uint64_t held[MAXTAG];
	size_t nheld = 0;
	unsigned char want[MAXTAG] = {0}; /* 1 ack, 2 reject */
	int acks = 0;
	while (next < MAXTAG - 8) {
		int burst = 1 + (int)(rand_r(&seed) % 8);
		for (int i = 0; i < burst && next < MAXTAG - 8; i++) {
			bool needs = rand_r(&seed) % 10 != 0;
			deliver(&a, &m, next, needs);
			if (needs)
				held[nheld++] = next;
			next++;
		}
		/* settle some held deliveries, mostly the oldest first */
		int settle = (int)(rand_r(&seed) % 6);
		for (int i = 0; i < settle && nheld; i++) {
			size_t k = rand_r(&seed) % 4 == 0 ? rand_r(&seed) % nheld : 0;
			uint64_t t = held[k];
			for (size_t j = k; j + 1 < nheld; j++)
				held[j] = held[j + 1];
			nheld--;
			if (rand_r(&seed) % 12 == 0) {
				reject(&a, &m, t);
				want[t] = 2;
			} else {
				CHECK(ab_acks_queue(&a, t) == 0);
				want[t] = 1;
				acks++;
			}
		}
		if (rand_r(&seed) % 3 == 0)
			CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	}
	while (nheld) {
		want[held[nheld - 1]] = 1;
		acks++;
		ab_acks_queue(&a, held[--nheld]);
	}
	CHECK(ab_acks_flush(&a, model_send, &m) == 0);
	int wrong = 0;
	for (uint64_t t = 1; t < next; t++) {
		if (m.open[t])
			wrong++;
		if ((want[t] == 1) != (m.acked[t] == 1))
			wrong++;
	}
	CHECK(wrong == 0);
	CHECK(m.errors == 0);
	CHECK(m.frames < acks / 2); /* shared frames: fewer than half as many as acks */
	printf("random run: %d acks in %d frames (%d with multiple)\n", acks, m.frames,
	       m.multiples);
	ab_acks_free(&a);
}

int main(void)
{
	test_in_order_run();
	test_held_front();
	test_gaps_in_run();
	test_out_of_order();
	test_no_double_ack();
	test_lost_track();
	test_send_failure();
	test_random_against_model();
	return check_summary();
}
