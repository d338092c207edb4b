/*
 * The ack ledger of the AMQP consumer channel (amqp_acks.h): which queued
 * acks can share one basic.ack frame.
 */
#include <stdlib.h>

#include "broker/amqp_acks.h"

enum { AB_OPEN, AB_ACK, AB_GONE };

#define COMPACT_MIN 32 /* settled slots behind a held one before they are swept out */

void ab_acks_reset(struct ab_acks *a)
{
	a->head = a->n = a->ngone = a->npend = 0;
	a->last = 0;
	a->lost = false;
}

void ab_acks_free(struct ab_acks *a)
{
	free(a->v);
	free(a->pend);
	*a = (struct ab_acks){0};
}

/* Stop trusting the ledger until the next channel: every ack then goes alone. */
static void lose(struct ab_acks *a)
{
	free(a->v);
	a->v = NULL;
	a->head = a->n = a->cap = a->ngone = 0;
	a->lost = true;
}

/* Drop the settled slots, keeping the others in order. */
static void compact(struct ab_acks *a)
{
	size_t w = 0;
	for (size_t r = a->head; r < a->n; r++)
		if (a->v[r].st != AB_GONE)
			a->v[w++] = a->v[r];
	a->head = 0;
	a->n = w;
	a->ngone = 0;
}

/* Settled slots at the front are no longer needed. */
static void trim(struct ab_acks *a)
{
	while (a->head < a->n && a->v[a->head].st == AB_GONE) {
		a->head++;
		a->ngone--;
	}
	if (a->head == a->n)
		a->head = a->n = 0;
}

static struct ab_slot *find(struct ab_acks *a, uint64_t tag)
{
	size_t lo = a->head, hi = a->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a->v[mid].tag < tag)
			lo = mid + 1;
		else if (a->v[mid].tag > tag)
			hi = mid;
		else
			return &a->v[mid];
	}
	return NULL;
}

static void mark_gone(struct ab_acks *a, struct ab_slot *s)
{
	s->st = AB_GONE;
	a->ngone++;
}

void ab_acks_delivered(struct ab_acks *a, uint64_t tag, bool needs_ack)
{
	if (a->lost)
		return;
	if (tag <= a->last) { /* tags only grow on a channel: something is off */
		lose(a);
		return;
	}
	a->last = tag;
	if (!needs_ack)
		return;
	if (a->n == a->cap && (a->head || a->ngone))
		compact(a);
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		struct ab_slot *v = realloc(a->v, cap * sizeof(*v));
		if (!v) {
			lose(a);
			return;
		}
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n].tag = tag;
	a->v[a->n].st = AB_OPEN;
	a->n++;
}

void ab_acks_settled(struct ab_acks *a, uint64_t tag)
{
	struct ab_slot *s = a->lost ? NULL : find(a, tag);
	if (s && s->st != AB_GONE) {
		mark_gone(a, s);
		trim(a);
	}
}

int ab_acks_queue(struct ab_acks *a, uint64_t tag)
{
	struct ab_slot *s = a->lost ? NULL : find(a, tag);
	if (s && s->st != AB_OPEN)
		return 0; /* already queued, or settled: a second ack would close the channel */
	if (a->npend == a->cappend) {
		size_t cap = a->cappend ? a->cappend * 2 : 64;
		uint64_t *p = realloc(a->pend, cap * sizeof(*p));
		if (!p)
			return -1;
		a->pend = p;
		a->cappend = cap;
	}
	a->pend[a->npend++] = tag;
	if (s)
		s->st = AB_ACK;
	return 0;
}

int ab_acks_flush(struct ab_acks *a, int (*send)(void *arg, uint64_t tag, bool multiple),
		  void *arg)
{
	if (!a->npend)
		return 0;
	/* the run at the front: queued acks, and deliveries the broker no longer counts */
	size_t end = a->head, run = 0;
	uint64_t top = 0;
	for (; end < a->n && a->v[end].st != AB_OPEN; end++)
		if (a->v[end].st == AB_ACK) {
			top = a->v[end].tag;
			run++;
		}
	if (run) {
		if (send(arg, top, run > 1))
			return -1;
		for (size_t i = a->head; i < end; i++)
			if (a->v[i].st == AB_ACK)
				mark_gone(a, &a->v[i]);
	}
	/* the rest, behind a delivery still held, one frame each */
	for (size_t k = 0; k < a->npend; k++) {
		struct ab_slot *s = a->lost ? NULL : find(a, a->pend[k]);
		if (s && s->st != AB_ACK)
			continue; /* went with the run */
		if (send(arg, a->pend[k], false))
			return -1;
		if (s)
			mark_gone(a, s);
	}
	a->npend = 0;
	trim(a);
	if (a->ngone > COMPACT_MIN && 2 * a->ngone > a->n - a->head)
		compact(a);
	return 0;
}
