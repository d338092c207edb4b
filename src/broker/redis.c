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
 * Connections (redis_conn.c): one blocked in BRPOP, one subscribed to the
 * broadcast channels, one for everything else.  Commands on the last are
 * queued in order and re-sent after a reconnect until Redis answers, so an
 * ack or a restore survives a Redis restart.  All of them are idempotent
 * (Lua scripts that test before they move).  The visibility-timeout scan
 * is redis_scan.c; fetching and the ops are here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"
#include "util/uuid.h"

#define BRPOP_TIMEOUT "1"

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
	rb_cmd(b, on_recorded, d, 9, argv, lens);
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
	rb_fetch(b);
}

void rb_fetch(struct redis_broker *b)
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

/* ---- vtable --------------------------------------------------------------- */

static void rb_close(struct cw_broker *base);

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
	rb_conn_start(b, &b->blk);
	rb_conn_start(b, &b->cmd);
	if (b->nbroadcast)
		rb_conn_start(b, &b->sub);
	if (rb_scan_schedule(b) != CW_OK) {
		rb_close(&b->base);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	return &b->base;
}

static void rb_set_credit(struct cw_broker *base, int n)
{
	struct redis_broker *b = (struct redis_broker *)base;
	/* messages still being recorded are already the consumer's */
	b->credit = n - b->recording;
	rb_fetch(b);
}

static void rb_ack(struct cw_broker *base, struct cw_delivery *d)
{
	struct redis_broker *b = (struct redis_broker *)base;
	const char *argv[] = {"EVAL", lua_ack, "3", "unacked_index", "unacked", DELIVERIES_KEY, d->tag};
	rb_cmd(b, NULL, NULL, 7, argv, NULL);
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
	rb_cmd(b, NULL, NULL, 6, argv, lens);
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
	rb_cmd(b, NULL, NULL, 3, argv, lens);
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
	rb_cmd(b, NULL, NULL, 7, argv, lens);
}

static void bind_queue(struct redis_broker *b, const char *queue)
{
	char key[600], member[800];
	snprintf(key, sizeof(key), "_kombu.binding.%s", queue);
	snprintf(member, sizeof(member), "%s" SEP SEP "%s", queue, queue);
	const char *argv[] = {"SADD", key, member};
	rb_cmd(b, NULL, NULL, 3, argv, NULL);
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
	rb_fetch(b);
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
	rb_cmd(b, NULL, NULL, 7, argv, NULL);
}

static void requeue(struct redis_broker *b, struct cw_delivery *d, const char *side)
{
	char *payload = rb_mark_redelivered(d->env.root);
	const char *argv[] = {"EVAL", lua_requeue, "3", "unacked", "unacked_index", d->queue,
			      d->tag, payload ? payload : d->raw, side};
	rb_cmd(b, NULL, NULL, 9, argv, NULL);
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
		rb_rcmd_free(q);
	}
	for (int i = 0; i < b->nqueues; i++)
		free(b->queues[i]);
	free(b->queues);
	for (int i = 0; b->broadcast && i < b->nbroadcast; i++)
		free(b->broadcast[i]);
	free(b->broadcast);
	free(b);
}

/* kombu's Connection.info() for this transport, as a Python worker's stats show it. */
static json_t *rb_info(struct cw_broker *base)
{
	struct redis_broker *b = (struct redis_broker *)base;
	const struct cw_url *u = &b->url;
	char vhost[16];

	snprintf(vhost, sizeof(vhost), "%d", u->db);
	json_t *topts = json_pack("{s:f}", "visibility_timeout", b->visibility_timeout);
	return json_pack("{s:s,s:o,s:s,s:i,s:b,s:b,s:s,s:f,s:o,s:n,s:n,s:f,s:s,s:[]}", "hostname",
			 u->host[0] ? u->host : "127.0.0.1", "userid",
			 u->user[0] ? json_string(u->user) : json_null(), "virtual_host", vhost,
			 "port", u->port ? u->port : 6379, "insist", 0, "ssl", 0, "transport",
			 "redis", "connect_timeout", 4.0, "transport_options", topts,
			 "login_method", "uri_prefix", "heartbeat", 120.0, "failover_strategy",
			 "round-robin", "alternates");
}

static const char *const rb_schemes[] = {"redis", NULL};

const struct cw_broker_ops cw_redis_broker_ops = {
	.scheme = "redis",
	.url_schemes = rb_schemes,
	.listed = 1,
	.info = rb_info,
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
