/* The reserve: held messages and the prefetch budget (see reserve.h). */
#include "consumer/reserve.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

struct list {
	struct held **v;
	size_t n, cap;
};

struct cw_reserve {
	struct list ready;         /* FIFO: v[0] is the oldest */
	struct list eta;           /* arrival order */
	struct held **running;     /* indexed by pool slot */
	int nslots;
	int limit;
	int cap;                   /* worker_disable_prefetch: reserved + running; 0 = none */
	int counted;
	long eta_cap;              /* worker_eta_task_limit; 0 = none */
};

static bool list_push(struct list *l, struct held *h)
{
	if (l->n == l->cap) {
		size_t c = l->cap ? l->cap * 2 : 16;
		struct held **v = realloc(l->v, c * sizeof(*v));
		if (!v)
			return false;
		l->v = v;
		l->cap = c;
	}
	l->v[l->n++] = h;
	return true;
}

static void list_remove_at(struct list *l, size_t i)
{
	memmove(l->v + i, l->v + i + 1, (l->n - i - 1) * sizeof(*l->v));
	l->n--;
}

struct cw_reserve *cw_reserve_new(int nslots)
{
	struct cw_reserve *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	if (cw_reserve_grow(r, nslots > 0 ? nslots : 1) != CW_OK) {
		free(r);
		return NULL;
	}
	return r;
}

void cw_reserve_free(struct cw_reserve *r)
{
	if (!r)
		return;
	free(r->ready.v);
	free(r->eta.v);
	free(r->running);
	free(r);
}

void cw_reserve_set_limit(struct cw_reserve *r, int limit)
{
	r->limit = limit;
}

void cw_reserve_set_cap(struct cw_reserve *r, int cap)
{
	r->cap = cap > 0 ? cap : 0;
}

int cw_reserve_limit(const struct cw_reserve *r)
{
	return r->limit;
}

int cw_reserve_counted(const struct cw_reserve *r)
{
	return r->counted;
}

void cw_reserve_set_eta_cap(struct cw_reserve *r, long cap)
{
	r->eta_cap = cap > 0 ? cap : 0;
}

/*
 * Celery's window of unacknowledged messages: the limit, raised by one for
 * every ETA-held or rate-limited message (extra), and capped by
 * worker_eta_task_limit (Celery 5.6).  A cap below the limit leaves the
 * limit alone: kombu would lower it for good after the first ETA message,
 * which throttles tasks that have no ETA.
 */
long cw_reserve_window(const struct cw_reserve *r, size_t extra)
{
	long win = r->limit + (long)extra;
	long cap = r->eta_cap > r->limit ? r->eta_cap : r->limit;
	return r->eta_cap > 0 && win > cap ? cap : win;
}

int cw_reserve_credit(const struct cw_reserve *r, size_t extra)
{
	/* past the window the broker delivers nothing: the messages stay in their queues */
	long c = cw_reserve_window(r, extra) - r->counted - (long)extra;
	if (r->cap && r->cap - r->counted < c)
		c = r->cap - r->counted;
	return c > 0 ? (int)c : 0;
}

void cw_reserve_uncount(struct cw_reserve *r, struct held *h)
{
	if (h->counted) {
		h->counted = false;
		r->counted--;
	}
}

bool cw_reserve_push(struct cw_reserve *r, struct held *h)
{
	if (!list_push(&r->ready, h))
		return false;
	if (!h->counted) {
		h->counted = true;
		r->counted++;
	}
	return true;
}

struct held *cw_reserve_pop(struct cw_reserve *r)
{
	if (!r->ready.n)
		return NULL;
	struct held *h = r->ready.v[0];
	list_remove_at(&r->ready, 0);
	return h;
}

size_t cw_reserve_nready(const struct cw_reserve *r)
{
	return r->ready.n;
}

bool cw_reserve_hold(struct cw_reserve *r, struct held *h)
{
	return list_push(&r->eta, h);
}

