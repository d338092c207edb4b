/*
 * Redis transport with kombu's semantics (kombu/transport/redis.py, 5.2):
 *
 *  - a queue is a list; producers LPUSH, consumers BRPOP (timeout 1 s) over
 *    every consumed queue at every priority step, highest priority first;
 *    the queue that delivered rotates to the end (fair cycle);
 *  - a delivered message is recorded in hash `unacked` (tag ->
 *    [envelope, exchange, routing_key]) and zset `unacked_index` (tag ->
 *    time); ack removes both; anything older than the visibility timeout
 *    is pushed back to its queue by whichever worker scans first, under
 *    the `unacked_mutex` lock;
 *  - binding sets `_kombu.binding.<exchange>` say where a restored message
 *    goes.
 *
 * Two connections: one blocked in BRPOP, one for everything else.  Commands
 * on the second are queued in order and re-sent after a reconnect until
 * Redis answers, so an ack or a restore survives a Redis restart.  All of
 * them are idempotent (Lua scripts that test before they move).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "broker/broker.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"
#include "util/uuid.h"

#define SEP "\x06\x16"
#define BRPOP_TIMEOUT "1"
#define RESTORE_BATCH "10"
#define MUTEX_EXPIRE "300"

static const int priority_steps[] = {0, 3, 6, 9};
#define NPRI (int)(sizeof(priority_steps) / sizeof(priority_steps[0]))

/*
 * Record a delivery and count it: KEYS unacked_index, unacked,
 * cworker.deliveries; ARGV time, tag, [env, ex, rk].  Returns how many
 * times this message has been delivered (the count survives requeues and
 * visibility restores; an ack deletes it).
 */
static const char lua_deliver[] =
	"redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) "
	"redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) "
	"return redis.call('HINCRBY', KEYS[3], ARGV[2], 1)";
#define DELIVERIES_KEY "cworker.deliveries"
/* Refresh a held message's timestamp, only if it is still recorded. */
static const char lua_touch[] =
	"if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then "
	"redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2]) end return 1";
/* Ack / reject without requeue: KEYS unacked_index, unacked, cworker.deliveries; ARGV tag. */
static const char lua_ack[] =
	"redis.call('ZREM', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) "
	"redis.call('HDEL', KEYS[3], ARGV[1]) return 1";
/*
 * Give back a message we hold: only if it is still ours (present in
 * `unacked`), so a message another worker already restored is not doubled.
 * KEYS unacked, unacked_index, queue; ARGV tag, payload, "L"|"R".
 */
static const char lua_requeue[] =
	"redis.call('ZREM', KEYS[2], ARGV[1]) "
	"if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then "
	"  if ARGV[3] == 'L' then redis.call('LPUSH', KEYS[3], ARGV[2]) "
	"  else redis.call('RPUSH', KEYS[3], ARGV[2]) end return 1 end return 0";
/*
 * Visibility scan, step 1: take the mutex, list up to N expired tags with
 * their stored values.  KEYS unacked_mutex, unacked_index, unacked;
 * ARGV token, expire, ceil, N.  Returns nil when another worker holds it.
 */
static const char lua_scan[] =
	"if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end "
	"local tags = redis.call('ZREVRANGEBYSCORE', KEYS[2], ARGV[3], 0, 'LIMIT', 0, ARGV[4]) "
	"local out = {} "
	"for _, t in ipairs(tags) do "
	"  local v = redis.call('HGET', KEYS[3], t) "
	"  out[#out + 1] = t out[#out + 1] = v or '' end "
	"return out";
/*
 * Step 2, per tag: if the entry is unchanged, drop it from the bookkeeping
 * and RPUSH the message to the queues its exchange binds the routing key to
 * (the routing key itself for the default exchange, or when no binding
 * matches: kombu would use its dead-letter queue; we keep the message).
 * KEYS unacked, unacked_index, _kombu.binding.<exchange>;
 * ARGV tag, old value, new payload, exchange, routing key.
 */
