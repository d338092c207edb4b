/*
 * Redis transport, fetching.  kombu BRPOPs and then records the message in
 * `unacked`; between the two the message exists only in the reply, so a
 * reply lost with the connection (a Redis shutdown, a dropped link, the
 * worker killed) loses the message.  Here one Lua script takes up to
 * `credit` messages and records each as unacked in the same step: a lost
 * reply leaves them in `unacked`, where the visibility-timeout scan gives
 * them back.
 *
 * A script cannot block, so an idle worker waits for a push another way:
 * CLIENT TRACKING in broadcast mode, with the queue names as prefixes and
 * the invalidations redirected to the broadcast connection.  Takes and
 * tracking go on the command connection, next to the acks (one write and
 * one read a loop turn, not two); the consumer connection is for BRPOP.  Tracking is switched on only when a take comes
 * back empty (ON, then one more take, so a push in between is not missed)
 * and off when messages flow again, so a busy worker gets no notices.  A
 * one-second poll covers a lost notice.  A server without CLIENT TRACKING
 * (Redis < 6, or an ACL that forbids it) gets kombu's BRPOP instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/script.h"
#include "util/uuid.h"

#define BRPOP_TIMEOUT "1"
#define IDLE_POLL 1.0

const int rb_priority_steps[NPRI] = {0, 3, 6, 9};

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

/*
 * Take and record, atomically.  KEYS unacked_index, unacked,
 * cworker.deliveries, then the lists, priority step by step and within a
 * step in the worker's queue cycle order; ARGV time, how many to take,
 * number of queues.  Each take pops from the first non-empty list, as
 * BRPOP over the same keys would, and moves its queue to the end of the
 * cycle.  A message with a delivery tag is recorded as kombu's QoS.append
 * does ([envelope, exchange, routing key]) and its delivery count bumped.
 * Returns key, message, tag ('' = not recorded: no tag readable here),
 * count, for each message taken.
 */
static const char lua_take[] =
	"local nq = tonumber(ARGV[3]) local want = tonumber(ARGV[2]) "
	"local steps = (#KEYS - 3) / nq local ord = {} local out = {} "
	"for i = 1, nq do ord[i] = i end "
	"while want > 0 do "
	"  local m, key "
	"  for p = 0, steps - 1 do "
	"    for j = 1, nq do "
	"      key = KEYS[3 + p * nq + ord[j]] m = redis.call('RPOP', key) "
	"      if m then table.insert(ord, table.remove(ord, j)) break end "
	"    end "
	"    if m then break end "
	"  end "
	"  if not m then break end "
	"  local tag, ex, rk, n = '', '', '', 0 "
	"  local ok, e = pcall(cjson.decode, m) "
	"  if ok and type(e) == 'table' and type(e.properties) == 'table' then "
	"    local pr = e.properties "
	"    if type(pr.delivery_tag) == 'string' then tag = pr.delivery_tag end "
	"    local di = pr.delivery_info "
	"    if type(di) == 'table' then "
	"      if type(di.exchange) == 'string' then ex = di.exchange end "
	"      if type(di.routing_key) == 'string' then rk = di.routing_key end "
	"    end "
	"  end "
	"  if tag ~= '' then "
	"    redis.call('ZADD', KEYS[1], ARGV[1], tag) "
	"    redis.call('HSET', KEYS[2], tag, "
	"      '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']') "
	"    n = redis.call('HINCRBY', KEYS[3], tag, 1) "
	"  end "
	"  out[#out + 1] = key out[#out + 1] = m out[#out + 1] = tag out[#out + 1] = n "
	"  want = want - 1 "
	"end "
	"return out";

static struct cw_script take_script = CW_SCRIPT(lua_take);

