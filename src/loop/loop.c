/*
 * The event loop (see loop.h): the fd watch table over epoll, the timer heap
 * with its slab of timer nodes, the before-sleep hooks and the iteration.
 *
 * Timers live in a slab of nodes; the heap is an array of slot numbers and
 * every node knows its heap index (kept up to date on every move, as
 * beanstalkd's heap does with setpos), so cancel removes in O(log n) instead
 * of searching.  The heap array always has room for every slab slot, so
 * putting a node back (a periodic re-arm) never allocates.
 */
#include "loop/loop.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "util/err.h"
#include "util/log.h"

#define MAX_EVENTS 64
#define NOT_IN_HEAP UINT32_MAX
#define SLOT_MAX (UINT32_MAX - 1)	/* NOT_IN_HEAP must stay out of range */

struct watch {
	cw_io_cb cb;
	void *arg;
	unsigned mask;
};

struct tnode {
	double when;
	double interval;	/* < 0: one-shot */
	uint64_t seq;		/* arm order: FIFO among equal deadlines */
	cw_timer_cb cb;
	void *arg;
	uint32_t gen;		/* high half of the id; bumped when the slot is freed */
	uint32_t pos;		/* heap index, NOT_IN_HEAP when the slot is free */
	uint32_t next_free;
};

struct hook {
	cw_hook_cb cb;		/* NULL: removed while hooks were running */
	void *arg;
};

struct cw_loop {
	int epfd;
	bool stop;
	struct watch *w;	/* indexed by fd */
	int nw;

	struct tnode *node;	/* slab, ncap slots */
	uint32_t *heap;		/* slot numbers, nheap used, room for ncap */
	uint32_t ncap, nheap;
	uint32_t free_head;	/* NOT_IN_HEAP: no free slot */
	uint64_t seq;

	struct hook *hooks;
	size_t nhooks, caphooks;
	bool in_hooks, hooks_dirty;

	cw_clock_fn now;
	void *now_arg;
};

double cw_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double cw_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct cw_loop *cw_loop_new(void)
{
	struct cw_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return NULL;
	}
	l->free_head = NOT_IN_HEAP;
	return l;
}

void cw_loop_free(struct cw_loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	free(l->w);
	free(l->node);
	free(l->heap);
	free(l->hooks);
	free(l);
}

void cw_loop_set_clock(struct cw_loop *l, cw_clock_fn now, void *arg)
{
	l->now = now;
	l->now_arg = arg;
}

double cw_loop_now(const struct cw_loop *l)
{
	return l->now ? l->now(l->now_arg) : cw_now();
}

/* ---- fd watches --------------------------------------------------------- */

int cw_loop_watch(struct cw_loop *l, int fd, unsigned mask, cw_io_cb cb, void *arg)
{
	struct epoll_event ev = {0};
	int op;

	if (fd < 0)
		return -1;
	if (fd >= l->nw) {
		if (mask == 0)
			return 0;
		if (fd > INT_MAX - 64)
			return -1;
		int n = fd + 64;
		struct watch *nw = realloc(l->w, (size_t)n * sizeof(*nw));
		if (!nw)
			return -1;
		memset(nw + l->nw, 0, (size_t)(n - l->nw) * sizeof(*nw));
		l->w = nw;
		l->nw = n;
	}
	struct watch *w = &l->w[fd];
	if (mask == 0) {
		if (w->mask)
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
		w->mask = 0;
		w->cb = NULL;
		return 0;
	}
	if (mask == w->mask && cb == w->cb && arg == w->arg)
		return 0; /* unchanged: no syscall (callers re-assert their mask after every write) */
	op = w->mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	ev.events = ((mask & CW_READ) ? EPOLLIN : 0) | ((mask & CW_WRITE) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (epoll_ctl(l->epfd, op, fd, &ev) < 0) {
		/* a watched fd that was closed and reused is no longer in the epoll set */
		if (op != EPOLL_CTL_MOD || errno != ENOENT ||
		    epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			return -1;
	}
	w->mask = mask;
	w->cb = cb;
	w->arg = arg;
	return 0;
}

unsigned cw_loop_mask(struct cw_loop *l, int fd)
{
	return fd >= 0 && fd < l->nw ? l->w[fd].mask : 0;
}

/* ---- timer heap --------------------------------------------------------- */

static bool earlier(const struct cw_loop *l, uint32_t a, uint32_t b)
{
	const struct tnode *x = &l->node[a], *y = &l->node[b];
	return x->when < y->when || (x->when == y->when && x->seq < y->seq);
}

/* Every store into the heap goes through here, so node->pos is never stale. */
static void heap_set(struct cw_loop *l, uint32_t i, uint32_t slot)
{
	l->heap[i] = slot;
	l->node[slot].pos = i;
}

static void heap_up(struct cw_loop *l, uint32_t i)
{
	uint32_t slot = l->heap[i];

	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!earlier(l, slot, l->heap[p]))
			break;
		heap_set(l, i, l->heap[p]);
		i = p;
	}
	heap_set(l, i, slot);
}

