/*
 * Broker interface: one vtable per transport, chosen by URL scheme from the
 * one table of transports in broker.c.  A transport describes itself (the
 * URL schemes it answers to, its URL check, its `broker` stats dict), so
 * nothing outside src/broker knows a scheme name.
 *
 * The consumer drives fetching with credit: the broker takes at most
 * `credit` messages off the queues before the consumer grants more, which
 * is how prefetch is made exact.  Every delivered message must end in
 * exactly one of ack / reject(requeue) before close.
 */
#ifndef CW_BROKER_H
#define CW_BROKER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "protocol/protocol.h"

struct cw_loop;
struct cw_broker_ops;

/* Implementations embed this as their first member. */
struct cw_broker {
	const struct cw_broker_ops *ops;
};

/* One message taken off a queue.  Owned by the consumer after delivery. */
struct cw_delivery {
	char *raw;                /* the envelope as it sat on the queue */
	size_t raw_len;
	char *queue;              /* queue it came from (priority suffix removed) */
	char *tag;                /* delivery tag (unique per message) */
	struct cw_envelope env;   /* decoded envelope */
	long deliveries;          /* times this message was delivered (1 = first) */
	struct cw_delivery *next; /* consumer's list link */
};
void cw_delivery_free(struct cw_delivery *d);

struct cw_broker_handler {
	/* A message arrived; the handler owns d. */
	void (*on_delivery)(void *arg, struct cw_delivery *d);
	/* Connection state changed (true = consuming possible). */
	void (*on_state)(void *arg, bool up);
	/*
	 * A broadcast (fanout) message arrived on one of opts.broadcast
	 * exchanges (e.g. celery.pidbox); env is valid during the call.  NULL
	 * handler: no subscription.
	 */
	void (*on_broadcast)(void *arg, const char *exchange, const struct cw_envelope *env);
	void *arg;
};

/* How one queue is declared (AMQP): a [queue:NAME] section's lines, typed by the transport. */
struct cw_queue_decl {
	const char *name;
	char *const *keys, *const *vals; /* "passive" or x- arguments, n of them */
	int n;
};

struct cw_broker_opts {
	const char *url;
	char **queues;
	int nqueues;
	double visibility_timeout;
	struct cw_proto_limits limits;
	const char *const *broadcast; /* fanout exchanges to subscribe to, NULL-terminated */
	const char *nodename;         /* worker node name (mailbox binding); may be NULL */
	/* AMQP: TLS (amqps://), heartbeat, connect timeout, queue x-max-priority */
	const char *ssl_ca, *ssl_cert, *ssl_key;
	bool ssl, ssl_verify;         /* ssl: TLS even for amqp:// */
	int heartbeat;                /* seconds; 0 = none */
	double connect_timeout;       /* seconds */
	int max_priority;             /* task_queue_max_priority; 0 = none */
	/* AMQP: how queues are declared, the pidbox queue, URL lists */
	const char *queue_type;       /* task_default_queue_type: "classic" (NULL) | "quorum" */
	bool queue_passive;           /* worker_queue_passive: passive declares, any arguments */
	const struct cw_queue_decl *queue_decls; /* per-queue declarations, nqueue_decls of them */
	int nqueue_decls;
	bool control_exclusive;       /* control_queue_exclusive */
	const char *failover_strategy; /* url is "a;b;...": "round-robin" (NULL) | "shuffle" */
};

