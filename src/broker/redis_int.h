/*
 * Private to the Redis transport (redis.c: fetching and the ops,
 * redis_conn.c: connections and the ordered command queue, redis_scan.c:
 * visibility-timeout restores, redis_link.c: the two ways a connection
 * talks, redis_sentinel.c: finding the master through Sentinel).  Not for
 * use outside src/broker.
 */
#ifndef CW_BROKER_REDIS_INT_H
#define CW_BROKER_REDIS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "broker/broker.h"
#include "util/redisurl.h"
#include "util/script.h"
#include "util/tls.h"
#include "util/url.h"

/* kombu's separator between a queue's name and its priority step, and in binding members */
#define SEP "\x06\x16"
/* kombu's priority steps: a queue is NPRI lists, the step appended to all but the first */
#define NPRI 4
extern const int rb_priority_steps[NPRI];
/* per-message delivery counts (survive requeues and restores; an ack deletes them) */
#define DELIVERIES_KEY "cworker.deliveries"
/* Ack / reject without requeue: KEYS unacked_index, unacked, cworker.deliveries; ARGV tag. */
extern struct cw_script rb_ack_script;

struct redis_broker;
struct rconn;

/*
 * How a connection talks to its server.  Replies reach hiredis's callback
 * type, redisCallbackFn(ac, reply, priv); callbacks must use only reply and
 * priv (the TLS link has no redisAsyncContext and passes NULL).  reply is
 * NULL when the connection goes (or is freed) before the answer came.  A
 * SUBSCRIBE/PSUBSCRIBE callback receives every later message too.
 */
struct rlink_ops {
	/* Start connecting c to host:port; CW_OK (rb_conn_failed/lost tell what follows). */
	int (*open)(struct rconn *c, const char *host, int port);
	/* Queue a command: CW_OK, or an error when the connection cannot take it. */
	int (*command)(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
		       const char **argv, const size_t *lens);
	/* Close once the replies already asked for are in (then rb_conn_lost). */
	void (*disconnect)(struct rconn *c);
	/* Free at once: pending callbacks get NULL, rb_conn_lost is not called. */
	void (*free)(struct rconn *c);
};

/* hiredis's async client (redis://, sentinel://) and the OpenSSL link (rediss://). */
extern const struct rlink_ops rb_hiredis_link;
extern const struct rlink_ops rb_tls_link;

struct rconn {
	struct redis_broker *b;
	const char *name;
	const struct rlink_ops *ops;
	void *link;        /* the ops' connection; NULL while there is none */
	int fd;
	unsigned mask;
	bool up;           /* connected, authenticated, database selected */
	double backoff;
	uint64_t retry_timer;
	bool retry_lost;   /* arming retry_timer failed: rb_conn_recheck reconnects */
	bool dirty;        /* commands queued: written by the before-sleep flush */
	bool flushing;     /* inside that flush: a full socket needs EPOLLOUT */
	bool hooked;       /* the flush hook is registered */
};

/* A queued command for the command connection. */
struct rcmd {
	struct redis_broker *b;
	struct rcmd *next, *prev;
	int argc;
	char **argv;
	size_t *argvlen;
	bool sent;
	struct cw_script *script; /* sent as EVALSHA: on NOSCRIPT, sent again as EVAL */
	void (*done)(struct redis_broker *b, redisReply *r, void *arg);
	void *arg;
};

/* sentinel://: where the sentinels are and what they last said. */
struct rsentinel {
	struct cw_url *addrs;    /* one per sentinel:// URL of the list */
	int n;
	int next;                /* the sentinel to ask next */
	int asked;               /* sentinels asked in this round */
	char master_name[256];
	char host[256];          /* the master's address, as the sentinels gave it */
	int port;
	bool fresh;              /* no connection failed since the answer */
	bool resolving;
	unsigned waiting;        /* connections to start when the answer comes (bit per rconn) */
	double backoff;
	uint64_t retry_timer;
	bool retry_lost;                /* its retry timer could not be armed */
	struct rconn conn;       /* to the sentinel being asked */
};

struct redis_broker {
	struct cw_broker base;
	struct cw_loop *loop;
	struct cw_broker_handler h;
	struct cw_url url;
	char redacted[512];
	const struct rlink_ops *link;   /* for blk, cmd and sub */
	SSL_CTX *tls;                   /* rediss://: the TLS context, else NULL */
	struct rsentinel *sentinel;     /* sentinel://: else NULL */
	char **queues;         /* cycle order; rotated after each delivery */
	int nqueues;
	char **fetch_keys;     /* the lists a take looks at, for this order (NULL: build anew) */
	int nfetch_keys;
	double visibility_timeout;
	struct cw_proto_limits limits;
	struct rconn blk, cmd, sub;
	char **broadcast;       /* fanout exchanges subscribed on `sub` */
	int nbroadcast;
	struct rcmd *head, *tail;
	int credit;
	int recording;          /* taken off a queue, bookkeeping not yet confirmed */
	bool fetch_inflight;    /* a take (or BRPOP) is out on rb_take_conn() */
	bool take_eval;         /* the server answered NOSCRIPT: send the take's text once */
	bool wake;              /* a push was announced while it was out: take again */
	bool tracking;          /* CLIENT TRACKING asked on rb_take_conn() (redis_fetch.c) */
	bool no_tracking;       /* the server refused it: wait with BRPOP */
	long long sub_id;       /* CLIENT ID of `sub`, where the notices go; 0 = unknown */
	uint64_t poll_timer;    /* idle: take again in a second in case a notice was lost */
	bool closing;
	bool was_up;
	uint64_t scan_timer;
	bool scanning;
	char scan_token[37];
	char nodename[256];     /* worker node name, for the mailbox binding */
};