static void rotate(struct redis_broker *b, const char *queue)
{
	for (int i = 0; i < b->nqueues; i++) {
		if (strcmp(b->queues[i], queue) != 0)
			continue;
		if (i == b->nqueues - 1)
			return; /* already last (always, with one queue): the keys stand */
		rb_keys_changed(b);
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

/* The list names to wait on: every queue at every priority step, in kombu's order. */
static char **list_keys(struct redis_broker *b)
{
	char **keys = calloc((size_t)b->nqueues * NPRI, sizeof(char *));
	int k = 0;
	for (int p = 0; keys && p < NPRI; p++)
		for (int i = 0; i < b->nqueues; i++, k++) {
			size_t n = strlen(b->queues[i]) + 8;
			if (!(keys[k] = malloc(n))) {
				for (int j = 0; j < k; j++)
					free(keys[j]);
				free(keys);
				return NULL;
			}
			if (rb_priority_steps[p])
				snprintf(keys[k], n, "%s" SEP "%d", b->queues[i], rb_priority_steps[p]);
			else
				snprintf(keys[k], n, "%s", b->queues[i]);
		}
	return keys;
}

void rb_keys_changed(struct redis_broker *b)
{
	for (int i = 0; b->fetch_keys && i < b->nfetch_keys; i++)
		free(b->fetch_keys[i]);
	free(b->fetch_keys);
	b->fetch_keys = NULL;
	b->nfetch_keys = 0;
}

/*
 * A delivery for a message taken from list `key`, or NULL (logged) when it
 * is not a kombu envelope.  Rotates the queue cycle past its queue.
 */
static struct cw_delivery *make_delivery(struct redis_broker *b, const char *key, const char *item,
					 size_t len)
{
	struct cw_delivery *d = calloc(1, sizeof(*d));
	struct cw_error err = {0};
	const char *sep = NULL;

	if (!d)
		return NULL;
	/* strip the priority suffix: dest.rsplit(sep, 1)[0] */
	for (const char *p = strstr(key, SEP); p; p = strstr(p + 1, SEP))
		sep = p;
	d->queue = sep ? strndup(key, (size_t)(sep - key)) : strdup(key);
	d->raw = malloc(len + 1);
	if (!d->queue || !d->raw)
		goto drop;
	rotate(b, d->queue);
	memcpy(d->raw, item, len);
	d->raw[len] = '\0';
	d->raw_len = len;
	if (cw_proto_decode_task_envelope(item, len, &b->limits, &d->env, &err) != CW_OK) {
		cw_log(CW_LOG_ERROR, "consumer",
		       "Received and deleted unknown message from queue %s (%zu bytes): %s",
		       d->queue, len, err.msg);
		goto drop;
	}
	return d;
drop:
	cw_delivery_free(d);
	return NULL;
}

void rb_recorded(struct redis_broker *b, redisReply *r, void *arg)
{
	struct cw_delivery *d = arg;
	d->deliveries = r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 1;
	b->recording--;
	b->h.on_delivery(b->h.arg, d);
}

/*
 * Record d as unacked before the consumer sees it (a message BRPOP took, or
 * one the script could not read a tag from).  b->recording counts it until
 * Redis confirms.
 */
static void record(struct redis_broker *b, struct cw_delivery *d)
{
	char tagbuf[37];

	if (d->env.delivery_tag) {
		d->tag = strdup(d->env.delivery_tag);
	} else {
		cw_uuid4(tagbuf);
		d->tag = strdup(tagbuf);
	}
	/* unacked value: [envelope, exchange, routing_key] */
	char *ex = json_str(d->env.exchange), *rk = json_str(d->env.routing_key);
	size_t vlen = d->raw_len + (ex ? strlen(ex) : 0) + (rk ? strlen(rk) : 0) + 8;
	char *val = malloc(vlen);
	if (!d->tag || !ex || !rk || !val) {
		cw_log(CW_LOG_ERROR, "broker", "out of memory recording a delivery; message dropped");
		free(ex);
		free(rk);
		free(val);
		cw_delivery_free(d);
		b->recording--;
		return;
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
	rb_cmd(b, rb_recorded, d, 9, argv, lens);
	free(val);
}

/* ---- waking through CLIENT TRACKING ------------------------------------- */

static void on_track(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	(void)ac;

	if (!reply || b->closing || reply->type != REDIS_REPLY_ERROR)
		return;
	b->tracking = false;
	if (strstr(reply->str, "does not exist")) {
		b->sub_id = 0; /* the broadcast connection went meanwhile: its return re-arms */
		return;
	}
	rb_no_tracking(b, reply->str);
}

void rb_no_tracking(struct redis_broker *b, const char *why)
{
	if (b->no_tracking)
		return;
	b->no_tracking = true;
	cw_log(CW_LOG_WARNING, "broker",
	       "%s refused CLIENT TRACKING (%s): waiting with BRPOP as kombu does, so a message "
	       "popped while the connection drops can be lost", b->redacted, why);
	rb_fetch(b);
}

/* Queue names as tracking prefixes; Redis refuses overlapping ones, so keep the shortest. */
static bool covered(struct redis_broker *b, int i)
{
	for (int j = 0; j < b->nqueues; j++) {
		size_t n = strlen(b->queues[j]);
		if (j != i && !strncmp(b->queues[i], b->queues[j], n) &&
		    (strlen(b->queues[i]) > n || j < i))
			return true;
	}
	return false;
}

static void track(struct redis_broker *b, bool on)
{
	char id[32];
	int argc = 0;
	const char **argv = calloc((size_t)(8 + 2 * b->nqueues), sizeof(char *));

	if (!argv)
		return;
	argv[argc++] = "CLIENT";
	argv[argc++] = "TRACKING";
	argv[argc++] = on ? "ON" : "OFF";
	if (on) {
		snprintf(id, sizeof(id), "%lld", b->sub_id);
		argv[argc++] = "REDIRECT";
		argv[argc++] = id;
		argv[argc++] = "BCAST";
		/* no NOLOOP: the same connection publishes (retries, requeues), and a
		 * push of our own to a queue we wait on must wake us like any other */
		for (int i = 0; i < b->nqueues; i++)
			if (!covered(b, i)) {
				argv[argc++] = "PREFIX";
				argv[argc++] = b->queues[i];
			}
	}
	struct rconn *c = rb_take_conn(b);
	if (c->ops->command(c, on_track, b, argc, argv, NULL) == CW_OK)
		b->tracking = on;
	free(argv);
}

/*
 * A notice names the keys that changed under our prefixes (nil: everything
 * was flushed).  Result keys ("celery-task-meta-...") share the "celery"
 * prefix: only a list we consume from is worth a take.
 */
bool rb_notice_concerns_us(struct redis_broker *b, const redisReply *keys)
{
	if (keys->type != REDIS_REPLY_ARRAY)
		return true;
	for (size_t k = 0; k < keys->elements; k++) {
		const redisReply *e = keys->element[k];
		if (e->type != REDIS_REPLY_STRING)
			continue;
		for (int i = 0; i < b->nqueues; i++) {
			size_t n = strlen(b->queues[i]);
			if (e->len >= n && !memcmp(e->str, b->queues[i], n) &&
			    (e->len == n || (e->len > n + 1 && !memcmp(e->str + n, SEP, 2))))
				return true;
		}
	}
	return false;
}

void rb_track_renew(struct redis_broker *b)
{
	if (!b->tracking || !rb_take_conn(b)->up || b->closing)
		return;
	track(b, false);
	if (b->sub_id && b->nqueues)
		track(b, true);
	rb_fetch(b);
}

void rb_wake(struct redis_broker *b)
{
	if (b->fetch_inflight)
		b->wake = true;
	else
		rb_fetch(b);
}

static void poll_cb(struct cw_loop *loop, void *arg)
{
	struct redis_broker *b = arg;
	(void)loop;
	b->poll_timer = 0;
	rb_fetch(b);
}

/* ---- taking ----------------------------------------------------------------- */

static bool readonly(struct redis_broker *b, struct rconn *c, const char *err)
{
	/* the master was demoted under us: ask the sentinels for the new one */
	if (b->sentinel && (!strncmp(err, "READONLY", 8) || !strncmp(err, "UNBLOCKED", 9))) {
		c->ops->disconnect(c);
		return true;
	}
	return false;
}

static void on_take(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	(void)ac;

	b->fetch_inflight = false;
	/* a lost reply: what it took is recorded in `unacked`, the visibility scan restores it */
	if (!reply || b->closing)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (cw_script_missing(reply->str) && !b->take_eval) {
			/* the server lost the script (restart, SCRIPT FLUSH): once with its text */
			b->take_eval = true;
			rb_fetch(b);
			return;
		}
		cw_log(CW_LOG_ERROR, "broker", "taking messages failed: %s", reply->str);
		if (!readonly(b, &b->cmd, reply->str) && !b->poll_timer)
			b->poll_timer = cw_loop_timer(b->loop, IDLE_POLL, poll_cb, b);
		return;
	}
	size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements / 4 : 0;
	if (n) {
		if (b->tracking)
			track(b, false); /* messages flow: no notices needed until the lists run dry */
		/* not the consumer's yet: a set_credit from inside on_delivery must count them */
		b->recording += (int)n;
	}
	for (size_t i = 0; i < n; i++) {
		redisReply **e = reply->element + 4 * i;
		if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING ||
		    e[2]->type != REDIS_REPLY_STRING) {
			b->recording--;
			continue;
		}
		struct cw_delivery *d = make_delivery(b, e[0]->str, e[1]->str, e[1]->len);
		if (!e[2]->len) {
			/* no tag the script could read: recorded from here, as after a BRPOP */
			if (d) {
				b->credit--;
				record(b, d);
			} else {
				b->recording--;
			}
			continue;
		}
		if (!d || !(d->tag = strdup(e[2]->str))) {
			/* recorded but unusable: drop it from `unacked` (logged by make_delivery) */
			const char *argv[] = {"3", "unacked_index", "unacked", DELIVERIES_KEY,
					      e[2]->str};
			rb_cmd_script(b, NULL, NULL, &rb_ack_script, 5, argv, NULL);
			cw_delivery_free(d);
			b->recording--;
			continue;
		}
		d->deliveries = e[3]->type == REDIS_REPLY_INTEGER ? (long)e[3]->integer : 1;
		b->recording--;
		b->credit--;
		b->h.on_delivery(b->h.arg, d);
	}
	if (n == 0 && !b->wake) {
		if (!b->tracking && !b->no_tracking && b->sub_id) {
			/* the lists are dry: ask for notices, then look once more (ordered after ON) */
			track(b, true);
		} else {
			if (!b->poll_timer)
				b->poll_timer = cw_loop_timer(b->loop, IDLE_POLL, poll_cb, b);
			return;
		}
	}
	b->wake = false;
	rb_fetch(b);
}

static void on_brpop(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_broker *b = priv;
	redisReply *reply = r;
	(void)ac;

	b->fetch_inflight = false;
	if (!reply || b->closing)
		return;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		struct cw_delivery *d = make_delivery(b, reply->element[0]->str,
						      reply->element[1]->str, reply->element[1]->len);
		if (d) {
			b->recording++;
			if (b->credit > 0)
				b->credit--;
			record(b, d);
		}
	} else if (reply->type == REDIS_REPLY_ERROR) {
		cw_log(CW_LOG_ERROR, "broker", "BRPOP failed: %s", reply->str);
		if (readonly(b, &b->blk, reply->str))
			return;
	}
	rb_fetch(b);
}