static const char lua_restore[] =
	"if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then "
	"  redis.call('ZREM', KEYS[2], ARGV[1]) return 0 end "
	"redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('ZREM', KEYS[2], ARGV[1]) "
	"local pushed = 0 "
	"if ARGV[4] ~= '' then "
	"  for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do "
	"    local rk, rest = string.match(m, '^(.-)\\6\\22(.*)$') "
	"    if rk then "
	"      local q = string.match(rest, '^.-\\6\\22(.*)$') "
	"      if q and rk == ARGV[5] then redis.call('RPUSH', q, ARGV[3]) pushed = pushed + 1 end "
	"    end "
	"  end "
	"end "
	"if pushed == 0 then redis.call('RPUSH', ARGV[5], ARGV[3]) end return 1";
/* Publish once: KEYS queue list, marker; ARGV payload.  The marker makes a resend harmless. */
static const char lua_publish[] =
	"if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 3600) then "
	"redis.call('LPUSH', KEYS[1], ARGV[1]) return 1 end return 0";
/*
 * Publish to a direct exchange the way kombu's Redis _put does: look the
 * routing key up in _kombu.binding.<exchange> and LPUSH to every bound
 * queue.  KEYS binding set; ARGV routing key, payload, expiry seconds for
 * the target lists (0 = none; pidbox replies get one so lists orphaned
 * by clients that gave up do not pile up).
 */
static const char lua_publish_direct[] =
	"local n = 0 "
	"for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
	"  local rk, rest = string.match(m, '^(.-)\\6\\22(.*)$') "
	"  if rk == ARGV[1] then "
	"    local q = string.match(rest, '^.-\\6\\22(.*)$') "
	"    if q then redis.call('LPUSH', q, ARGV[2]) n = n + 1 "
	"      if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', q, ARGV[3]) end end "
	"  end "
	"end return n";
/* Step 3: release the mutex if it is still ours.  KEYS mutex; ARGV token. */
static const char lua_unlock[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

struct redis_broker;

struct rconn {
	struct redis_broker *b;
	const char *name;
	redisAsyncContext *ac;
	int fd;
	unsigned mask;
	bool up;           /* connected, authenticated, database selected */
	double backoff;
	uint64_t retry_timer;
};

/* A queued command for the command connection. */
struct rcmd {
	struct rcmd *next, *prev;
	int argc;
	char **argv;
	size_t *argvlen;
	bool sent;
	void (*done)(struct redis_broker *b, redisReply *r, void *arg);
	void *arg;
};

struct redis_broker {
	struct cw_broker base;
	struct cw_loop *loop;
	struct cw_broker_handler h;
	struct cw_url url;
	char redacted[512];
	char **queues;         /* cycle order; rotated after each delivery */
	int nqueues;
	double visibility_timeout;
	struct cw_proto_limits limits;
	struct rconn blk, cmd, sub;
	char **broadcast;       /* fanout exchanges subscribed on `sub` */
	int nbroadcast;
	struct rcmd *head, *tail;
	int credit;
	int recording;          /* taken off a queue, bookkeeping not yet confirmed */
	bool brpop_inflight;
	bool closing;
	bool was_up;
	uint64_t scan_timer;
	bool scanning;
	char scan_token[37];
	char nodename[256];     /* worker node name, for the mailbox binding */
};

static void conn_start(struct redis_broker *b, struct rconn *c);
static void fetch(struct redis_broker *b);
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
	conn_start(c->b, c);
}

