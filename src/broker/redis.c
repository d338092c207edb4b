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

/* Refresh a held message's timestamp, only if it is still recorded. */
static const char lua_touch[] =
	"if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then "
	"redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2]) end return 1";
struct cw_script rb_ack_script = CW_SCRIPT(
	"redis.call('ZREM', KEYS[1], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) "
	"redis.call('HDEL', KEYS[3], ARGV[1]) return 1");
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

/* ---- vtable --------------------------------------------------------------- */

static void rb_close(struct cw_broker *base);
/* rediss:// (or sentinel:// with broker_use_ssl): the TLS link; else hiredis's. */
static int choose_link(struct redis_broker *b, const struct cw_redis_url *ru,
		       const struct cw_broker_opts *o, struct cw_error *err)
{
	struct cw_tls_opts t;

	b->link = &rb_hiredis_link;
	if (!ru->tls && !(ru->nsentinels && o->ssl))
		return CW_OK;
	if (cw_redis_url_tls(ru, o->ssl_ca, o->ssl_cert, o->ssl_key, o->ssl_verify ? NULL : "none",
			     &t, err) != CW_OK)
		return CW_EINVAL;
	if (!(b->tls = cw_tls_ctx_new(&t, err)))
		return CW_EINVAL;
	b->link = &rb_tls_link;
	return CW_OK;
}