static void on_script_load(redisAsyncContext *ac, void *r, void *priv)
{
	struct cw_script *s = priv;
	redisReply *reply = r;
	(void)ac;

	cw_script_loaded(s, reply && reply->type == REDIS_REPLY_ERROR,
			 reply && reply->type == REDIS_REPLY_STRING ? reply->str : NULL,
			 reply ? reply->len : 0);
}

void rb_fetch(struct redis_broker *b)
{
	if (b->closing || b->fetch_inflight || b->credit <= 0 || !b->blk.up || !b->cmd.up ||
	    b->nqueues == 0)
		return;
	if (b->poll_timer) {
		cw_loop_timer_cancel(b->loop, b->poll_timer);
		b->poll_timer = 0;
	}
	int nkeys = b->nqueues * NPRI, argc = 0;
	if (!b->fetch_keys && (b->fetch_keys = list_keys(b)))
		b->nfetch_keys = nkeys;
	char **keys = b->fetch_keys;
	const char *small[64];
	const char **argv = nkeys + 10 <= 64 ? small : calloc((size_t)nkeys + 10, sizeof(char *));
	char score[32], want[16], nq[16], nk[16];
	redisCallbackFn *done = on_take;

	if (!keys || !argv)
		goto out;
	if (b->no_tracking) {
		argv[argc++] = "BRPOP";
		for (int k = 0; k < nkeys; k++)
			argv[argc++] = keys[k];
		argv[argc++] = BRPOP_TIMEOUT;
		done = on_brpop;
	} else {
		snprintf(score, sizeof(score), "%.6f", cw_wall());
		snprintf(want, sizeof(want), "%d", b->credit);
		snprintf(nq, sizeof(nq), "%d", b->nqueues);
		snprintf(nk, sizeof(nk), "%d", nkeys + 3);
		const char *sha = cw_script_sha(&take_script);
		bool text = b->take_eval || !sha;
		argv[argc++] = text ? "EVAL" : "EVALSHA";
		argv[argc++] = text ? lua_take : sha;
		argv[argc++] = nk;
		argv[argc++] = "unacked_index";
		argv[argc++] = "unacked";
		argv[argc++] = DELIVERIES_KEY;
		for (int k = 0; k < nkeys; k++)
			argv[argc++] = keys[k];
		argv[argc++] = score;
		argv[argc++] = want;
		argv[argc++] = nq;
	}
	struct rconn *c = rb_take_conn(b);
	if (!b->no_tracking && cw_script_should_load(&take_script)) {
		/* learn the digest (one SCRIPT LOAD per process); this take goes as text */
		const char *load[] = {"SCRIPT", "LOAD", lua_take};
		if (c->ops->command(c, on_script_load, &take_script, 3, load, NULL) == CW_OK)
			take_script.loading = true;
	}
	if (c->ops->command(c, done, b, argc, argv, NULL) == CW_OK) {
		b->fetch_inflight = true;
		if (done == on_take)
			b->take_eval = false; /* Redis keeps what EVAL ran: EVALSHA again next time */
	}
out:
	if (argv != small)
		free(argv);
}
