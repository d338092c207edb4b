/*
 * Private to the AMQP transport: amqp.c (connection, flow control, acks,
 * queues, open/close), amqp_frames.c (reading frames, reassembling
 * deliveries), amqp_topology.c (what Celery declares), amqp_publish.c
 * (publishing, and task publishes kept while the broker is away).  Names
 * are ab_ (AMQP broker): amqp_ is rabbitmq-c's.  Not for use outside
 * src/broker.
 */
#ifndef CW_BROKER_AMQP_INT_H
#define CW_BROKER_AMQP_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <amqp.h>

#include "broker/amqp_acks.h"
#include "broker/amqp_conn.h"
#include "broker/broker.h"

#define CH_CONSUME 1
#define CH_PUBLISH 2
#define CH_PROBE 3      /* passive queue.declare for queue depth samples */
#define MAX_PROBES 64
#define FRAME_MAX 131072
#define RPC_TIMEOUT 10.0
#define PUMP_BATCH 256
#define MAX_PENDING 100000
#define BACKOFF_MAX 8.0
#define GUARD_EVERY BACKOFF_MAX /* seconds between checks for a stranded reconnect */
#define PIDBOX_EXPIRES_MS 10000  /* control_queue_expires = 10.0 s */
#define PIDBOX_TTL_MS 300000     /* control_queue_ttl = 300.0 s */
#define CTAG_PREFIX "cw-"
#define AB_REFUSED 1            /* a declaration refused by the broker; the connection is fine */

/* A task publish waiting for the connection. */
struct pend {
	struct pend *next;
	char *queue, *raw;
	size_t len;
	int priority;
};

/* The message being reassembled from deliver + header + body frames. */
struct inmsg {
	bool active, discard;
	bool have_header;
	bool bcast;            /* to a mailbox consumer: consumed without acks */
	char *ctag, *exchange, *routing_key;
	uint64_t dtag;
	bool redelivered;
	json_t *props;        /* kombu-style properties + headers, from the header frame */
	char *body;
	size_t len, want;
};

/* A [queue:NAME] section, copied: "passive" and x- arguments as written. */
struct qdecl {
	char *name;
	char **keys, **vals;
	int n;
};

/* A queue whose declaration the broker refused (406, or 404 for a passive one). */
struct refusal {
	char *queue;
	bool now;                 /* refused on this connection: not consumed */
};

struct amqp_broker {
	struct cw_broker base;
	struct cw_loop *loop;
	struct cw_broker_handler h;
	struct cw_broker_opts o;   /* strings below are our copies */
	struct cw_amqp_target t;  /* where and how to connect now (TLS files point into o) */
	struct cw_url given;      /* that URL as written, defaults not filled in (stats) */
	char redacted[512];
	char **urls;              /* the URL list (amqp://a;amqp://b): failover targets */
	int nurls, cur;           /* cur: the one t and given describe */
	int tried;                /* URLs tried since the last connection: backoff after a round */
	unsigned seed;            /* shuffle strategy */
	struct qdecl *decls;      /* [queue:NAME] sections */
	int ndecls;
	struct refusal *refused;
	int nrefused;
	bool qos_global;          /* channel-wide basic.qos; false: per consumer (quorum queues) */
	bool pidbox_exclusive;    /* declare <node>.celery.pidbox exclusive */
	int last_code;            /* reply code of the last refused RPC (406, 404, ...); 0 = none */
	char last_text[256];      /* its text */
	char **queues;
	int nqueues;
	char **broadcast;
	int nbroadcast;
	char nodename[256];

	amqp_connection_state_t conn;
	int fd;
	bool up;
	uint64_t gen;             /* connection generation (delivery tag prefix) */
	double backoff;
	uint64_t retry_timer, hb_timer, pump_timer, down_timer;
	uint64_t guard_timer;     /* periodic, open to close: recovers from a failed timer arm */
	bool down_lost;           /* the "down" notification could not be scheduled: owed */
	int window;               /* prefetch window the consumer wants; 0 = stopped */
	int qos_sent;             /* last basic.qos prefetch_count sent on this connection */
	bool consuming;
	bool closing;
	struct ab_acks acks;      /* acks queued on CH_CONSUME, sent before the loop sleeps */
	bool acks_hooked;         /* the before-sleep hook that sends them is registered */
	struct inmsg in;
	struct pend *pend_head, *pend_tail;
	int npend;
	char **declared;          /* queues declared on this connection */
	int ndeclared;
	/* queue depth samples in flight on CH_PROBE, answered in order */
	struct probe {
		char *queue;
		void (*cb)(void *arg, const char *queue, long depth);
		void *arg;
	} probes[MAX_PROBES];
	int nprobes;
};

static inline amqp_bytes_t cstr(const char *s)
{
	return amqp_cstring_bytes(s ? s : "");
}

/* amqp.c */
/* The connection is gone or unusable: tear down, tell the consumer (from a timer), retry. */
void ab_conn_lost(struct amqp_broker *b, const char *why);
/* 0 when the last RPC on ch succeeded; else logged, the channel or connection recovered. */
int ab_rpc_ok(struct amqp_broker *b, amqp_channel_t ch, const char *what, const char *name);
/*
 * Like ab_rpc_ok, but a channel refusal with reply code quiet (-1: any) is
 * left to the caller to log: b->last_code and b->last_text describe it.
 */
int ab_rpc_quiet(struct amqp_broker *b, amqp_channel_t ch, const char *what, const char *name,
		 int quiet);
/* After the broker closed channel ch: close-ok and open it again (0 on success). */
int ab_reopen_channel(struct amqp_broker *b, amqp_channel_t ch);
/* Queue depth samples: the oldest got its answer (< 0: no such queue); drop them all. */
void ab_probe_done(struct amqp_broker *b, long depth);
void ab_drop_probes(struct amqp_broker *b);

/* amqp_frames.c */
/* Read and handle every frame available without blocking. */
void ab_pump(struct amqp_broker *b);
void ab_in_reset(struct inmsg *m);
void ab_reject_tag(struct amqp_broker *b, uint64_t dtag, bool requeue);
/* "gen:tag" -> tag (0 if malformed), *gen = the connection generation. */
uint64_t ab_parse_tag(const char *tag, uint64_t *gen);

/* amqp_topology.c */
/* 0, AB_REFUSED (406 / passive 404: logged once, the connection lives on) or -1. */
int ab_declare_task_queue(struct amqp_broker *b, const char *q);
/* Whether q is declared as a quorum queue (x-queue-type from its section or the default). */
bool ab_queue_quorum(const struct amqp_broker *b, const char *q);
/* Whether q is declared passively (its section's passive, else worker_queue_passive). */
bool ab_queue_passive(const struct amqp_broker *b, const char *q);
/* Whether q was refused on this connection (not consumed until the next). */
bool ab_refused_now(const struct amqp_broker *b, const char *q);
/* A new connection: every queue is declared again. */
void ab_refusals_reset(struct amqp_broker *b);
void ab_refusals_free(struct amqp_broker *b);
int ab_declare_topology(struct amqp_broker *b);
void ab_forget_declared(struct amqp_broker *b);

/* amqp_publish.c */
void ab_flush_pending(struct amqp_broker *b);
void ab_pend_pop(struct amqp_broker *b);
void ab_publish(struct cw_broker *base, const char *queue, int priority, const char *tag,
		const char *raw, size_t len);
void ab_publish_fanout(struct cw_broker *base, const char *exchange, const char *routing_key,
		       const char *raw, size_t len);
void ab_publish_direct(struct cw_broker *base, const char *exchange, const char *routing_key,
		       const char *raw, size_t len, int expire);

#endif
