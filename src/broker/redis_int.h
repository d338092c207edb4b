/*
 * Private to the Redis transport (redis.c: fetching and the ops,
 * redis_conn.c: connections and the ordered command queue, redis_scan.c:
 * visibility-timeout restores).  Not for use outside src/broker.
 */
#ifndef CW_BROKER_REDIS_INT_H
#define CW_BROKER_REDIS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "broker/broker.h"
#include "util/url.h"

/* kombu's separator between a queue's name and its priority step, and in binding members */
#define SEP "\x06\x16"

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
	bool retry_lost;   /* arming retry_timer failed: rb_conn_recheck reconnects */
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

/* Connect (or reconnect) one of the three connections. */
void rb_conn_start(struct redis_broker *b, struct rconn *c);
/* Reconnect the connections whose reconnect timer could not be armed (periodic guard). */
void rb_conn_recheck(struct redis_broker *b);
/*
 * Queue a command on the command connection, sent in order and re-sent
 * after a reconnect until Redis answers; strings are copied (lens NULL or
 * an entry of (size_t)-1 means strlen).  done (may be NULL) gets the reply.
 */
void rb_cmd(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
	    void *arg, int argc, const char *const *argv, const size_t *lens);
void rb_rcmd_free(struct rcmd *q);
/* Start a BRPOP when credit, connections and queues allow one. */
void rb_fetch(struct redis_broker *b);
/*
 * Start the periodic visibility-timeout scan (once, at open; the same tick
 * runs rb_conn_recheck).  CW_OK, or CW_ENOMEM (logged): the open must fail.
 */
int rb_scan_schedule(struct redis_broker *b);
/* env (a kombu envelope) marked redelivered, as compact JSON text (malloc'd). */
char *rb_mark_redelivered(json_t *env);

#endif
