/*
 * Celery's Redis result backend (celery/backends/redis.py): the meta dict
 * as JSON under "celery-task-meta-<id>", written with SETEX (SET when
 * results never expire) then PUBLISHed on the same name for clients that
 * wait on pub/sub.  Like _store_result, a SUCCESS already stored is never
 * overwritten (a lost worker's late FAILURE must not replace it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

struct redis_backend {
	struct cw_backend base;
	struct cw_url url;
	char redacted[512];
	double expires;
	double retry_for;
	redisContext *c;
};

/* Store unless a SUCCESS is there: KEYS key; ARGV value, expires (0 = none). */
static const char lua_store[] =
	"local cur = redis.call('GET', KEYS[1]) "
	"if cur and string.find(cur, '\"status\": *\"SUCCESS\"') then return 0 end "
	"if tonumber(ARGV[2]) > 0 then redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1]) "
	"else redis.call('SET', KEYS[1], ARGV[1]) end "
	"redis.call('PUBLISH', KEYS[1], ARGV[1]) return 1";

/*
 * on_chord_part_return with result_chord_ordered (the default): ZADD the
 * part to <g>.j scored by group_index, count, read <g>.t (size adjustment)
 * and <g>.s (chord size, set by the producer); refresh expiry.  The last
 * part also gets the sorted parts and deletes the keys, in the same atomic
 * step, so exactly one worker fires the chord body.
 * KEYS: j t s groupmeta; ARGV: entry score expires
 * Returns {count, total(-1 = size unknown)[, nested, parts]}.
 */
static const char lua_chord[] =
	"redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) "
	"local n = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') "
	"local td = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 "
	"local size = redis.call('GET', KEYS[3]) "
	"local ex = tonumber(ARGV[3]) "
	"if ex > 0 then redis.call('EXPIRE', KEYS[1], ex) redis.call('EXPIRE', KEYS[2], ex) "
	"redis.call('EXPIRE', KEYS[3], ex) end "
	"if not size then return {n, -1} end "
	"local total = (tonumber(size) or 0) + td "
	"if n ~= total then return {n, total} end "
	"local nested = redis.call('EXISTS', KEYS[4]) "
	"local parts = redis.call('ZRANGE', KEYS[1], 0, -1) "
	"redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) "
	"return {n, total, nested, parts}";

static void drop(struct redis_backend *b)
{
	if (b->c)
		redisFree(b->c);
	b->c = NULL;
}

static int ensure(struct redis_backend *b, struct cw_error *err)
{
	struct timeval tv = {2, 0};
	redisReply *r;

	if (b->c)
		return CW_OK;
	b->c = redisConnectWithTimeout(b->url.host[0] ? b->url.host : "127.0.0.1",
				       b->url.port ? b->url.port : 6379, tv);
	if (!b->c || b->c->err) {
		cw_error_set(err, CW_EIO, "cannot connect to result backend %s: %s", b->redacted,
			     b->c ? b->c->errstr : "out of memory");
		drop(b);
		return CW_EIO;
	}
	redisSetTimeout(b->c, (struct timeval){5, 0});
	if (b->url.password[0]) {
		r = b->url.user[0] ? redisCommand(b->c, "AUTH %s %s", b->url.user, b->url.password)
				   : redisCommand(b->c, "AUTH %s", b->url.password);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			cw_error_set(err, CW_EIO, "result backend %s: authentication failed", b->redacted);
			if (r)
				freeReplyObject(r);
			drop(b);
			return CW_EIO;
		}
		freeReplyObject(r);
	}
	r = redisCommand(b->c, "SELECT %d", b->url.db);
	if (!r || r->type == REDIS_REPLY_ERROR) {
		cw_error_set(err, CW_EIO, "result backend %s: SELECT failed", b->redacted);
		if (r)
			freeReplyObject(r);
		drop(b);
		return CW_EIO;
	}
	freeReplyObject(r);
	return CW_OK;
}

static struct cw_backend *rb_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	struct redis_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	if (cw_url_parse(o->url, &b->url, err) != CW_OK) {
		free(b);
		return NULL;
	}
	cw_url_redact(o->url, b->redacted, sizeof(b->redacted));
	b->expires = o->expires;
	b->retry_for = o->retry_for > 0 ? o->retry_for : 60;
	return &b->base;
}