bool cw_reserve_unhold(struct cw_reserve *r, struct held *h)
{
	for (size_t i = 0; i < r->eta.n; i++)
		if (r->eta.v[i] == h) {
			list_remove_at(&r->eta, i);
			return true;
		}
	return false;
}

size_t cw_reserve_neta(const struct cw_reserve *r)
{
	return r->eta.n;
}

int cw_reserve_slots(const struct cw_reserve *r)
{
	return r->nslots;
}

int cw_reserve_grow(struct cw_reserve *r, int n)
{
	if (n <= r->nslots)
		return CW_OK;
	struct held **v = realloc(r->running, (size_t)n * sizeof(*v));
	if (!v)
		return CW_ENOMEM;
	for (int i = r->nslots; i < n; i++)
		v[i] = NULL;
	r->running = v;
	r->nslots = n;
	return CW_OK;
}

void cw_reserve_run(struct cw_reserve *r, int slot, struct held *h)
{
	if (slot >= 0 && slot < r->nslots) {
		h->slot = slot;
		r->running[slot] = h;
	}
}

struct held *cw_reserve_running(const struct cw_reserve *r, int slot)
{
	return slot >= 0 && slot < r->nslots ? r->running[slot] : NULL;
}

struct held *cw_reserve_finish(struct cw_reserve *r, int slot)
{
	struct held *h = cw_reserve_running(r, slot);
	if (h)
		r->running[slot] = NULL;
	return h;
}

int cw_reserve_active(const struct cw_reserve *r)
{
	int n = 0;
	for (int i = 0; i < r->nslots; i++)
		n += r->running[i] != NULL;
	return n;
}

int cw_reserve_tasks(const struct cw_reserve *r)
{
	return (int)r->ready.n + cw_reserve_active(r);
}

void cw_reserve_each(const struct cw_reserve *r, unsigned mask, cw_held_cb cb, void *arg)
{
	if (mask & (1u << CW_HELD_RUNNING))
		for (int i = 0; i < r->nslots; i++)
			if (r->running[i])
				cb(arg, r->running[i], CW_HELD_RUNNING);
	if (mask & (1u << CW_HELD_READY))
		for (size_t i = 0; i < r->ready.n; i++)
			cb(arg, r->ready.v[i], CW_HELD_READY);
	if (mask & (1u << CW_HELD_ETA))
		for (size_t i = 0; i < r->eta.n; i++)
			cb(arg, r->eta.v[i], CW_HELD_ETA);
}

struct held *cw_reserve_find(const struct cw_reserve *r, const char *id, enum cw_held_where *where)
{
	for (int i = 0; i < r->nslots; i++)
		if (r->running[i] && !strcmp(r->running[i]->req.id, id)) {
			*where = CW_HELD_RUNNING;
			return r->running[i];
		}
	for (size_t i = 0; i < r->ready.n; i++)
		if (!strcmp(r->ready.v[i]->req.id, id)) {
			*where = CW_HELD_READY;
			return r->ready.v[i];
		}
	for (size_t i = 0; i < r->eta.n; i++)
		if (!strcmp(r->eta.v[i]->req.id, id)) {
			*where = CW_HELD_ETA;
			return r->eta.v[i];
		}
	return NULL;
}

size_t cw_reserve_drain(struct cw_reserve *r, cw_held_cb cb, void *arg)
{
	size_t n = r->ready.n + r->eta.n;
	/* detach first: cb may look at the reserve */
	struct list ready = r->ready, eta = r->eta;
	r->ready = (struct list){0};
	r->eta = (struct list){0};
	for (size_t i = 0; i < ready.n; i++)
		cb(arg, ready.v[i], CW_HELD_READY);
	for (size_t i = 0; i < eta.n; i++)
		cb(arg, eta.v[i], CW_HELD_ETA);
	free(ready.v);
	free(eta.v);
	return n;
}