static void schedule_retry(struct rconn *c)
{
	struct redis_broker *b = c->b;
	if (b->closing || c->retry_timer)
		return;
	c->backoff = c->backoff <= 0 ? 0.1 : fmin(c->backoff * 2, 5.0);
	c->retry_timer = cw_loop_timer(b->loop, c->backoff, retry_cb, c);
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
	fetch(b);
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

static void conn_start(struct redis_broker *b, struct rconn *c)
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

static void rcmd_free(struct rcmd *q)
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
	rcmd_free(q);
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
static void cmd(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
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
		rcmd_free(q);
}

/* ---- consuming ---------------------------------------------------------- */

static void rotate(struct redis_broker *b, const char *queue)
{
	for (int i = 0; i < b->nqueues; i++) {
		if (strcmp(b->queues[i], queue) != 0)
			continue;
		char *q = b->queues[i];
		memmove(&b->queues[i], &b->queues[i + 1], (size_t)(b->nqueues - i - 1) * sizeof(char *));
		b->queues[b->nqueues - 1] = q;
		return;
	}
}

static char *json_str(const char *s)
{
	json_t *j = json_string(s);
	char *out = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
	json_decref(j);
	return out;
}

static void on_recorded(struct redis_broker *b, redisReply *r, void *arg)
{
	struct cw_delivery *d = arg;
	d->deliveries = r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 1;
	b->recording--;
	b->h.on_delivery(b->h.arg, d);
}

static void deliver(struct redis_broker *b, const char *key, const char *item, size_t len)
{
	struct cw_delivery *d = calloc(1, sizeof(*d));
	struct cw_error err = {0};
	char tagbuf[37];
	const char *sep;

	if (!d)
		return;
	/* strip the priority suffix: dest.rsplit(sep, 1)[0] */
	sep = NULL;
	for (const char *p = strstr(key, SEP); p; p = strstr(p + 1, SEP))
		sep = p;
	d->queue = sep ? strndup(key, (size_t)(sep - key)) : strdup(key);
	d->raw = malloc(len + 1);
	if (!d->queue || !d->raw)
		goto drop;
	memcpy(d->raw, item, len);
	d->raw[len] = '\0';
	d->raw_len = len;
	if (cw_proto_decode_envelope(item, len, &b->limits, &d->env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message from queue %s (%zu bytes): %s",
		       d->queue, len, err.msg);
		goto drop;
	}
	if (d->env.delivery_tag) {
		d->tag = strdup(d->env.delivery_tag);
	} else {
		cw_uuid4(tagbuf);
		d->tag = strdup(tagbuf);
	}
	if (!d->tag)
		goto drop;

	/* unacked value: [envelope, exchange, routing_key] */
	char *ex = json_str(d->env.exchange), *rk = json_str(d->env.routing_key);
	size_t vlen = len + (ex ? strlen(ex) : 0) + (rk ? strlen(rk) : 0) + 8;
	char *val = malloc(vlen);
	if (!ex || !rk || !val) {
		free(ex);
		free(rk);
		free(val);
		goto drop;
	}
	vlen = (size_t)snprintf(val, vlen, "[%s, %s, %s]", d->raw, ex, rk);
	free(ex);
	free(rk);
	char score[32];
	snprintf(score, sizeof(score), "%.6f", cw_wall());
	const char *argv[] = {"EVAL", lua_deliver, "3", "unacked_index", "unacked", DELIVERIES_KEY,
			      score, d->tag, val};
	size_t lens[] = {4, strlen(lua_deliver), 1, 13, 7, strlen(DELIVERIES_KEY), strlen(score),
			 strlen(d->tag), vlen};
	/* the consumer sees the message only once Redis has it recorded as unacked */
	cmd(b, on_recorded, d, 9, argv, lens);
	free(val);
	b->recording++;

	rotate(b, d->queue);
	if (b->credit > 0)
		b->credit--;
	return;
drop:
	cw_delivery_free(d);
}

static void on_brpop(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	(void)ac;

	b->brpop_inflight = false;
	if (!reply || b->closing)
		return;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		deliver(b, reply->element[0]->str, reply->element[1]->str, reply->element[1]->len);
	} else if (reply->type == REDIS_REPLY_ERROR) {
		cw_log(CW_LOG_ERROR, "broker", "BRPOP failed: %s", reply->str);
	}
	fetch(b);
}

static void fetch(struct redis_broker *b)
{
	if (b->closing || b->brpop_inflight || b->credit <= 0 || !b->blk.up || !b->cmd.up ||
	    b->nqueues == 0)
		return;
	int argc = 2 + b->nqueues * NPRI;
	const char **argv = calloc((size_t)argc, sizeof(char *));
	char **keys = calloc((size_t)b->nqueues * NPRI, sizeof(char *));
	if (!argv || !keys)
		goto out;
	argv[0] = "BRPOP";
	int k = 0;
	for (int p = 0; p < NPRI; p++)
		for (int i = 0; i < b->nqueues; i++) {
			size_t n = strlen(b->queues[i]) + 8;
			keys[k] = malloc(n);
			if (!keys[k])
				goto out;
			if (priority_steps[p])
				snprintf(keys[k], n, "%s" SEP "%d", b->queues[i], priority_steps[p]);
			else
				snprintf(keys[k], n, "%s", b->queues[i]);
			argv[1 + k] = keys[k];
			k++;
		}
	argv[argc - 1] = BRPOP_TIMEOUT;
	if (redisAsyncCommandArgv(b->blk.ac, on_brpop, b, argc, argv, NULL) == REDIS_OK)
		b->brpop_inflight = true;
out:
	if (keys)
		for (int i = 0; i < b->nqueues * NPRI; i++)
			free(keys[i]);
	free(keys);
	free(argv);
}

