/*
 * Celery's Redis result backend (celery/backends/redis.py): the meta dict
 * as JSON under "celery-task-meta-<id>", written with SETEX (SET when
 * results never expire) then PUBLISHed on the same name for clients that
 * wait on pub/sub.  Like _store_result, a SUCCESS already stored is never
 * overwritten (a lost worker's late FAILURE must not replace it).
 *
 * Connections are blocking (children store synchronously): hiredis's own
 * for redis://; for rediss:// a socket and OpenSSL session carrying
 * hiredis's writer and reader (hiredis 0.14 has no TLS); for sentinel://
 * the sentinels are asked for the master before each new connection, as
 * Celery's SentinelBackend does, so a store after a failover reaches the
 * new master.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/redisurl.h"
#include "util/script.h"
#include "util/tls.h"
#include "util/url.h"

struct redis_backend {
	struct cw_backend base;
	struct cw_redis_url ru;
	struct cw_url url;          /* ru.url: credentials and database */
	char redacted[512];
	double expires;
	double retry_for;
	char master_name[256];      /* sentinel:// */
	redisContext *c;            /* redis://, sentinel:// */
	SSL_CTX *tls;               /* rediss:// */
	SSL *ssl;
	int fd;
	redisReader *rd;
	char lasterr[256];          /* why the last command got no reply */
};

/* Store unless a SUCCESS is there: KEYS key; ARGV value, expires (0 = none). */
static const char lua_store[] =
	"local cur = redis.call('GET', KEYS[1]) "
	"if cur and string.find(cur, '\"status\": *\"SUCCESS\"') then return 0 end "
	"if tonumber(ARGV[2]) > 0 then redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1]) "
	"else redis.call('SET', KEYS[1], ARGV[1]) end "
	"redis.call('PUBLISH', KEYS[1], ARGV[1]) return 1";
static struct cw_script store_script = CW_SCRIPT(lua_store);

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
	if (b->ssl) {
		SSL_shutdown(b->ssl);
		SSL_free(b->ssl);
	}
	b->ssl = NULL;
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
	if (b->rd)
		redisReaderFree(b->rd);
	b->rd = NULL;
}

static bool connected(const struct redis_backend *b)
{
	return b->c || b->ssl;
}

/* One command over the TLS session: hiredis's writer out, its reader in. */
static redisReply *tls_command(struct redis_backend *b, int argc, const char **argv,
			       const size_t *lens)
{
	char *cmd = NULL, buf[16384];
	void *reply = NULL;
	struct cw_error err = {0};
	int n = redisFormatCommandArgv(&cmd, argc, argv, lens);

	if (n < 0) {
		snprintf(b->lasterr, sizeof(b->lasterr), "out of memory");
		return NULL;
	}
	for (int off = 0; off < n;) {
		int w = SSL_write(b->ssl, cmd + off, n - off);
		if (w <= 0) {
			cw_tls_error(b->ssl, w, "write", &err);
			goto fail;
		}
		off += w;
	}
	while (redisReaderGetReply(b->rd, &reply) == REDIS_OK && !reply) {
		int r = SSL_read(b->ssl, buf, sizeof(buf));
		if (r <= 0) {
			cw_tls_error(b->ssl, r, "read", &err);
			goto fail;
		}
		if (redisReaderFeed(b->rd, buf, (size_t)r) != REDIS_OK)
			break;
	}
	if (!reply)
		cw_error_set(&err, CW_EPROTO, "bad reply");
	else {
		redisFreeCommand(cmd);
		return reply;
	}
fail:
	snprintf(b->lasterr, sizeof(b->lasterr), "%s", err.msg);
	redisFreeCommand(cmd);
	return NULL;
}

/* A command on whichever connection is up; NULL (and b->lasterr) when it went. */
static redisReply *command(struct redis_backend *b, int argc, const char **argv,
			   const size_t *lens)
{
	if (b->ssl)
		return tls_command(b, argc, argv, lens);
	redisReply *r = redisCommandArgv(b->c, argc, argv, lens);
	if (!r)
		snprintf(b->lasterr, sizeof(b->lasterr), "%s", b->c->errstr);
	return r;
}

/* A blocking TCP connection bounded by timeouts, for the TLS session. */
static int tcp_connect(const char *host, int port, struct cw_error *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	struct timeval conn = {2, 0}, io = {5, 0};
	char ports[16];
	int fd = -1, g;

	snprintf(ports, sizeof(ports), "%d", port);
	if ((g = getaddrinfo(host, ports, &hints, &res))) {
		cw_error_set(err, CW_EIO, "%s: %s", host, gai_strerror(g));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		/* Linux bounds connect() by the send timeout */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &conn, sizeof(conn));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		cw_error_set(err, CW_EIO, "%s", strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &io, sizeof(io));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &io, sizeof(io));
	}
	return fd;
}