static void heap_down(struct cw_loop *l, uint32_t i)
{
	uint32_t slot = l->heap[i];

	for (;;) {
		uint64_t a = 2 * (uint64_t)i + 1, b = a + 1, m = a;
		if (a >= l->nheap)
			break;
		if (b < l->nheap && earlier(l, l->heap[b], l->heap[a]))
			m = b;
		if (!earlier(l, l->heap[m], slot))
			break;
		heap_set(l, i, l->heap[m]);
		i = (uint32_t)m;
	}
	heap_set(l, i, slot);
}

static void heap_push(struct cw_loop *l, uint32_t slot)
{
	l->heap[l->nheap] = slot;
	heap_up(l, l->nheap++);
}

static void heap_remove(struct cw_loop *l, uint32_t i)
{
	uint32_t last = l->heap[--l->nheap];

	if (i == l->nheap)
		return;
	heap_set(l, i, last);
	/* the moved node goes up or down, never both: whichever direction is a no-op */
	heap_up(l, i);
	heap_down(l, l->node[last].pos);
}

/* ---- timer slots -------------------------------------------------------- */

static uint64_t node_id(const struct cw_loop *l, uint32_t slot)
{
	return (uint64_t)l->node[slot].gen << 32 | slot;
}

/* The slot an id names, or NULL when the id is stale, unknown or 0: O(1). */
static struct tnode *node_of(struct cw_loop *l, uint64_t id)
{
	uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);

	if (slot >= l->ncap || l->node[slot].pos == NOT_IN_HEAP || l->node[slot].gen != gen)
		return NULL;
	return &l->node[slot];
}

/* Double the slab and the heap together, so the heap always has room for every slot. */
static int grow_slots(struct cw_loop *l)
{
	uint32_t old = l->ncap, n;

	if (old >= SLOT_MAX)
		return CW_ENOMEM;
	n = old ? (old > SLOT_MAX / 2 ? SLOT_MAX : old * 2) : 16;
	struct tnode *nodes = realloc(l->node, (size_t)n * sizeof(*nodes));
	if (!nodes)
		return CW_ENOMEM;
	l->node = nodes;
	uint32_t *heap = realloc(l->heap, (size_t)n * sizeof(*heap));
	if (!heap)
		return CW_ENOMEM;	/* the larger slab is kept; ncap stays at what both hold */
	l->heap = heap;
	for (uint32_t i = n; i-- > old;) {
		nodes[i].gen = 1;
		nodes[i].pos = NOT_IN_HEAP;
		nodes[i].next_free = l->free_head;
		l->free_head = i;
	}
	l->ncap = n;
	return CW_OK;
}

static void free_slot(struct cw_loop *l, uint32_t slot)
{
	struct tnode *t = &l->node[slot];

	t->pos = NOT_IN_HEAP;
	/* stale ids of this slot stop matching; 0 is skipped so an id is never 0 */
	if (++t->gen == 0)
		t->gen = 1;
	t->next_free = l->free_head;
	l->free_head = slot;
}

static uint64_t arm(struct cw_loop *l, double delay, double interval, cw_timer_cb cb, void *arg)
{
	if (l->free_head == NOT_IN_HEAP && grow_slots(l) != CW_OK)
		return 0;
	uint32_t slot = l->free_head;
	struct tnode *t = &l->node[slot];

	l->free_head = t->next_free;
	/* !(x > 0) also catches NaN */
	t->when = cw_loop_now(l) + (delay > 0 ? delay : 0);
	t->interval = interval;
	t->seq = l->seq++;
	t->cb = cb;
	t->arg = arg;
	heap_push(l, slot);
	return node_id(l, slot);
}

uint64_t cw_loop_timer(struct cw_loop *l, double delay, cw_timer_cb cb, void *arg)
{
	return arm(l, delay, -1, cb, arg);
}

uint64_t cw_loop_every(struct cw_loop *l, double interval, cw_timer_cb cb, void *arg)
{
	if (!(interval > 0))
		interval = 0;
	return arm(l, interval, interval, cb, arg);
}

void cw_loop_timer_cancel(struct cw_loop *l, uint64_t id)
{
	struct tnode *t = node_of(l, id);

	if (!t)
		return;
	heap_remove(l, t->pos);
	free_slot(l, (uint32_t)id);
}

size_t cw_loop_timers(const struct cw_loop *l)
{
	return l->nheap;
}

/*
 * Fire the root timer.  A one-shot slot is freed first, so the callback may
 * arm timers that reuse it and cancelling its own id is a no-op; a periodic
 * one is re-armed in place first, so the callback may cancel it.
 */
static void fire_root(struct cw_loop *l, double now)
{
	uint32_t slot = l->heap[0];
	struct tnode *t = &l->node[slot];
	cw_timer_cb cb = t->cb;
	void *arg = t->arg;

	if (t->interval < 0) {
		heap_remove(l, 0);
		free_slot(l, slot);
	} else {
		t->when += t->interval;
		if (t->when <= now)
			t->when = now + t->interval;
		t->seq = l->seq++;
		heap_down(l, 0);
	}
	cb(l, arg);
}