static struct cw_broker *rb_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				 const struct cw_broker_handler *h, struct cw_error *err)
{
	struct redis_broker *b = calloc(1, sizeof(*b));
	struct cw_redis_url *ru = calloc(1, sizeof(*ru));
	if (!b || !ru) {
		free(b);
		free(ru);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	int rc = cw_redis_url_parse(o->url, ru, err);
	if (rc == CW_ENOTFOUND)
		cw_error_set(err, CW_EINVAL, "not a Redis URL");
	if (rc != CW_OK || choose_link(b, ru, o, err) != CW_OK ||
	    (ru->nsentinels && rb_sentinel_init(b, ru, o->master_name, err) != CW_OK)) {
		if (b->tls)
			SSL_CTX_free(b->tls);
		free(ru);
		free(b);
		return NULL;
	}
	b->url = ru->url;
	free(ru);
	cw_url_redact(o->url, b->redacted, sizeof(b->redacted));
	b->loop = loop;
	b->h = *h;
	b->limits = o->limits;
	b->visibility_timeout = o->visibility_timeout;
	if (o->nodename)
		snprintf(b->nodename, sizeof(b->nodename), "%s", o->nodename);
	b->queues = calloc((size_t)o->nqueues, sizeof(char *));
	if (!b->queues) {
		rb_sentinel_free(b);
		if (b->tls)
			SSL_CTX_free(b->tls);
		free(b);
		return NULL;
	}
	for (int i = 0; i < o->nqueues; i++)
		b->queues[i] = strdup(o->queues[i]);
	b->nqueues = o->nqueues;
	b->blk = (struct rconn){.b = b, .name = "consumer", .ops = b->link};
	b->cmd = (struct rconn){.b = b, .name = "commands", .ops = b->link};
	b->sub = (struct rconn){.b = b, .name = "broadcast", .ops = b->link};
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
	rb_conn_start(b, &b->sub); /* broadcasts, and the notices that wake an idle consumer */
	if (rb_scan_schedule(b) != CW_OK) {
		rb_close(&b->base);
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	return &b->base;
}

/* --broker: a Redis URL's own checks (sentinel lists, ssl_cert_reqs). */
static int rb_check_url(const char *url, struct cw_error *err)
{
	struct cw_redis_url *ru = calloc(1, sizeof(*ru));
	struct cw_tls_opts t;
	int rc = CW_ENOMEM;

	if (!ru) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return rc;
	}
	rc = cw_redis_url_parse(url, ru, err);
	if (rc == CW_OK && ru->tls)
		rc = cw_redis_url_tls(ru, NULL, NULL, NULL, NULL, &t, err);
	free(ru);
	return rc == CW_OK ? CW_OK : CW_EINVAL;
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
	const char *argv[] = {"3", "unacked_index", "unacked", DELIVERIES_KEY, d->tag};
	rb_cmd_script(b, NULL, NULL, &rb_ack_script, 5, argv, NULL);
}

/* kombu's _q_for_pri: the list for a priority, by its step (0 = the queue itself). */
static void queue_key(char *out, size_t n, const char *queue, int priority)
{
	int step = 0;
	for (int i = 0; i < NPRI; i++)
		if (priority >= rb_priority_steps[i])
			step = rb_priority_steps[i];
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
	rb_keys_changed(b);
	b->nqueues++;
	bind_queue(b, queue);
	rb_track_renew(b);
	rb_fetch(b);
	return CW_OK;
}

static int rb_cancel_queue(struct cw_broker *base, const char *queue)
{
	struct redis_broker *b = (struct redis_broker *)base;
	for (int i = 0; i < b->nqueues; i++)
		if (!strcmp(b->queues[i], queue)) {
			rb_keys_changed(b);
			free(b->queues[i]);
			memmove(b->queues + i, b->queues + i + 1,
				(size_t)(b->nqueues - i - 1) * sizeof(char *));
			b->nqueues--;
			rb_track_renew(b);
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
	/* a scanned envelope has no tree: parse it now, on this rare path */
	json_t *root = d->env.root ? json_incref(d->env.root)
				   : cw_json_loads(d->raw, d->raw_len, &b->limits, NULL);
	char *payload = root ? rb_mark_redelivered(root) : NULL;
	json_decref(root);
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
	return b->head != NULL || b->fetch_inflight;
}

/* Queue depth for metrics: LLEN of the queue's list at every priority step. */
static const char lua_depth[] =
	"local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('LLEN', k) end return n";

struct depth_req {
	struct redis_broker *b;
	void (*cb)(void *arg, const char *queue, long depth);
	void *arg;
	char queue[];
};

static void on_depth(redisAsyncContext *ac, void *r, void *priv)
{
	struct depth_req *q = priv;
	redisReply *reply = r;
	(void)ac;
	if (reply && reply->type == REDIS_REPLY_INTEGER && !q->b->closing)
		q->cb(q->arg, q->queue, (long)reply->integer);
	free(q);
}

static void rb_queue_depth(struct cw_broker *base, const char *queue,
			   void (*cb)(void *arg, const char *queue, long depth), void *arg)
{
	struct redis_broker *b = (struct redis_broker *)base;
	if (!b->cmd.up || !b->cmd.link)
		return;
	size_t n = strlen(queue) + 8;
	struct depth_req *q = malloc(sizeof(*q) + n);
	char keys[NPRI][300], nkeys[8];
	const char *argv[3 + NPRI];
	if (!q || n > sizeof(keys[0])) {
		free(q);
		return;
	}
	q->b = b;
	q->cb = cb;
	q->arg = arg;
	memcpy(q->queue, queue, n - 7);
	argv[0] = "EVAL";
	argv[1] = lua_depth;
	snprintf(nkeys, sizeof(nkeys), "%d", NPRI);
	argv[2] = nkeys;
	for (int p = 0; p < NPRI; p++) {
		if (rb_priority_steps[p])
			snprintf(keys[p], sizeof(keys[p]), "%s" SEP "%d", queue, rb_priority_steps[p]);
		else
			snprintf(keys[p], sizeof(keys[p]), "%s", queue);
		argv[3 + p] = keys[p];
	}
	if (b->cmd.ops->command(&b->cmd, on_depth, q, 3 + NPRI, argv, NULL) != CW_OK)
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
	if (b->poll_timer)
		cw_loop_timer_cancel(b->loop, b->poll_timer);
	struct rconn *cs[] = {&b->blk, &b->cmd, &b->sub};
	for (int i = 0; i < 3; i++) {
		if (cs[i]->retry_timer)
			cw_loop_timer_cancel(b->loop, cs[i]->retry_timer);
		cs[i]->ops->free(cs[i]);
	}
	rb_sentinel_free(b);
	while (b->head) {
		struct rcmd *q = b->head;
		b->head = q->next;
		if (q->done == rb_recorded) /* never handed to the consumer: ours to free */
			cw_delivery_free(q->arg);
		rb_rcmd_free(q);
	}
	rb_keys_changed(b);
	for (int i = 0; i < b->nqueues; i++)
		free(b->queues[i]);
	free(b->queues);
	for (int i = 0; b->broadcast && i < b->nbroadcast; i++)
		free(b->broadcast[i]);
	free(b->broadcast);
	if (b->tls)
		SSL_CTX_free(b->tls);
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
			 "port", u->port ? u->port : 6379, "insist", 0, "ssl", b->tls != NULL,
			 "transport", b->sentinel ? "sentinel" : "redis", "connect_timeout", 4.0,
			 "transport_options", topts,
			 "login_method", "uri_prefix", "heartbeat", 120.0, "failover_strategy",
			 "round-robin", "alternates");
}

/* only redis:// is named in refusals; rediss:// and sentinel:// are its variants */
static const char *const rb_schemes[] = {"redis", "rediss", "sentinel", NULL};

const struct cw_broker_ops cw_redis_broker_ops = {
	.scheme = "redis",
	.url_schemes = rb_schemes,
	.listed = 1,
	.check_url = rb_check_url,
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