/* sentinel://: ask each sentinel in turn where the master is (SentinelBackend). */
static int find_master(struct redis_backend *b, char *host, size_t hostsz, int *port,
		       struct cw_error *err)
{
	struct timeval tv = {1, 0};

	cw_error_set(err, CW_EIO, "no sentinel of %s named master '%s'", b->redacted,
		     b->master_name);
	for (int i = 0; i < b->ru.nsentinels; i++) {
		const struct cw_url *s = &b->ru.sentinels[i];
		redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
		redisReply *r = NULL;
		if (c && !c->err) {
			redisSetTimeout(c, tv);
			r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", b->master_name);
		}
		bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			  r->element[0]->type == REDIS_REPLY_STRING &&
			  r->element[1]->type == REDIS_REPLY_STRING;
		if (ok) {
			snprintf(host, hostsz, "%s", r->element[0]->str);
			*port = atoi(r->element[1]->str);
		}
		if (r)
			freeReplyObject(r);
		if (c)
			redisFree(c);
		if (ok)
			return CW_OK;
	}
	return CW_EIO;
}

static int open_conn(struct redis_backend *b, const char *host, int port, struct cw_error *err)
{
	struct timeval tv = {2, 0};

	if (!b->tls) {
		b->c = redisConnectWithTimeout(host, port, tv);
		if (!b->c || b->c->err) {
			cw_error_set(err, CW_EIO, "cannot connect to result backend %s: %s",
				     b->redacted, b->c ? b->c->errstr : "out of memory");
			drop(b);
			return CW_EIO;
		}
		redisSetTimeout(b->c, (struct timeval){5, 0});
		return CW_OK;
	}
	struct cw_error e = {0};
	b->fd = tcp_connect(host, port, &e);
	if (b->fd >= 0 && (b->ssl = cw_tls_session(b->tls, b->fd, host, &e)) &&
	    cw_tls_handshake_blocking(b->ssl, &e) == CW_OK && (b->rd = redisReaderCreate()))
		return CW_OK;
	cw_error_set(err, CW_EIO, "cannot connect to result backend %s: %s", b->redacted,
		     e.msg[0] ? e.msg : "out of memory");
	drop(b);
	return CW_EIO;
}

static int ensure(struct redis_backend *b, struct cw_error *err)
{
	char host[256];
	int port;
	redisReply *r;

	if (connected(b))
		return CW_OK;
	snprintf(host, sizeof(host), "%s", b->url.host[0] ? b->url.host : "127.0.0.1");
	port = b->url.port ? b->url.port : 6379;
	if (b->ru.nsentinels && find_master(b, host, sizeof(host), &port, err) != CW_OK)
		return CW_EIO;
	if (open_conn(b, host, port, err) != CW_OK)
		return CW_EIO;
	if (b->url.password[0]) {
		const char *argv[] = {"AUTH", b->url.user[0] ? b->url.user : b->url.password,
				      b->url.password};
		r = command(b, b->url.user[0] ? 3 : 2, argv, NULL);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			cw_error_set(err, CW_EIO, "result backend %s: authentication failed", b->redacted);
			if (r)
				freeReplyObject(r);
			drop(b);
			return CW_EIO;
		}
		freeReplyObject(r);
	}
	char db[16];
	snprintf(db, sizeof(db), "%d", b->url.db);
	const char *argv[] = {"SELECT", db};
	r = command(b, 2, argv, NULL);
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

/* A master demoted by a failover answers READONLY: reconnect through the sentinels. */
static bool demoted(const struct redis_backend *b, const redisReply *r)
{
	return b->ru.nsentinels && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "READONLY", 8);
}

static struct cw_backend *rb_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	struct redis_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	b->fd = -1;
	if (cw_redis_url_parse(o->url, &b->ru, err) != CW_OK)
		goto fail;
	b->url = b->ru.url;
	if (b->ru.nsentinels) {
		if (!o->master_name || !*o->master_name) {
			cw_error_set(err, CW_EINVAL, "sentinel:// needs the 'master_name' transport "
				     "option (result_backend_transport_options.master_name)");
			goto fail;
		}
		snprintf(b->master_name, sizeof(b->master_name), "%s", o->master_name);
	}
	/* rediss://, or redis_backend_use_ssl set (Celery then uses TLS whatever the scheme) */
	if (b->ru.tls || o->redis_ssl_ca || o->redis_ssl_cert || o->redis_ssl_key ||
	    o->redis_ssl_reqs) {
		struct cw_tls_opts t;
		if (cw_redis_url_tls(&b->ru, o->redis_ssl_ca, o->redis_ssl_cert, o->redis_ssl_key,
				     o->redis_ssl_reqs, &t, err) != CW_OK ||
		    !(b->tls = cw_tls_ctx_new(&t, err)))
			goto fail;
	}
	cw_url_redact(o->url, b->redacted, sizeof(b->redacted));
	b->expires = o->expires;
	b->retry_for = o->retry_for > 0 ? o->retry_for : 60;
	return &b->base;