/*
 * Where takes and CLIENT TRACKING go: the command connection, so a take
 * and the acks and results of the same loop turn leave in one write and
 * come back in one read; blk only for BRPOP, which blocks its connection.
 */
static inline struct rconn *rb_take_conn(struct redis_broker *b)
{
	return b->no_tracking ? &b->blk : &b->cmd;
}

/* Connect (or reconnect) one of the three connections. */
void rb_conn_start(struct redis_broker *b, struct rconn *c);
/* Reconnect the connections whose reconnect timer could not be armed (periodic guard). */
void rb_conn_recheck(struct redis_broker *b);
/* From a link: connecting failed / an established connection went (why may be ""). */
void rb_conn_failed(struct rconn *c, const char *why);
void rb_conn_lost(struct rconn *c, const char *why);
/* hiredis adapter for the loop, used by rb_hiredis_link: watch c->fd for mask. */
void rb_conn_watch(struct rconn *c, unsigned mask);
/* Connect c to the server (or the master) now: CW_OK or an error, then retry. */
int rb_conn_open(struct redis_broker *b, struct rconn *c, const char *host, int port);

/* sentinel://: parse the list; CW_EINVAL with a message. */
int rb_sentinel_init(struct redis_broker *b, const struct cw_redis_url *u, const char *master_name,
		     struct cw_error *err);
/* Start c once the master is known (asking the sentinels when it is not). */
void rb_sentinel_start(struct redis_broker *b, struct rconn *c);
/* c failed or was lost: the next start asks the sentinels again. */
void rb_sentinel_stale(struct redis_broker *b);
void rb_sentinel_free(struct redis_broker *b);
/* Ask again when a retry timer could not be armed (from the periodic scan). */
void rb_sentinel_recheck(struct redis_broker *b);
/* The sentinel connection's own events (from rb_conn_failed/lost and on_ready). */
void rb_sentinel_conn_ready(struct redis_broker *b);
void rb_sentinel_conn_gone(struct redis_broker *b, const char *why);
/*
 * Queue a command on the command connection, sent in order and re-sent
 * after a reconnect until Redis answers; strings are copied (lens NULL or
 * an entry of (size_t)-1 means strlen).  done (may be NULL) gets the reply.
 */
void rb_cmd(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
	    void *arg, int argc, const char *const *argv, const size_t *lens);
/*
 * rb_cmd for a Lua script by its SHA1: argv/lens are what follows the
 * script (numkeys, keys, args).  A NOSCRIPT answer sends it again as EVAL,
 * after the commands queued behind it: only for scripts whose order
 * against later commands does not matter (the ack).
 */
void rb_cmd_script(struct redis_broker *b, void (*done)(struct redis_broker *, redisReply *, void *),
		   void *arg, struct cw_script *script, int argc, const char *const *argv,
		   const size_t *lens);
void rb_rcmd_free(struct rcmd *q);
/* Start a take (or BRPOP) when credit, connections and queues allow one. */
void rb_fetch(struct redis_broker *b);
/* The queue list or its order is about to change: the cached list keys go. */
void rb_keys_changed(struct redis_broker *b);
/* A push may have come (a tracking notice): take now, or again after the take that is out. */
void rb_wake(struct redis_broker *b);
/* The queues or the notice connection changed: ask for tracking again if it is on. */
void rb_track_renew(struct redis_broker *b);
/* Does a tracking notice (its list of keys) name a list we consume from? */
bool rb_notice_concerns_us(struct redis_broker *b, const redisReply *keys);
/* The server cannot notify (no CLIENT TRACKING, or the ACL forbids it): use BRPOP. */
void rb_no_tracking(struct redis_broker *b, const char *why);
/* rb_cmd's done for a delivery recorded from here: hands it to the consumer. */
void rb_recorded(struct redis_broker *b, redisReply *r, void *arg);
/*
 * Start the periodic visibility-timeout scan (once, at open; the same tick
 * runs rb_conn_recheck).  CW_OK, or CW_ENOMEM (logged): the open must fail.
 */
int rb_scan_schedule(struct redis_broker *b);
/* env (a kombu envelope) marked redelivered, as compact JSON text (malloc'd). */
char *rb_mark_redelivered(json_t *env);

#endif