/* ---- visibility-timeout restore ------------------------------------------ */

static void scan_schedule(struct redis_broker *b);

static void on_unlock(struct redis_broker *b, redisReply *r, void *arg)
{
	(void)r;
	(void)arg;
	b->scanning = false;
}

/* Mark a restored envelope as redelivered, as kombu's _do_restore_message does. */
static char *mark_redelivered(json_t *env)
{
	json_t *headers = json_object_get(env, "headers");
	json_t *props = json_object_get(env, "properties");
	json_t *di = props ? json_object_get(props, "delivery_info") : NULL;
	if (json_is_object(headers) && json_is_object(di)) {
		json_object_set_new(headers, "redelivered", json_true());
		json_object_set_new(di, "redelivered", json_true());
	}
	return json_dumps(env, JSON_COMPACT);
}

static void on_scan(struct redis_broker *b, redisReply *r, void *arg)
{
	(void)arg;
	if (r->type != REDIS_REPLY_ARRAY) {
		b->scanning = false; /* nil: another worker holds the mutex */
		return;
	}
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		redisReply *tag = r->element[i], *val = r->element[i + 1];
		if (tag->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
			continue;
		json_error_t je;
		json_t *entry = json_loadb(val->str, val->len, 0, &je);
		json_t *env = json_array_get(entry, 0);
		const char *ex = json_string_value(json_array_get(entry, 1));
		const char *rk = json_string_value(json_array_get(entry, 2));
		if (!json_is_object(env) || !ex || !rk) {
			cw_log(CW_LOG_ERROR, "broker", "cannot restore unacked message %s: malformed entry",
			       tag->str);
			json_decref(entry);
			continue;
		}
		char *payload = mark_redelivered(env);
		char bkey[600];
		snprintf(bkey, sizeof(bkey), "_kombu.binding.%s", ex);
		if (payload) {
			const char *argv[] = {"EVAL", lua_restore, "3", "unacked", "unacked_index", bkey,
					      tag->str, val->str, payload, ex, rk};
			size_t lens[] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1,
					 (size_t)-1, tag->len, val->len, strlen(payload), (size_t)-1,
					 (size_t)-1};
			cmd(b, NULL, NULL, 11, argv, lens);
			cw_log(CW_LOG_WARNING, "broker",
			       "Restoring unacknowledged message %s to queue %s (visibility timeout %.0fs passed)",
			       tag->str, rk, b->visibility_timeout);
		}
		free(payload);
		json_decref(entry);
	}
	const char *argv[] = {"EVAL", lua_unlock, "1", "unacked_mutex", b->scan_token};
	cmd(b, on_unlock, NULL, 5, argv, NULL);
}

static void scan_cb(struct cw_loop *loop, void *arg)
{
	struct redis_broker *b = arg;
	(void)loop;
	b->scan_timer = 0;
	if (!b->scanning && b->cmd.up && !b->closing) {
		char ceil[32];
		snprintf(ceil, sizeof(ceil), "%.6f", cw_wall() - b->visibility_timeout);
		cw_uuid4(b->scan_token);
		b->scanning = true;
		const char *argv[] = {"EVAL", lua_scan, "3", "unacked_mutex", "unacked_index",
				      "unacked", b->scan_token, MUTEX_EXPIRE, ceil, RESTORE_BATCH};
		cmd(b, on_scan, NULL, 10, argv, NULL);
	}
	scan_schedule(b);
}

