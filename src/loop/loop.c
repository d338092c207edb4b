#include "loop/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

struct watch {
	cw_io_cb cb;
	void *arg;
	unsigned mask;
};

struct timer {
	double when;
	uint64_t id;
	cw_timer_cb cb;
	void *arg;
};

struct cw_loop {
	int epfd;
	bool stop;
	struct watch *w;   /* indexed by fd */
	int nw;
	struct timer *heap;
	size_t nheap, capheap;
	uint64_t next_id;
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
	l->next_id = 1;
	return l;
}

void cw_loop_free(struct cw_loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	free(l->w);
	free(l->heap);
	free(l);
}

int cw_loop_watch(struct cw_loop *l, int fd, unsigned mask, cw_io_cb cb, void *arg)
{
	struct epoll_event ev = {0};
	int op;

	if (fd < 0)
		return -1;
	if (fd >= l->nw) {
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
	op = w->mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	ev.events = ((mask & CW_READ) ? EPOLLIN : 0) | ((mask & CW_WRITE) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (epoll_ctl(l->epfd, op, fd, &ev) < 0) {
		/* a watched fd that was closed and reused is no longer in the epoll set */
		if (op != EPOLL_CTL_MOD || errno != ENOENT || epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
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

static void heap_swap(struct cw_loop *l, size_t a, size_t b)
{
	struct timer t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
}

static void heap_up(struct cw_loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p].when <= l->heap[i].when)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct cw_loop *l, size_t i)
{
	for (;;) {
		size_t a = 2 * i + 1, b = a + 1, m = i;
		if (a < l->nheap && l->heap[a].when < l->heap[m].when)
			m = a;
		if (b < l->nheap && l->heap[b].when < l->heap[m].when)
			m = b;
		if (m == i)
			break;
		heap_swap(l, m, i);
		i = m;
	}
}

static void heap_remove(struct cw_loop *l, size_t i)
{
	l->nheap--;
	if (i == l->nheap)
		return;
	l->heap[i] = l->heap[l->nheap];
	heap_up(l, i);
	heap_down(l, i);
}

uint64_t cw_loop_timer(struct cw_loop *l, double delay, cw_timer_cb cb, void *arg)
{
	if (l->nheap == l->capheap) {
		size_t n = l->capheap ? l->capheap * 2 : 16;
		struct timer *h = realloc(l->heap, n * sizeof(*h));
		if (!h)
			return 0;
		l->heap = h;
		l->capheap = n;
	}
	struct timer *t = &l->heap[l->nheap];
	t->when = cw_now() + (delay > 0 ? delay : 0);
	t->id = l->next_id++;
	t->cb = cb;
	t->arg = arg;
	heap_up(l, l->nheap++);
	return l->next_id - 1;
}

/* Timers are few (reconnects, heartbeats, restore scans): a linear find is fine. */
void cw_loop_timer_cancel(struct cw_loop *l, uint64_t id)
{
	for (size_t i = 0; i < l->nheap; i++)
		if (l->heap[i].id == id) {
			heap_remove(l, i);
			return;
		}
}

void cw_loop_stop(struct cw_loop *l)
{
	l->stop = true;
}

int cw_loop_run(struct cw_loop *l)
{
	struct epoll_event evs[64];

	l->stop = false;
	while (!l->stop) {
		int timeout = -1;
		if (l->nheap) {
			double d = l->heap[0].when - cw_now();
			timeout = d <= 0 ? 0 : (int)(d * 1000.0) + 1;
		}
		int n = epoll_wait(l->epfd, evs, 64, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			cw_log(CW_LOG_ERROR, "loop", "epoll_wait: %s", strerror(errno));
			return -1;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			int fd = evs[i].data.fd;
			if (fd >= l->nw || !l->w[fd].cb)
				continue;
			unsigned m = 0;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				m |= CW_READ;
			if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				m |= CW_WRITE;
			m &= l->w[fd].mask;
			if (m)
				l->w[fd].cb(l, fd, m, l->w[fd].arg);
		}
		double now = cw_now();
		while (l->nheap && l->heap[0].when <= now && !l->stop) {
			struct timer t = l->heap[0];
			heap_remove(l, 0);
			t.cb(l, t.arg);
		}
	}
	return 0;
}
