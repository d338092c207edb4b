/*
 * Redis transport, connections: the hiredis <-> cw_loop adapter, connecting
 * with AUTH / SELECT and reconnecting with backoff, the broadcast
 * subscription, and the ordered command queue that re-sends what a lost
 * connection did not answer (so an ack or a restore survives a restart).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"

static void flush_cmds(struct redis_broker *b);

/* ---- hiredis <-> cw_loop adapter --------------------------------------- */

static void on_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct rconn *c = arg;
	(void)loop;
	(void)fd;
	if ((ev & CW_READ) && c->ac)
		redisAsyncHandleRead(c->ac);
	if ((ev & CW_WRITE) && c->ac)
		redisAsyncHandleWrite(c->ac);
}

static void set_mask(struct rconn *c, unsigned m)
{
	if (m == c->mask)
		return;
	c->mask = m;
	cw_loop_watch(c->b->loop, c->fd, m, on_io, c);
}

static void ev_add_read(void *p) { struct rconn *c = p; set_mask(c, c->mask | CW_READ); }
static void ev_del_read(void *p) { struct rconn *c = p; set_mask(c, c->mask & ~CW_READ); }
static void ev_add_write(void *p) { struct rconn *c = p; set_mask(c, c->mask | CW_WRITE); }
static void ev_del_write(void *p) { struct rconn *c = p; set_mask(c, c->mask & ~CW_WRITE); }
static void ev_cleanup(void *p)
{
	struct rconn *c = p;
	/* forget the fd outright: hiredis closes it next, and the number gets reused */
	cw_loop_watch(c->b->loop, c->fd, 0, NULL, NULL);
	c->mask = 0;
}

/* ---- connection management --------------------------------------------- */

static void retry_cb(struct cw_loop *loop, void *arg)
{
	struct rconn *c = arg;
	(void)loop;
	c->retry_timer = 0;
	rb_conn_start(c->b, c);
}

static void schedule_retry(struct rconn *c)
{
	struct redis_broker *b = c->b;
	if (b->closing || c->retry_timer)
		return;
	c->backoff = c->backoff <= 0 ? 0.1 : fmin(c->backoff * 2, 5.0);
	c->retry_timer = cw_loop_timer(b->loop, c->backoff, retry_cb, c);
	if (!c->retry_timer) {
		/* rb_conn_recheck, from the periodic visibility scan, reconnects it instead */
		c->retry_lost = true;
		cw_log(CW_LOG_ERROR, "broker", "cannot arm the reconnect timer of the %s connection "
		       "(out of memory): retried at the next visibility scan tick", c->name);
	}
}

void rb_conn_recheck(struct redis_broker *b)
{
	struct rconn *cs[] = {&b->blk, &b->cmd, &b->sub};
	for (int i = 0; i < 3 && !b->closing; i++)
		if (cs[i]->retry_lost) {
			cs[i]->retry_lost = false;
			rb_conn_start(b, cs[i]);
		}
}

static void state_changed(struct redis_broker *b)
{
	bool up = b->blk.up && b->cmd.up;
	if (up == b->was_up)
		return;
	b->was_up = up;
	if (up)
		cw_log(CW_LOG_INFO, "broker", "Connected to %s", b->redacted);
	if (b->h.on_state)
		b->h.on_state(b->h.arg, up);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	(void)status;
	c->ac = NULL; /* hiredis frees it; its cleanup hook unwatches the fd */
	bool was = c->up;
	c->up = false;
	if (c == &c->b->blk)
		c->b->brpop_inflight = false;
	if (c->b->closing)
		return;
	if (was)
		cw_log(CW_LOG_WARNING, "broker", "Connection to broker lost (%s): %s; reconnecting",
		       c->name, ac->errstr[0] ? ac->errstr : "closed");
	state_changed(c->b);
	schedule_retry(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		cw_log(CW_LOG_DEBUG, "broker", "connect %s failed: %s", c->name, ac->errstr);
		c->ac = NULL;
		schedule_retry(c);
	}
}

static void on_pmessage(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	struct cw_envelope env;
	struct cw_error err = {0};
	(void)ac;

	if (!reply || b->closing || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 ||
	    reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "pmessage") ||
	    reply->element[2]->type != REDIS_REPLY_STRING ||
	    reply->element[3]->type != REDIS_REPLY_STRING)
		return;
	/* channel "/<db>.<exchange>[/<routing key>]" -> exchange */
	const char *ch = reply->element[2]->str, *dot = strchr(ch, '.');
	char exchange[256];
	if (!dot)
		return;
	snprintf(exchange, sizeof(exchange), "%.*s", (int)strcspn(dot + 1, "/"), dot + 1);
	if (cw_proto_decode_envelope(reply->element[3]->str, reply->element[3]->len, &b->limits, &env,
				     &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "broker", "dropped undecodable broadcast on %s: %s", ch, err.msg);
		return;
	}
	if (b->h.on_broadcast)
		b->h.on_broadcast(b->h.arg, exchange, &env);
	cw_envelope_clear(&env);
}