static void scan_schedule(struct redis_broker *b)
{
	/* kombu scans about every 10 s; scan sooner when the timeout is short */
	double every = fmin(10.0, fmax(0.2, b->visibility_timeout / 2));
	if (!b->closing)
		b->scan_timer = cw_loop_timer(b->loop, every, scan_cb, b);
}

/* ---- vtable --------------------------------------------------------------- */

static struct cw_broker *rb_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				 const struct cw_broker_handler *h, struct cw_error *err)
{
	struct redis_broker *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	if (cw_url_parse(o->url, &b->url, err) != CW_OK) {
		free(b);
		return NULL;
	}
	cw_url_redact(o->url, b->redacted, sizeof(b->redacted));
	b->loop = loop;
	b->h = *h;
	b->limits = o->limits;
	b->visibility_timeout = o->visibility_timeout;
	if (o->nodename)
		snprintf(b->nodename, sizeof(b->nodename), "%s", o->nodename);
	b->queues = calloc((size_t)o->nqueues, sizeof(char *));
	if (!b->queues) {
		free(b);
		return NULL;
	}
	for (int i = 0; i < o->nqueues; i++)
		b->queues[i] = strdup(o->queues[i]);
	b->nqueues = o->nqueues;
	b->blk = (struct rconn){.b = b, .name = "consumer"};
	b->cmd = (struct rconn){.b = b, .name = "commands"};
	b->sub = (struct rconn){.b = b, .name = "broadcast"};
	for (const char *const *x = o->broadcast; h->on_broadcast && x && *x; x++)
		b->nbroadcast++;
	b->broadcast = calloc((size_t)b->nbroadcast + 1, sizeof(char *));
	if (!b->broadcast)
		b->nbroadcast = 0;
	for (int i = 0; i < b->nbroadcast; i++)
		if (!(b->broadcast[i] = strdup(o->broadcast[i])))
			b->nbroadcast = i;
	conn_start(b, &b->blk);
	conn_start(b, &b->cmd);
	if (b->nbroadcast)
		conn_start(b, &b->sub);
	scan_schedule(b);
	return &b->base;
}

static void rb_set_credit(struct cw_broker *base, int n)
{
	struct redis_broker *b = (struct redis_broker *)base;
	/* messages still being recorded are already the consumer's */
	b->credit = n - b->recording;
	fetch(b);
}

static void rb_ack(struct cw_broker *base, struct cw_delivery *d)
{
	struct redis_broker *b = (struct redis_broker *)base;
	const char *argv[] = {"EVAL", lua_ack, "3", "unacked_index", "unacked", DELIVERIES_KEY, d->tag};
	cmd(b, NULL, NULL, 7, argv, NULL);
}

/* kombu's _q_for_pri: the list for a priority, by its step (0 = the queue itself). */
static void queue_key(char *out, size_t n, const char *queue, int priority)
{
	int step = 0;
	for (int i = 0; i < NPRI; i++)
		if (priority >= priority_steps[i])
			step = priority_steps[i];
	if (step)
		snprintf(out, n, "%s" SEP "%d", queue, step);
	else
		snprintf(out, n, "%s", queue);
}

static void rb_publish(struct cw_broker *base, const char *queue, int priority, const char *tag,
		       const char *raw, size_t len)
{
	struct redis_broker *b = (struct redis_broker *)base;
	char key[600], marker[128];
	queue_key(key, sizeof(key), queue, priority);
	snprintf(marker, sizeof(marker), "cworker.published.%.64s", tag);
	const char *argv[] = {"EVAL", lua_publish, "2", key, marker, raw};
	size_t lens[] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, len};
	cmd(b, NULL, NULL, 6, argv, lens);
}

static void rb_publish_fanout(struct cw_broker *base, const char *exchange,
			      const char *routing_key, const char *raw, size_t len)
{
	struct redis_broker *b = (struct redis_broker *)base;
	char channel[700];

	if (!b->cmd.up)
		return; /* transient: events are not kept while the broker is away */
	/* kombu fanout_patterns: "/<db>.<exchange>/<routing key>" */
	if (routing_key && *routing_key)
		snprintf(channel, sizeof(channel), "/%d.%s/%s", b->url.db, exchange, routing_key);
	else
		snprintf(channel, sizeof(channel), "/%d.%s", b->url.db, exchange);
	const char *argv[] = {"PUBLISH", channel, raw};
	size_t lens[] = {(size_t)-1, (size_t)-1, len};
	cmd(b, NULL, NULL, 3, argv, lens);
}

