/*
 * Redis transport, visibility timeout: anything held in `unacked` longer
 * than the visibility timeout goes back to the queues its exchange binds,
 * by whichever worker takes the `unacked_mutex` first (kombu's
 * restore_visible), in three idempotent Lua steps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/err.h"
#include "util/log.h"
#include "util/uuid.h"

#define RESTORE_BATCH "10"
#define MUTEX_EXPIRE "300"

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
/* Step 3: release the mutex if it is still ours.  KEYS mutex; ARGV token. */
static const char lua_unlock[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/* ---- visibility-timeout restore ------------------------------------------ */

static void on_unlock(struct redis_broker *b, redisReply *r, void *arg)
{
	(void)r;
	(void)arg;
	b->scanning = false;
}

/* Mark a restored envelope as redelivered, as kombu's _do_restore_message does. */
char *rb_mark_redelivered(json_t *env)
{
	json_t *headers = json_object_get(env, "headers");
	json_t *props = json_object_get(env, "properties");
	json_t *di = props ? json_object_get(props, "delivery_info") : NULL;
	if (json_is_object(headers) && json_is_object(di)) {
		json_object_set_new(headers, "redelivered", json_true());
		json_object_set_new(di, "redelivered", json_true());
	}
	return cw_json_dumps(env, NULL);
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
		json_t *entry = cw_json_loads(val->str, val->len, &b->limits, NULL);
		json_t *env = json_array_get(entry, 0);
		const char *ex = json_string_value(json_array_get(entry, 1));
		const char *rk = json_string_value(json_array_get(entry, 2));
		if (!json_is_object(env) || !ex || !rk) {
			cw_log(CW_LOG_ERROR, "broker", "cannot restore unacked message %s: malformed entry",
			       tag->str);
			json_decref(entry);
			continue;
		}
		char *payload = rb_mark_redelivered(env);
		char bkey[600];
		snprintf(bkey, sizeof(bkey), "_kombu.binding.%s", ex);
		if (payload) {
			const char *argv[] = {"EVAL", lua_restore, "3", "unacked", "unacked_index", bkey,
					      tag->str, val->str, payload, ex, rk};
			size_t lens[] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1,
					 (size_t)-1, tag->len, val->len, strlen(payload), (size_t)-1,
					 (size_t)-1};
			rb_cmd(b, NULL, NULL, 11, argv, lens);
			cw_log(CW_LOG_WARNING, "broker",
			       "Restoring unacknowledged message %s to queue %s (visibility timeout %.0fs passed)",
			       tag->str, rk, b->visibility_timeout);
		}
		free(payload);
		json_decref(entry);
	}
	const char *argv[] = {"EVAL", lua_unlock, "1", "unacked_mutex", b->scan_token};
	rb_cmd(b, on_unlock, NULL, 5, argv, NULL);
}

/* Periodic from open to close; it doubles as the guard of lost reconnect timers. */
static void scan_cb(struct cw_loop *loop, void *arg)
{
	struct redis_broker *b = arg;
	(void)loop;
	rb_conn_recheck(b);
	if (!b->scanning && b->cmd.up && !b->closing) {
		char ceil[32];
		snprintf(ceil, sizeof(ceil), "%.6f", cw_wall() - b->visibility_timeout);
		cw_uuid4(b->scan_token);
		b->scanning = true;
		const char *argv[] = {"EVAL", lua_scan, "3", "unacked_mutex", "unacked_index",
				      "unacked", b->scan_token, MUTEX_EXPIRE, ceil, RESTORE_BATCH};
		rb_cmd(b, on_scan, NULL, 10, argv, NULL);
	}
}

int rb_scan_schedule(struct redis_broker *b)
{
	/* kombu scans about every 10 s; scan sooner when the timeout is short */
	double every = fmin(10.0, fmax(0.2, b->visibility_timeout / 2));
	if (b->closing || b->scan_timer)
		return CW_OK;
	/* periodic: re-armed in place, so scans cannot stop for want of memory once started */
	b->scan_timer = cw_loop_every(b->loop, every, scan_cb, b);
	if (!b->scan_timer) {
		cw_log(CW_LOG_ERROR, "broker", "cannot arm the visibility scan timer (out of memory)");
		return CW_ENOMEM;
	}
	return CW_OK;
}