/* Timers due at now and armed before this pass began; returns how many fired. */
static int run_timers(struct cw_loop *l)
{
	double now = cw_loop_now(l);
	uint64_t limit = l->seq;
	int n = 0;

	while (l->nheap && !l->stop) {
		const struct tnode *t = &l->node[l->heap[0]];
		/* armed (or re-armed) during this pass: next iteration, else delay 0 spins */
		if (t->when > now || t->seq >= limit)
			break;
		fire_root(l, now);
		n++;
	}
	return n;
}

/* Milliseconds until the earliest timer (-1: none), capped by max_wait_ms when >= 0. */
static int wait_ms(const struct cw_loop *l, int max_wait_ms)
{
	int ms = -1;

	if (l->nheap) {
		double d = l->node[l->heap[0]].when - cw_loop_now(l);
		if (d <= 0)
			ms = 0;
		else if (d >= (INT_MAX - 1) / 1000.0)
			ms = INT_MAX;
		else
			ms = (int)(d * 1000.0) + 1;	/* round up: never wake before it is due */
	}
	if (max_wait_ms >= 0 && (ms < 0 || ms > max_wait_ms))
		ms = max_wait_ms;
	return ms;
}

/* ---- before-sleep hooks ------------------------------------------------- */

int cw_loop_before_sleep(struct cw_loop *l, cw_hook_cb cb, void *arg)
{
	if (l->nhooks == l->caphooks) {
		size_t n = l->caphooks ? l->caphooks * 2 : 4;
		struct hook *h = realloc(l->hooks, n * sizeof(*h));
		if (!h)
			return CW_ENOMEM;
		l->hooks = h;
		l->caphooks = n;
	}
	l->hooks[l->nhooks].cb = cb;
	l->hooks[l->nhooks].arg = arg;
	l->nhooks++;
	return CW_OK;
}

int cw_loop_before_sleep_remove(struct cw_loop *l, cw_hook_cb cb, const void *arg)
{
	for (size_t i = 0; i < l->nhooks; i++) {
		struct hook *h = &l->hooks[i];
		if (h->cb != cb || h->arg != arg)
			continue;
		if (l->in_hooks) {
			/* the running pass indexes the array: blank it, compact afterwards */
			h->cb = NULL;
			l->hooks_dirty = true;
		} else {
			memmove(h, h + 1, (l->nhooks - i - 1) * sizeof(*h));
			l->nhooks--;
		}
		return CW_OK;
	}
	return CW_ENOTFOUND;
}

static void compact_hooks(struct cw_loop *l)
{
	size_t j = 0;

	for (size_t i = 0; i < l->nhooks; i++)
		if (l->hooks[i].cb)
			l->hooks[j++] = l->hooks[i];
	l->nhooks = j;
	l->hooks_dirty = false;
}

static void run_hooks(struct cw_loop *l)
{
	size_t n = l->nhooks;	/* hooks added by a hook start next iteration */

	l->in_hooks = true;
	/* all of them even after one stops the loop: stopping only means "do not wait" */
	for (size_t i = 0; i < n; i++) {
		/* copied before the call: a hook may add one and move the array */
		struct hook h = l->hooks[i];
		if (h.cb)
			h.cb(l, h.arg);
	}
	l->in_hooks = false;
	if (l->hooks_dirty)
		compact_hooks(l);
}

/* ---- iteration ---------------------------------------------------------- */

static int run_io(struct cw_loop *l, const struct epoll_event *evs, int nev)
{
	int n = 0;

	for (int i = 0; i < nev && !l->stop; i++) {
		int fd = evs[i].data.fd;
		/* an earlier callback may have unwatched this fd */
		if (fd >= l->nw || !l->w[fd].cb)
			continue;
		unsigned m = 0;
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			m |= CW_READ;
		if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			m |= CW_WRITE;
		m &= l->w[fd].mask;
		if (m) {
			l->w[fd].cb(l, fd, m, l->w[fd].arg);
			n++;
		}
	}
	return n;
}

int cw_loop_run_once(struct cw_loop *l, int max_wait_ms)
{
	struct epoll_event evs[MAX_EVENTS];

	l->stop = false;
	run_hooks(l);
	if (l->stop)
		return 0;
	/* after the hooks: they may have armed timers */
	int nev = epoll_wait(l->epfd, evs, MAX_EVENTS, wait_ms(l, max_wait_ms));
	if (nev < 0) {
		if (errno == EINTR)
			return 0;
		cw_log(CW_LOG_ERROR, "loop", "epoll_wait: %s", strerror(errno));
		return -1;
	}
	int n = run_io(l, evs, nev);
	return n + run_timers(l);
}

void cw_loop_stop(struct cw_loop *l)
{
	l->stop = true;
}

int cw_loop_run(struct cw_loop *l)
{
	do {
		if (cw_loop_run_once(l, -1) < 0)
			return -1;
	} while (!l->stop);
	return 0;
}