static void on_ready(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = priv;
	redisReply *reply = r;
	struct redis_broker *b = c->b;
	(void)ac;

	if (!reply)
		return; /* disconnected meanwhile */
	if (reply->type == REDIS_REPLY_ERROR) {
		cw_log(CW_LOG_ERROR, "broker", "broker %s refused setup: %s", b->redacted, reply->str);
		redisAsyncDisconnect(c->ac);
		return;
	}
	c->up = true;
	c->backoff = 0;
	if (c == &b->sub) {
		/* kombu fanout: channel "/<db>.<exchange>" (plus "/<routing key>" when one is set) */
		for (int i = 0; i < b->nbroadcast; i++)
			redisAsyncCommand(c->ac, on_pmessage, b, "PSUBSCRIBE /%d.%s /%d.%s/*", b->url.db,
					  b->broadcast[i], b->url.db, b->broadcast[i]);
		return;
	}
	if (c == &b->cmd) {
		/* Bind our queues as Celery's Queue(name, Exchange(name), name) does. */
		for (int i = 0; i < b->nqueues; i++) {
			char key[600], member[800];
			snprintf(key, sizeof(key), "_kombu.binding.%s", b->queues[i]);
			snprintf(member, sizeof(member), "%s" SEP SEP "%s", b->queues[i], b->queues[i]);
			redisAsyncCommand(c->ac, NULL, NULL, "SADD %s %s", key, member);
		}
		/* our mailbox, bound to the pidbox fanout as a Python worker's is */
		if (b->nodename[0]) {
			char member[800];
			snprintf(member, sizeof(member), SEP SEP "%s.celery.pidbox", b->nodename);
			redisAsyncCommand(c->ac, NULL, NULL, "SADD _kombu.binding.celery.pidbox %s",
					  member);
		}
		flush_cmds(b);
	}
	state_changed(b);
	rb_fetch(b);
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
	struct rconn *c = priv;
	redisReply *reply = r;
	(void)ac;
	if (reply && reply->type == REDIS_REPLY_ERROR) {
		/* the message names no secret; never log the password itself */
		cw_log(CW_LOG_ERROR, "broker", "authentication to %s failed: %s", c->b->redacted, reply->str);
		if (c->ac)
			redisAsyncDisconnect(c->ac);
	}
}

void rb_conn_start(struct redis_broker *b, struct rconn *c)
{
	const char *host = b->url.host[0] ? b->url.host : "127.0.0.1";
	int port = b->url.port ? b->url.port : 6379;

	if (b->closing)
		return;
	c->up = false;
	c->ac = redisAsyncConnect(host, port);
	if (!c->ac) {
		schedule_retry(c);
		return;
	}
	if (c->ac->err) {
		cw_log(CW_LOG_DEBUG, "broker", "connect %s: %s", c->name, c->ac->errstr);
		redisAsyncFree(c->ac);
		c->ac = NULL;
		schedule_retry(c);
		return;
	}
	c->ac->data = c;
	c->fd = c->ac->c.fd;
	c->mask = 0;
	c->ac->ev.data = c;
	c->ac->ev.addRead = ev_add_read;
	c->ac->ev.delRead = ev_del_read;
	c->ac->ev.addWrite = ev_add_write;
	c->ac->ev.delWrite = ev_del_write;
	c->ac->ev.cleanup = ev_cleanup;
	redisAsyncSetConnectCallback(c->ac, on_connect);
	redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
	if (b->url.password[0]) {
		if (b->url.user[0])
			redisAsyncCommand(c->ac, on_auth, c, "AUTH %s %s", b->url.user, b->url.password);
		else
			redisAsyncCommand(c->ac, on_auth, c, "AUTH %s", b->url.password);
	}
	redisAsyncCommand(c->ac, on_ready, c, "SELECT %d", b->url.db);
}

/* ---- ordered, re-sent commands on the command connection ---------------- */

void rb_rcmd_free(struct rcmd *q)
{
	for (int i = 0; i < q->argc; i++)
		free(q->argv[i]);
	free(q->argv);
	free(q->argvlen);
	free(q);
}

static void on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct rcmd *q = priv;
	struct redis_broker *b = ac->data ? ((struct rconn *)ac->data)->b : NULL;
	redisReply *reply = r;

	if (!b)
		return;
	if (!reply) {
		q->sent = false; /* lost with the connection: send again later */
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR)
		cw_log(CW_LOG_ERROR, "broker", "command %s failed: %s", q->argc > 0 ? q->argv[0] : "?",
		       reply->str);
	if (q->done)
		q->done(b, reply, q->arg);
	if (q->prev)
		q->prev->next = q->next;
	else
		b->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		b->tail = q->prev;
	rb_rcmd_free(q);
}

static void flush_cmds(struct redis_broker *b)
{
	if (!b->cmd.up || !b->cmd.ac)
		return;
	for (struct rcmd *q = b->head; q; q = q->next) {
		if (q->sent)
			continue;
		if (redisAsyncCommandArgv(b->cmd.ac, on_cmd_reply, q, q->argc, (const char **)q->argv,
					  q->argvlen) == REDIS_OK)
			q->sent = true;
	}
}

/* Queue a command; strings are copied (len < 0 means strlen). */
void rb_cmd(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
	    void *arg, int argc, const char *const *argv, const size_t *lens)
{
	struct rcmd *q = calloc(1, sizeof(*q));
	if (!q)
		goto oom;
	q->argv = calloc((size_t)argc, sizeof(char *));
	q->argvlen = calloc((size_t)argc, sizeof(size_t));
	if (!q->argv || !q->argvlen)
		goto oom;
	for (int i = 0; i < argc; i++) {
		size_t n = lens && lens[i] != (size_t)-1 ? lens[i] : strlen(argv[i]);
		q->argv[i] = malloc(n + 1);
		if (!q->argv[i])
			goto oom;
		memcpy(q->argv[i], argv[i], n);
		q->argv[i][n] = '\0';
		q->argvlen[i] = n;
		q->argc = i + 1;
	}
	q->done = done;
	q->arg = arg;
	q->prev = b->tail;
	if (b->tail)
		b->tail->next = q;
	else
		b->head = q;
	b->tail = q;
	flush_cmds(b);
	return;
oom:
	cw_log(CW_LOG_ERROR, "broker", "out of memory queueing a command");
	if (q)
		rb_rcmd_free(q);
}
