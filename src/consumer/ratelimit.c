/* Task rate limits: token buckets and the messages waiting on them (see ratelimit.h). */
#include "consumer/ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include "loop/loop.h"
#include "util/err.h"
#include "util/log.h"

struct bucket {
	char *task;
	struct cw_bucket tb;
	struct held **q;           /* waiting messages, oldest first */
	size_t n, cap;
	uint64_t timer;
	struct cw_ratelimit *rl;
};

struct cw_ratelimit {
	struct cw_loop *loop;
	cw_ratelimit_ready_cb ready;
	void *arg;
	struct bucket **b;         /* stable pointers: timers refer to them */
	int nb;
	bool stopped;
};

void cw_bucket_init(struct cw_bucket *b, double rate, double now)
{
	*b = (struct cw_bucket){.rate = rate > 0 ? rate : 0, .tokens = 1, .stamp = now};
}

static double bucket_fill(struct cw_bucket *b, double now)
{
	if (b->tokens < 1) {
		b->tokens += b->rate * (now - b->stamp);
		if (b->tokens > 1)
			b->tokens = 1;
	}
	b->stamp = now;
	return b->tokens;
}

bool cw_bucket_take(struct cw_bucket *b, double now)
{
	if (b->rate <= 0)
		return true;
	if (bucket_fill(b, now) < 1)
		return false;
	b->tokens -= 1;
	return true;
}

double cw_bucket_wait(struct cw_bucket *b, double now)
{
	if (b->rate <= 0)
		return 0;
	double w = (1 - bucket_fill(b, now)) / b->rate;
	return w > 0 ? w : 0;
}

struct cw_ratelimit *cw_ratelimit_new(struct cw_loop *loop, cw_ratelimit_ready_cb ready, void *arg)
{
	struct cw_ratelimit *rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	rl->loop = loop;
	rl->ready = ready;
	rl->arg = arg;
	return rl;
}

void cw_ratelimit_free(struct cw_ratelimit *rl)
{
	if (!rl)
		return;
	for (int i = 0; i < rl->nb; i++) {
		if (rl->b[i]->timer)
			cw_loop_timer_cancel(rl->loop, rl->b[i]->timer);
		free(rl->b[i]->q);
		free(rl->b[i]->task);
		free(rl->b[i]);
	}
	free(rl->b);
	free(rl);
}

static struct bucket *find(const struct cw_ratelimit *rl, const char *task)
{
	for (int i = 0; i < rl->nb; i++)
		if (!strcmp(rl->b[i]->task, task))
			return rl->b[i];
	return NULL;
}

static void on_token(struct cw_loop *loop, void *arg);

static void arm(struct bucket *b)
{
	struct cw_ratelimit *rl = b->rl;
	if (!b->n || b->timer || rl->stopped)
		return;
	b->timer = cw_loop_timer(rl->loop, cw_bucket_wait(&b->tb, cw_loop_now(rl->loop)), on_token,
				 b);
	if (!b->timer)
		cw_log(CW_LOG_ERROR, "consumer", "rate limit of %s: out of memory arming its timer; "
		       "its messages wait for the next one that arrives", b->task);
}

/* Hand the first n waiting messages of b to `ready`. */
static void release_head(struct bucket *b, size_t n)
{
	if (!n)
		return;
	struct held **hs = malloc(n * sizeof(*hs));
	struct cw_ratelimit *rl = b->rl;
	if (!hs) {
		/* one at a time needs no memory */
		for (size_t i = 0; i < n; i++) {
			struct held *h = b->q[0];
			memmove(b->q, b->q + 1, (b->n - 1) * sizeof(*b->q));
			b->n--;
			rl->ready(rl->arg, &h, 1);
		}
		return;
	}
	memcpy(hs, b->q, n * sizeof(*hs));
	memmove(b->q, b->q + n, (b->n - n) * sizeof(*b->q));
	b->n -= n;
	rl->ready(rl->arg, hs, n);
	free(hs);
}

static void on_token(struct cw_loop *loop, void *arg)
{
	struct bucket *b = arg;
	double now = cw_loop_now(loop);
	size_t n = 0;

	b->timer = 0;
	while (n < b->n && cw_bucket_take(&b->tb, now))
		n++;
	release_head(b, n);
	arm(b);
}

int cw_ratelimit_set(struct cw_ratelimit *rl, const char *task, double rate)
{
	struct bucket *b = find(rl, task);
	if (!b) {
		if (rate <= 0)
			return CW_OK;
		struct bucket **v = realloc(rl->b, (size_t)(rl->nb + 1) * sizeof(*v));
		if (!v)
			return CW_ENOMEM;
		rl->b = v;
		b = calloc(1, sizeof(*b));
		if (!b || !(b->task = strdup(task))) {
			free(b);
			return CW_ENOMEM;
		}
		b->rl = rl;
		rl->b[rl->nb++] = b;
		cw_bucket_init(&b->tb, rate, cw_loop_now(rl->loop));
	}
	b->tb.rate = rate > 0 ? rate : 0;
	if (b->timer)
		cw_loop_timer_cancel(rl->loop, b->timer);
	b->timer = 0;
	if (b->tb.rate == 0)
		release_head(b, b->n);  /* no limit any more: everything waiting is due now */
	else
		arm(b);
	return CW_OK;
}

double cw_ratelimit_rate(const struct cw_ratelimit *rl, const char *task)
{
	const struct bucket *b = find(rl, task);
	return b ? b->tb.rate : 0;
}

int cw_ratelimit_admit(struct cw_ratelimit *rl, struct held *h)
{
	struct bucket *b = find(rl, h->req.task);
	if (!b || b->tb.rate <= 0)
		return 0;
	/* behind others of its kind, or no token: wait in line */
	if (!b->n && cw_bucket_take(&b->tb, cw_loop_now(rl->loop)))
		return 0;
	if (b->n == b->cap) {
		size_t c = b->cap ? b->cap * 2 : 16;
		struct held **q = realloc(b->q, c * sizeof(*q));
		if (!q)
			return CW_ENOMEM;
		b->q = q;
		b->cap = c;
	}
	b->q[b->n++] = h;
	arm(b);
	return 1;
}

size_t cw_ratelimit_waiting(const struct cw_ratelimit *rl)
{
	size_t n = 0;
	for (int i = 0; i < rl->nb; i++)
		n += rl->b[i]->n;
	return n;
}

void cw_ratelimit_each(const struct cw_ratelimit *rl, cw_held_cb cb, void *arg)
{
	for (int i = 0; i < rl->nb; i++)
		for (size_t k = 0; k < rl->b[i]->n; k++)
			cb(arg, rl->b[i]->q[k], CW_HELD_READY);
}

struct held *cw_ratelimit_find(const struct cw_ratelimit *rl, const char *id)
{
	for (int i = 0; i < rl->nb; i++)
		for (size_t k = 0; k < rl->b[i]->n; k++)
			if (!strcmp(rl->b[i]->q[k]->req.id, id))
				return rl->b[i]->q[k];
	return NULL;
}

size_t cw_ratelimit_drain(struct cw_ratelimit *rl, bool stop, cw_held_cb cb, void *arg)
{
	size_t total = 0;
	if (stop)
		rl->stopped = true;
	for (int i = 0; i < rl->nb; i++) {
		struct bucket *b = rl->b[i];
		size_t n = b->n;
		b->n = 0;
		if (b->timer)
			cw_loop_timer_cancel(rl->loop, b->timer);
		b->timer = 0;
		for (size_t k = 0; k < n; k++)
			cb(arg, b->q[k], CW_HELD_READY);
		total += n;
	}
	return total;
}
