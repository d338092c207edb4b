/*
 * Redis transport, Sentinel (sentinel://h1:p1;sentinel://h2:p2 with
 * broker_transport_options.master_name), as kombu's SentinelChannel: the
 * sentinels are asked in turn for the master (SENTINEL
 * get-master-addr-by-name), the three connections go to it, and once any of
 * them fails or is lost the sentinels are asked again, so the worker follows
 * a failover.  Sentinels are asked in clear text, without AUTH, one at a time
 * on one hiredis connection in the event loop; the master's connections use
 * the transport's link (TLS when broker_use_ssl is set).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"

static void ask_next(struct redis_broker *b);

static unsigned bit_of(struct redis_broker *b, struct rconn *c)
{
	return c == &b->blk ? 1u : c == &b->cmd ? 2u : 4u;
}

int rb_sentinel_init(struct redis_broker *b, const struct cw_redis_url *u, const char *master_name,
		     struct cw_error *err)
{
	if (!master_name || !*master_name) {
		cw_error_set(err, CW_EINVAL, "sentinel:// needs the 'master_name' transport option "
			     "(broker_transport_options.master_name)");
		return CW_EINVAL;
	}
	struct rsentinel *s = calloc(1, sizeof(*s));
	if (!s || !(s->addrs = calloc((size_t)u->nsentinels, sizeof(*s->addrs)))) {
		free(s);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	memcpy(s->addrs, u->sentinels, (size_t)u->nsentinels * sizeof(*s->addrs));
	s->n = u->nsentinels;
	snprintf(s->master_name, sizeof(s->master_name), "%s", master_name);
	s->conn = (struct rconn){.b = b, .name = "sentinel", .ops = &rb_hiredis_link};
	b->sentinel = s;
	return CW_OK;
}

static void open_master(struct redis_broker *b, struct rconn *c)
{
	struct rsentinel *s = b->sentinel;
	if (rb_conn_open(b, c, s->host, s->port) != CW_OK)
		rb_conn_failed(c, "cannot connect to the master");
}

void rb_sentinel_start(struct redis_broker *b, struct rconn *c)
{
	struct rsentinel *s = b->sentinel;
	if (s->fresh) {
		open_master(b, c);
		return;
	}
	s->waiting |= bit_of(b, c);
	if (!s->resolving && !s->retry_timer) {
		s->asked = 0;
		ask_next(b);
	}
}

void rb_sentinel_stale(struct redis_broker *b)
{
	b->sentinel->fresh = false;
}

static void retry_cb(struct cw_loop *loop, void *arg)
{
	struct redis_broker *b = arg;
	(void)loop;
	b->sentinel->retry_timer = 0;
	ask_next(b);
}

/* Ask again after delay; a timer that cannot be armed is logged and left to the scan tick. */
static void retry_in(struct redis_broker *b, double delay)
{
	struct rsentinel *s = b->sentinel;
	s->retry_timer = cw_loop_timer(b->loop, delay, retry_cb, b);
	if (!s->retry_timer) {
		s->retry_lost = true;
		cw_log(CW_LOG_ERROR, "broker", "sentinel: cannot arm the retry timer (out of "
		       "memory): asked again at the next visibility scan tick");
	}
}

void rb_sentinel_recheck(struct redis_broker *b)
{
	struct rsentinel *s = b->sentinel;
	if (s && s->retry_lost && !b->closing) {
		s->retry_lost = false;
		ask_next(b);
	}
}

static void ask_next(struct redis_broker *b)
{
	struct rsentinel *s = b->sentinel;

	if (b->closing)
		return;
	if (s->asked >= s->n) {
		/* a whole round without an answer: wait, then start over */
		s->resolving = false;
		s->asked = 0;
		s->backoff = s->backoff <= 0 ? 0.1 : fmin(s->backoff * 2, 5.0);
		cw_log(CW_LOG_WARNING, "broker", "no sentinel of %s named master '%s'; asking again "
		       "in %.1fs", b->redacted, s->master_name, s->backoff);
		retry_in(b, s->backoff);
		return;
	}
	if (s->conn.link) {
		/* the previous sentinel's connection is still closing: drop it now, quietly */
		s->resolving = false;
		s->conn.ops->free(&s->conn);
	}
	const struct cw_url *a = &s->addrs[s->next];
	s->next = (s->next + 1) % s->n;
	s->asked++;
	s->resolving = true;
	if (rb_conn_open(b, &s->conn, a->host, a->port) != CW_OK)
		retry_in(b, 0);
}

static void on_master(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	struct rsentinel *s = b->sentinel;
	redisReply *reply = r;
	(void)ac;

	if (!reply || b->closing)
		return; /* the connection went: rb_sentinel_conn_gone asks the next one */
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING) {
		cw_log(CW_LOG_WARNING, "broker", "sentinel %s:%d does not know master '%s'%s%s",
		       s->addrs[(s->next + s->n - 1) % s->n].host,
		       s->addrs[(s->next + s->n - 1) % s->n].port, s->master_name,
		       reply->type == REDIS_REPLY_ERROR ? ": " : "",
		       reply->type == REDIS_REPLY_ERROR ? reply->str : "");
		s->conn.ops->disconnect(&s->conn); /* then the next sentinel */
		return;
	}
	int port = atoi(reply->element[1]->str);
	if (strcmp(s->host, reply->element[0]->str) || s->port != port)
		cw_log(CW_LOG_INFO, "broker", "Sentinel: master '%s' is at %s:%d", s->master_name,
		       reply->element[0]->str, port);
	snprintf(s->host, sizeof(s->host), "%s", reply->element[0]->str);
	s->port = port;
	s->fresh = true;
	s->resolving = false;
	s->backoff = 0;
	s->conn.ops->disconnect(&s->conn);
	unsigned waiting = s->waiting;
	s->waiting = 0;
	struct rconn *cs[] = {&b->blk, &b->cmd, &b->sub};
	for (int i = 0; i < 3; i++)
		if (waiting & bit_of(b, cs[i]))
			open_master(b, cs[i]);
}

void rb_sentinel_conn_ready(struct redis_broker *b)
{
	struct rsentinel *s = b->sentinel;
	const char *argv[] = {"SENTINEL", "get-master-addr-by-name", s->master_name};
	if (s->conn.ops->command(&s->conn, on_master, b, 3, argv, NULL) != CW_OK)
		s->conn.ops->disconnect(&s->conn);
}

void rb_sentinel_conn_gone(struct redis_broker *b, const char *why)
{
	struct rsentinel *s = b->sentinel;
	if (!s->resolving)
		return; /* closed after its answer */
	cw_log(CW_LOG_DEBUG, "broker", "sentinel: %s", why && why[0] ? why : "closed");
	/* from a timer: hiredis still tidies the old connection after this callback */
	if (!s->retry_timer)
		retry_in(b, 0);
}

void rb_sentinel_free(struct redis_broker *b)
{
	struct rsentinel *s = b->sentinel;
	if (!s)
		return;
	if (s->retry_timer)
		cw_loop_timer_cancel(b->loop, s->retry_timer);
	s->conn.ops->free(&s->conn);
	free(s->addrs);
	free(s);
	b->sentinel = NULL;
}