static int rb_store(struct cw_backend *base, const struct cw_result_meta *m, struct cw_error *err)
{
	struct redis_backend *b = (struct redis_backend *)base;
	size_t len;
	char *val = cw_proto_encode_result_meta(m, &len);
	char key[300], exp[32];
	double deadline = cw_now() + b->retry_for, delay = 0.05;
	int rc = CW_EIO;

	if (!val) {
		cw_error_set(err, CW_ENOMEM, "out of memory encoding result");
		return CW_ENOMEM;
	}
	snprintf(key, sizeof(key), "celery-task-meta-%s", m->task_id);
	snprintf(exp, sizeof(exp), "%lld", (long long)ceil(b->expires));
	for (int attempt = 0;; attempt++) {
		if (ensure(b, err) == CW_OK) {
			const char *argv[] = {"EVAL", lua_store, "1", key, val, exp};
			size_t lens[] = {4, strlen(lua_store), 1, strlen(key), len, strlen(exp)};
			redisReply *r = redisCommandArgv(b->c, 6, argv, lens);
			if (r && r->type != REDIS_REPLY_ERROR) {
				freeReplyObject(r);
				rc = CW_OK;
				break;
			}
			if (r) {
				cw_error_set(err, CW_EIO, "result backend refused the result: %s", r->str);
				freeReplyObject(r);
				break; /* a server error will not heal by retrying */
			}
			cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted, b->c->errstr);
			drop(b);
		}
		if (!cw_backend_backoff(attempt, &delay, deadline, b->retry_for, err->msg))
			break;
	}
	free(val);
	return rc;
}

static int rb_chord_part(struct cw_backend *base, const char *gid, int64_t group_index,
			 const char *entry, size_t len, json_t **entries, bool *nested,
			 struct cw_error *err)
{
	struct redis_backend *b = (struct redis_backend *)base;
	char j[300], t[300], s[300], g[300], score[32], exp[32];
	int rc = CW_EIO;

	snprintf(j, sizeof(j), "celery-taskset-meta-%s.j", gid);
	snprintf(t, sizeof(t), "celery-taskset-meta-%s.t", gid);
	snprintf(s, sizeof(s), "celery-taskset-meta-%s.s", gid);
	snprintf(g, sizeof(g), "celery-taskset-meta-%s", gid);
	if (group_index >= 0)
		snprintf(score, sizeof(score), "%lld", (long long)group_index);
	else
		snprintf(score, sizeof(score), "+inf");
	snprintf(exp, sizeof(exp), "%lld", (long long)ceil(b->expires));
	/* ZADD of the same part is idempotent, so one retry after a reconnect is safe */
	for (int attempt = 0; attempt < 2; attempt++) {
		if (ensure(b, err) != CW_OK)
			continue;
		const char *argv[] = {"EVAL", lua_chord, "4", j, t, s, g, entry, score, exp};
		size_t lens[] = {4, strlen(lua_chord), 1, strlen(j), strlen(t), strlen(s), strlen(g),
				 len, strlen(score), strlen(exp)};
		redisReply *r = redisCommandArgv(b->c, 10, argv, lens);
		if (!r) {
			cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted, b->c->errstr);
			drop(b);
			continue;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
		    r->element[3]->type == REDIS_REPLY_ARRAY) {
			json_t *arr = json_array();
			*nested = r->element[2]->type == REDIS_REPLY_INTEGER && r->element[2]->integer;
			for (size_t i = 0; arr && i < r->element[3]->elements; i++) {
				redisReply *e = r->element[3]->element[i];
				if (e->type == REDIS_REPLY_STRING)
					json_array_append_new(arr, json_stringn_nocheck(e->str, e->len));
			}
			*entries = arr;
			rc = arr ? CW_OK : CW_ENOMEM;
			if (!arr)
				cw_error_set(err, CW_ENOMEM, "out of memory reading chord parts");
		} else if (r->type == REDIS_REPLY_ARRAY) {
			rc = CW_OK;
		} else {
			cw_error_set(err, CW_EIO, "result backend refused the chord part: %s",
				     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		}
		freeReplyObject(r);
		break;
	}
	return rc;
}

static void rb_reset(struct cw_backend *base)
{
	struct redis_backend *b = (struct redis_backend *)base;
	/* after fork: forget the parent's socket without sending QUIT on it */
	if (b->c) {
		b->c->fd = -1;
		redisFree(b->c);
		b->c = NULL;
	}
}

static void rb_close(struct cw_backend *base)
{
	struct redis_backend *b = (struct redis_backend *)base;
	drop(b);
	free(b);
}

static int rb_check_url(const char *url, const char *broker_url, struct cw_error *err)
{
	struct cw_url u;
	struct cw_error perr = {0};
	(void)broker_url;
	(void)err;
	if (cw_url_parse(url, &u, &perr) != CW_OK || strcmp(u.scheme, "redis"))
		return CW_ENOTFOUND;
	return CW_OK;
}

/* A PING in clear text; over TLS (rediss://) an accepted connection is all we can see. */
static int rb_probe_target(const char *url, struct cw_probe_target *t)
{
	int rc = cw_probe_target_from_url(url, "6379", t);
	if (rc == CW_OK && !strncmp(url, "redis://", 8)) {
		t->hello = "PING\r\n";
		t->answers = "+-"; /* +PONG, or an error such as -NOAUTH: the server answers */
	}
	return rc;
}

const struct cw_backend_ops cw_redis_backend_ops = {
	.scheme = "redis",
	.listed = true,
	.check_url = rb_check_url,
	.probe_target = rb_probe_target,
	.open = rb_open,
	.store = rb_store,
	.chord_part = rb_chord_part,
	.reset = rb_reset,
	.close = rb_close,
};
