/*
 * Redis transport, connections: connecting (through the link the URL asks
 * for: redis_link.c or redis_tls.c) with AUTH / SELECT and reconnecting with
 * backoff, the broadcast subscription, and the ordered command queue that
 * re-sends what a lost connection did not answer (so an ack or a restore
 * survives a restart).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"

static void flush_cmds(struct redis_broker *b);

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
	rb_sentinel_recheck(b);
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

void rb_conn_lost(struct rconn *c, const char *why)
{
	struct redis_broker *b = c->b;
	bool was = c->up;

	c->link = NULL;
	c->up = false;
	if (b->closing)
		return;
	if (b->sentinel && c == &b->sentinel->conn) {
		rb_sentinel_conn_gone(b, why);
		return;
	}
	if (c == rb_take_conn(b)) {
		b->fetch_inflight = false;
		b->tracking = false;
	} else if (c == &b->sub) {
		b->sub_id = 0;
	}
	if (was)
		cw_log(CW_LOG_WARNING, "broker", "Connection to broker lost (%s): %s; reconnecting",
		       c->name, why && why[0] ? why : "closed");
	if (b->sentinel)
		rb_sentinel_stale(b);
	state_changed(b);
	schedule_retry(c);
}

void rb_conn_failed(struct rconn *c, const char *why)
{
	struct redis_broker *b = c->b;

	c->link = NULL;
	if (b->closing)
		return;
	if (b->sentinel && c == &b->sentinel->conn) {
		rb_sentinel_conn_gone(b, why);
		return;
	}
	cw_log(CW_LOG_DEBUG, "broker", "connect %s failed: %s", c->name, why);
	if (b->sentinel)
		rb_sentinel_stale(b);
	schedule_retry(c);
}

/* A command on c's link; hiredis's callback type (see struct rlink_ops). */
static void conn_cmd(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
		     const char **argv)
{
	if (c->link)
		c->ops->command(c, fn, priv, argc, argv, NULL);
}

/*
 * Everything the broadcast connection receives: tracking notices (a list we
 * consume from changed: wake the consumer) and the fanout messages.
 */