static void rb_publish_direct(struct cw_broker *base, const char *exchange,
			      const char *routing_key, const char *raw, size_t len, int expire)
{
	struct redis_broker *b = (struct redis_broker *)base;
	char key[600], exp[16];

	if (!b->cmd.up)
		return;
	snprintf(key, sizeof(key), "_kombu.binding.%s", exchange);
	snprintf(exp, sizeof(exp), "%d", expire);
	const char *argv[] = {"EVAL", lua_publish_direct, "1", key, routing_key, raw, exp};
	size_t lens[] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, len,
			 (size_t)-1};
	cmd(b, NULL, NULL, 7, argv, lens);
}

static void bind_queue(struct redis_broker *b, const char *queue)
{
	char key[600], member[800];
	snprintf(key, sizeof(key), "_kombu.binding.%s", queue);
	snprintf(member, sizeof(member), "%s" SEP SEP "%s", queue, queue);
	const char *argv[] = {"SADD", key, member};
	cmd(b, NULL, NULL, 3, argv, NULL);
}

static int rb_add_queue(struct cw_broker *base, const char *queue)
{
	struct redis_broker *b = (struct redis_broker *)base;
	for (int i = 0; i < b->nqueues; i++)
		if (!strcmp(b->queues[i], queue))
			return CW_EINVAL;
	char **q = realloc(b->queues, (size_t)(b->nqueues + 1) * sizeof(char *));
	if (!q)
		return CW_ENOMEM;
	b->queues = q;
	if (!(q[b->nqueues] = strdup(queue)))
		return CW_ENOMEM;
	b->nqueues++;
	bind_queue(b, queue);
	fetch(b);
	return CW_OK;
}

static int rb_cancel_queue(struct cw_broker *base, const char *queue)
{
	struct redis_broker *b = (struct redis_broker *)base;
	for (int i = 0; i < b->nqueues; i++)
		if (!strcmp(b->queues[i], queue)) {
			free(b->queues[i]);
			memmove(b->queues + i, b->queues + i + 1,
				(size_t)(b->nqueues - i - 1) * sizeof(char *));
			b->nqueues--;
			return CW_OK;
		}
	return CW_ENOTFOUND;
}

static int rb_queues(struct cw_broker *base, const char *const **out)
{
	struct redis_broker *b = (struct redis_broker *)base;
	*out = (const char *const *)b->queues;
	return b->nqueues;
}

static void rb_touch(struct cw_broker *base, struct cw_delivery *d)
{
	struct redis_broker *b = (struct redis_broker *)base;
	char score[32];
	snprintf(score, sizeof(score), "%.6f", cw_wall());
	const char *argv[] = {"EVAL", lua_touch, "2", "unacked_index", "unacked", score, d->tag};
	cmd(b, NULL, NULL, 7, argv, NULL);
}

static void requeue(struct redis_broker *b, struct cw_delivery *d, const char *side)
{
	char *payload = mark_redelivered(d->env.root);
	const char *argv[] = {"EVAL", lua_requeue, "3", "unacked", "unacked_index", d->queue,
			      d->tag, payload ? payload : d->raw, side};
	cmd(b, NULL, NULL, 9, argv, NULL);
	free(payload);
}

static void rb_reject(struct cw_broker *base, struct cw_delivery *d, bool requeue_it)
{
	struct redis_broker *b = (struct redis_broker *)base;
	if (requeue_it)
		requeue(b, d, "L"); /* kombu: restore_by_tag(leftmost=True) */
	else
		rb_ack(base, d);
}

static void rb_restore(struct cw_broker *base, struct cw_delivery *d)
{
	/* kombu's restore_unacked at channel close RPUSHes: next to be taken */
	requeue((struct redis_broker *)base, d, "R");
}

static bool rb_busy(struct cw_broker *base)
{
	struct redis_broker *b = (struct redis_broker *)base;
	return b->head != NULL || b->brpop_inflight;
}