struct cw_broker_ops {
	/* Transport name ("redis", "amqp"): what `report` and stats call it. */
	const char *scheme;
	/*
	 * Every URL scheme that selects this transport, NULL-terminated.  The
	 * first `listed` of them are named when a URL is refused ("this build
	 * speaks ..."); a transport that lists none is for tests: cw_broker_open
	 * takes it, cw_broker_check_url (--broker) does not.
	 */
	const char *const *url_schemes;
	int listed;
	/* Optional: more checks of a URL whose scheme is ours (CW_EINVAL + message). */
	int (*check_url)(const char *url, struct cw_error *err);
	/* Optional: the `broker` dict of `celery inspect stats`, kombu's shape (new reference). */
	json_t *(*info)(struct cw_broker *b);
	/*
	 * True when the broker takes back every unacknowledged message when the
	 * connection drops (AMQP): the consumer then forgets the messages it
	 * holds but has not started, as Celery clears its reserved requests.
	 */
	bool redelivers;
	struct cw_broker *(*open)(struct cw_loop *loop, const struct cw_broker_opts *o,
				  const struct cw_broker_handler *h, struct cw_error *err);
	/* Allow up to n more deliveries (0 stops fetching). */
	void (*set_credit)(struct cw_broker *b, int n);
	/*
	 * Optional (NULL for Redis): the prefetch window, i.e. how many
	 * unacknowledged messages the broker may push (AMQP basic.qos); 0 stops
	 * consuming.  Called with every credit update.
	 */
	void (*set_prefetch)(struct cw_broker *b, int window);
	void (*ack)(struct cw_broker *b, struct cw_delivery *d);
	/* requeue=false drops the message (Celery: reject without requeue). */
	void (*reject)(struct cw_broker *b, struct cw_delivery *d, bool requeue);
	/* Give back a reserved, never started message at the head of its queue. */
	void (*restore)(struct cw_broker *b, struct cw_delivery *d);
	/*
	 * Send a new message (an envelope with its own delivery tag) to queue at
	 * the given priority; delivered at most once even if resent after a
	 * connection loss.
	 */
	void (*publish)(struct cw_broker *b, const char *queue, int priority, const char *tag,
			const char *raw, size_t len);
	/*
	 * Publish to a fanout exchange (events): transient, dropped while the
	 * broker is unreachable, as Celery's event dispatcher drops them.
	 */
	void (*publish_fanout)(struct cw_broker *b, const char *exchange, const char *routing_key,
			       const char *raw, size_t len);
	/*
	 * Publish to a direct exchange through its bindings (pidbox replies);
	 * transient.  expire > 0: the target lists expire after that many seconds.
	 */
	void (*publish_direct)(struct cw_broker *b, const char *exchange, const char *routing_key,
			       const char *raw, size_t len, int expire);
	/* Start consuming from one more queue (CW_EINVAL if already), stop consuming one. */
	int (*add_queue)(struct cw_broker *b, const char *queue);
	int (*cancel_queue)(struct cw_broker *b, const char *queue);
	/* The queues consumed now; returns their number. */
	int (*queues)(struct cw_broker *b, const char *const **out);
	/*
	 * Tell the broker the message is still held, so visibility-timeout
	 * recovery (ours or another worker's) leaves it alone while we live.
	 */
	void (*touch)(struct cw_broker *b, struct cw_delivery *d);
	/* True while commands are still waiting to reach the server. */
	bool (*busy)(struct cw_broker *b);
	bool (*connected)(struct cw_broker *b);
	/*
	 * Optional (NULL: not supported): sample how many messages wait in queue,
	 * every priority together.  cb runs later from the loop with the count, or
	 * never (connection down or lost, broker closed).
	 */
	void (*queue_depth)(struct cw_broker *b, const char *queue,
			    void (*cb)(void *arg, const char *queue, long depth), void *arg);
	void (*close)(struct cw_broker *b);
};

/* The transport for url's scheme, or NULL. */
const struct cw_broker_ops *cw_broker_lookup(const char *url);
/*
 * Open the transport for o->url and set b->ops.  Unknown scheme: NULL with
 * CW_EINVAL and the schemes this build has.
 */
struct cw_broker *cw_broker_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				 const struct cw_broker_handler *h, struct cw_error *err);
/*
 * Whether url can be given to --broker: CW_OK, or CW_EINVAL with a message
 * ("unsupported URL '...' (this build speaks redis://, ...)", password
 * redacted) that the caller prefixes with the setting's name.
 */
int cw_broker_check_url(const char *url, struct cw_error *err);
/* Transport name of an open broker ("redis", "amqp"). */
const char *cw_broker_transport(const struct cw_broker *b);
/* Transport name for url's scheme, NULL when this build has none. */
const char *cw_broker_url_transport(const char *url);
/* The `broker` dict of `celery inspect stats` / Flower (new reference; {} if unknown). */
json_t *cw_broker_info(struct cw_broker *b);

#endif