static void on_sub_message(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	struct cw_envelope env;
	struct cw_error err = {0};
	(void)ac;

	if (reply && !b->closing && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    !strcmp(reply->element[0]->str, "message") &&
	    reply->element[1]->type == REDIS_REPLY_STRING &&
	    !strcmp(reply->element[1]->str, "__redis__:invalidate")) {
		if (rb_notice_concerns_us(b, reply->element[2]))
			rb_wake(b);
		return;
	}
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

/* The broadcast connection's id: tracking notices are redirected to it. */
static void on_sub_id(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	(void)ac;

	if (!reply || b->closing)
		return;
	if (reply->type != REDIS_REPLY_INTEGER) {
		rb_no_tracking(b, reply->type == REDIS_REPLY_ERROR ? reply->str : "CLIENT ID");
		return;
	}
	b->sub_id = reply->integer;
	if (b->tracking)
		rb_track_renew(b); /* notices went to the old connection */
	else
		rb_wake(b);
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
		c->ops->disconnect(c);
		return;
	}
	if (b->sentinel && c == &b->sentinel->conn) {
		rb_sentinel_conn_ready(b);
		return;
	}
	c->up = true;
	c->backoff = 0;
	if (c == &b->sub) {
		/* its id first: a subscribed connection answers nothing else */
		const char *id[] = {"CLIENT", "ID"};
		conn_cmd(c, on_sub_id, b, 2, id);
		const char *inv[] = {"SUBSCRIBE", "__redis__:invalidate"};
		conn_cmd(c, on_sub_message, b, 2, inv);
		/* kombu fanout: channel "/<db>.<exchange>" (plus "/<routing key>" when one is set) */
		for (int i = 0; i < b->nbroadcast; i++) {
			char plain[600], keyed[600];
			snprintf(plain, sizeof(plain), "/%d.%s", b->url.db, b->broadcast[i]);
			snprintf(keyed, sizeof(keyed), "/%d.%s/*", b->url.db, b->broadcast[i]);
			const char *argv[] = {"PSUBSCRIBE", plain, keyed};
			conn_cmd(c, on_sub_message, b, 3, argv);
		}
		return;
	}
	if (c == &b->cmd) {
		/* Bind our queues as Celery's Queue(name, Exchange(name), name) does. */
		for (int i = 0; i < b->nqueues; i++) {
			char key[600], member[800];
			snprintf(key, sizeof(key), "_kombu.binding.%s", b->queues[i]);
			snprintf(member, sizeof(member), "%s" SEP SEP "%s", b->queues[i], b->queues[i]);
			const char *argv[] = {"SADD", key, member};
			conn_cmd(c, NULL, NULL, 3, argv);
		}
		/* our mailbox, bound to the pidbox fanout as a Python worker's is */
		if (b->nodename[0]) {
			char member[800];
			snprintf(member, sizeof(member), SEP SEP "%s.celery.pidbox", b->nodename);
			const char *argv[] = {"SADD", "_kombu.binding.celery.pidbox", member};
			conn_cmd(c, NULL, NULL, 3, argv);
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
		if (c->link)
			c->ops->disconnect(c);
	}
}

int rb_conn_open(struct redis_broker *b, struct rconn *c, const char *host, int port)
{
	c->up = false;
	int rc = c->ops->open(c, host, port);
	if (rc != CW_OK)
		return rc;
	bool to_sentinel = b->sentinel && c == &b->sentinel->conn;
	if (b->url.password[0] && !to_sentinel) {
		/* the data connections authenticate; sentinels are asked without (kombu's default) */
		const char *argv[] = {"AUTH", b->url.user[0] ? b->url.user : b->url.password,
				      b->url.password};
		conn_cmd(c, on_auth, c, b->url.user[0] ? 3 : 2, argv);
	}
	if (to_sentinel) {
		const char *argv[] = {"PING"};
		conn_cmd(c, on_ready, c, 1, argv);
	} else {
		char db[16];
		snprintf(db, sizeof(db), "%d", b->url.db);
		const char *argv[] = {"SELECT", db};
		conn_cmd(c, on_ready, c, 2, argv);
	}
	return CW_OK;
}

void rb_conn_start(struct redis_broker *b, struct rconn *c)
{
	if (b->closing)
		return;
	c->up = false;
	if (b->sentinel) {
		rb_sentinel_start(b, c); /* ends in rb_conn_open to the master */
		return;
	}
	if (rb_conn_open(b, c, b->url.host[0] ? b->url.host : "127.0.0.1",
			 b->url.port ? b->url.port : 6379) != CW_OK)
		schedule_retry(c);
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
	struct redis_broker *b = q->b;
	redisReply *reply = r;
	(void)ac;

	if (!reply) {
		q->sent = false; /* lost with the connection: send again later */
		return;
	}
	if (b->sentinel && reply->type == REDIS_REPLY_ERROR && !strncmp(reply->str, "READONLY", 8)) {
		/* a master turned replica under us: find the new one, send this again there */
		q->sent = false;
		cw_log(CW_LOG_WARNING, "broker", "broker %s is a replica now; asking the sentinels",
		       b->redacted);
		b->cmd.ops->disconnect(&b->cmd);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR && q->script && cw_script_missing(reply->str)) {
		/* the server does not have the script (restart, SCRIPT FLUSH): send its text */
		char *text = strdup(q->script->text), *eval = strdup("EVAL");
		if (text && eval) {
			free(q->argv[0]);
			free(q->argv[1]);
			q->argv[0] = eval;
			q->argv[1] = text;
			q->argvlen[0] = 4;
			q->argvlen[1] = strlen(text);
			q->script = NULL;
			q->sent = false;
			flush_cmds(b);
			return;
		}
		free(text);
		free(eval);
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
	if (!b->cmd.up || !b->cmd.link)
		return;
	for (struct rcmd *q = b->head; q; q = q->next) {
		if (q->sent)
			continue;
		if (b->cmd.ops->command(&b->cmd, on_cmd_reply, q, q->argc, (const char **)q->argv,
					q->argvlen) == CW_OK)
			q->sent = true;
	}
}

static struct rcmd *queue_cmd(struct redis_broker *b,
			      void (*done)(struct redis_broker *, redisReply *, void *), void *arg,
			      int argc, const char *const *argv, const size_t *lens);

void rb_cmd(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
	    void *arg, int argc, const char *const *argv, const size_t *lens)
{
	if (queue_cmd(b, done, arg, argc, argv, lens))
		flush_cmds(b);
}

static void on_script_load(struct redis_broker *b, redisReply *r, void *arg)
{
	struct cw_script *s = arg;
	(void)b;
	cw_script_loaded(s, r->type == REDIS_REPLY_ERROR,
			 r->type == REDIS_REPLY_STRING ? r->str : NULL, r->len);
}

void rb_cmd_script(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
		   void *arg, struct cw_script *script, int argc, const char *const *argv,
		   const size_t *lens)
{
	const char *v[16];
	size_t l[16];
	const char *sha = cw_script_sha(script);

	if (argc + 2 > 16)
		return;
	v[0] = sha ? "EVALSHA" : "EVAL";
	v[1] = sha ? sha : script->text;
	l[0] = l[1] = (size_t)-1;
	for (int i = 0; i < argc; i++) {
		v[i + 2] = argv[i];
		l[i + 2] = lens ? lens[i] : (size_t)-1;
	}
	if (cw_script_should_load(script)) {
		/* learn the digest (one SCRIPT LOAD per process); this call goes as text */
		const char *load[] = {"SCRIPT", "LOAD", script->text};
		if (queue_cmd(b, on_script_load, script, 3, load, NULL))
			script->loading = true;
	}
	struct rcmd *q = queue_cmd(b, done, arg, argc + 2, v, l);
	if (q)
		q->script = sha ? script : NULL;
	flush_cmds(b);
}

/* Queue a command (not yet sent); strings are copied (len (size_t)-1 means strlen). */
static struct rcmd *queue_cmd(struct redis_broker *b,
			      void (*done)(struct redis_broker *, redisReply *, void *), void *arg,
			      int argc, const char *const *argv, const size_t *lens)
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
	q->b = b;
	q->done = done;
	q->arg = arg;
	q->prev = b->tail;
	if (b->tail)
		b->tail->next = q;
	else
		b->head = q;
	b->tail = q;
	return q;
oom:
	cw_log(CW_LOG_ERROR, "broker", "out of memory queueing a command");
	if (q)
		rb_rcmd_free(q);
	return NULL;
}