fail:
	free(b);
	return NULL;
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
			/* by its SHA1 (asked once); the text when the server lacks it (changes nothing) */
			if (cw_script_should_load(&store_script)) {
				const char *load[] = {"SCRIPT", "LOAD", lua_store};
				redisReply *lr = command(b, 3, load, NULL);
				cw_script_loaded(&store_script, lr && lr->type == REDIS_REPLY_ERROR,
						 lr && lr->type == REDIS_REPLY_STRING ? lr->str : NULL,
						 lr ? lr->len : 0);
				if (lr)
					freeReplyObject(lr);
			}
			const char *sha = cw_script_sha(&store_script);
			const char *argv[] = {sha ? "EVALSHA" : "EVAL", sha ? sha : lua_store, "1", key,
					      val, exp};
			size_t lens[] = {strlen(argv[0]), strlen(argv[1]), 1, strlen(key), len,
					 strlen(exp)};
			redisReply *r = command(b, 6, argv, lens);
			if (r && r->type == REDIS_REPLY_ERROR && cw_script_missing(r->str)) {
				freeReplyObject(r);
				argv[0] = "EVAL";
				argv[1] = lua_store;
				lens[0] = 4;
				lens[1] = strlen(lua_store);
				r = command(b, 6, argv, lens);
			}
			if (r && r->type != REDIS_REPLY_ERROR) {
				freeReplyObject(r);
				rc = CW_OK;
				break;
			}
			if (r && demoted(b, r)) {
				cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted, r->str);
				freeReplyObject(r);
				drop(b);
			} else if (r) {
				cw_error_set(err, CW_EIO, "result backend refused the result: %s", r->str);
				freeReplyObject(r);
				break; /* a server error will not heal by retrying */
			} else {
				cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted,
					     b->lasterr);
				drop(b);
			}
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
		redisReply *r = command(b, 10, argv, lens);
		if (!r) {
			cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted, b->lasterr);
			drop(b);
			continue;
		}
		if (demoted(b, r)) {
			cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted, r->str);
			freeReplyObject(r);
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
	if (b->ssl) {
		SSL_free(b->ssl); /* no close_notify: the session is the parent's */
		b->ssl = NULL;
	}
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
	if (b->rd)
		redisReaderFree(b->rd);
	b->rd = NULL;
}

static void rb_close(struct cw_backend *base)
{
	struct redis_backend *b = (struct redis_backend *)base;
	drop(b);
	if (b->tls)
		SSL_CTX_free(b->tls);
	free(b);
}

static int rb_check_url(const char *url, const char *broker_url, struct cw_error *err)
{
	struct cw_redis_url *u = calloc(1, sizeof(*u));
	struct cw_tls_opts t;
	(void)broker_url;

	if (!u) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	int rc = cw_redis_url_parse(url, u, err);
	if (rc == CW_OK && u->tls)
		rc = cw_redis_url_tls(u, NULL, NULL, NULL, NULL, &t, err);
	free(u);
	return rc;
}

/*
 * redis://: a PING in clear text.  rediss://: an accepted connection is all
 * we can see without a TLS session.  sentinel://: the first sentinel's PING.
 */
static int rb_probe_target(const char *url, struct cw_probe_target *t)
{
	char first[1024];
	if (!url)
		return CW_ENOTFOUND;
	size_t n = strcspn(url, ";");
	if (n >= sizeof(first))
		n = sizeof(first) - 1;
	memcpy(first, url, n);
	first[n] = '\0';
	bool sentinel = !strncmp(url, "sentinel://", 11);
	int rc = cw_probe_target_from_url(first, sentinel ? "26379" : "6379", t);
	if (rc == CW_OK && (sentinel || !strncmp(url, "redis://", 8))) {
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

/* The same backend under its other schemes (backend.c matches one scheme per row). */
const struct cw_backend_ops cw_rediss_backend_ops = {
	.scheme = "rediss",
	.check_url = rb_check_url,
	.probe_target = rb_probe_target,
	.open = rb_open,
	.store = rb_store,
	.chord_part = rb_chord_part,
	.reset = rb_reset,
	.close = rb_close,
};

const struct cw_backend_ops cw_sentinel_backend_ops = {
	.scheme = "sentinel",
	.check_url = rb_check_url,
	.probe_target = rb_probe_target,
	.open = rb_open,
	.store = rb_store,
	.chord_part = rb_chord_part,
	.reset = rb_reset,
	.close = rb_close,
};