/* Queue depth for metrics: LLEN of the queue's list at every priority step. */
static const char lua_depth[] =
	"local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('LLEN', k) end return n";

struct depth_req {
	void (*cb)(void *arg, const char *queue, long depth);
	void *arg;
	char queue[];
};

static void on_depth(redisAsyncContext *ac, void *r, void *priv)
{
	struct depth_req *q = priv;
	redisReply *reply = r;
	struct rconn *c = ac->data;
	if (reply && reply->type == REDIS_REPLY_INTEGER && c && !c->b->closing)
		q->cb(q->arg, q->queue, (long)reply->integer);
	free(q);
}

static void rb_queue_depth(struct cw_broker *base, const char *queue,
			   void (*cb)(void *arg, const char *queue, long depth), void *arg)
{
	struct redis_broker *b = (struct redis_broker *)base;
	if (!b->cmd.up || !b->cmd.ac)
		return;
	size_t n = strlen(queue) + 8;
	struct depth_req *q = malloc(sizeof(*q) + n);
	char keys[NPRI][300], nkeys[8];
	const char *argv[3 + NPRI];
	if (!q || n > sizeof(keys[0])) {
		free(q);
		return;
	}
	q->cb = cb;
	q->arg = arg;
	memcpy(q->queue, queue, n - 7);
	argv[0] = "EVAL";
	argv[1] = lua_depth;
	snprintf(nkeys, sizeof(nkeys), "%d", NPRI);
	argv[2] = nkeys;
	for (int p = 0; p < NPRI; p++) {
		if (priority_steps[p])
			snprintf(keys[p], sizeof(keys[p]), "%s" SEP "%d", queue, priority_steps[p]);
		else
			snprintf(keys[p], sizeof(keys[p]), "%s", queue);
		argv[3 + p] = keys[p];
	}
	if (redisAsyncCommandArgv(b->cmd.ac, on_depth, q, 3 + NPRI, argv, NULL) != REDIS_OK)
		free(q);
}

static bool rb_connected(struct cw_broker *base)
{
	struct redis_broker *b = (struct redis_broker *)base;
	return b->blk.up && b->cmd.up;
}

static void rb_close(struct cw_broker *base)
{
	struct redis_broker *b = (struct redis_broker *)base;
	if (!b)
		return;
	b->closing = true;
	if (b->scan_timer)
		cw_loop_timer_cancel(b->loop, b->scan_timer);
	struct rconn *cs[] = {&b->blk, &b->cmd, &b->sub};
	for (int i = 0; i < 3; i++) {
		if (cs[i]->retry_timer)
			cw_loop_timer_cancel(b->loop, cs[i]->retry_timer);
		if (cs[i]->ac) {
			redisAsyncContext *ac = cs[i]->ac;
			cs[i]->ac = NULL;
			redisAsyncFree(ac);
		}
	}
	while (b->head) {
		struct rcmd *q = b->head;
		b->head = q->next;
		if (q->done == on_recorded) /* never handed to the consumer: ours to free */
			cw_delivery_free(q->arg);
		rcmd_free(q);
	}
	for (int i = 0; i < b->nqueues; i++)
		free(b->queues[i]);
	free(b->queues);
	for (int i = 0; b->broadcast && i < b->nbroadcast; i++)
		free(b->broadcast[i]);
	free(b->broadcast);
	free(b);
}

const struct cw_broker_ops cw_redis_broker_ops = {
	.scheme = "redis",
	.open = rb_open,
	.set_credit = rb_set_credit,
	.ack = rb_ack,
	.reject = rb_reject,
	.restore = rb_restore,
	.touch = rb_touch,
	.publish = rb_publish,
	.publish_fanout = rb_publish_fanout,
	.publish_direct = rb_publish_direct,
	.add_queue = rb_add_queue,
	.cancel_queue = rb_cancel_queue,
	.queues = rb_queues,
	.busy = rb_busy,
	.connected = rb_connected,
	.queue_depth = rb_queue_depth,
	.close = rb_close,
};

void cw_delivery_free(struct cw_delivery *d)
{
	if (!d)
		return;
	cw_envelope_clear(&d->env);
	free(d->raw);
	free(d->queue);
	free(d->tag);
	free(d);
}
