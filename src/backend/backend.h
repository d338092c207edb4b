/*
 * Result backends: one vtable per URL scheme, in the one table of backend.c;
 * each checks its own URLs and says where its server listens for health
 * probes, so nothing outside src/backend knows a scheme.  Calls are synchronous and
 * run in pool children (the master uses one only for the states it records
 * itself: unknown tasks, lost children).  store() retries with backoff on
 * connection errors, like Celery's backend retry policy.
 */
#ifndef CW_BACKEND_H
#define CW_BACKEND_H

#include <stdbool.h>

#include "protocol/protocol.h"

struct cw_backend_ops;

struct cw_backend {
	const struct cw_backend_ops *ops;
};

struct cw_backend_opts {
	const char *url;
	double expires;          /* result_expires seconds; 0 = keep forever */
	double retry_for;        /* give up a store after this many seconds */
	/* database backend: Celery's database_table_names / database_table_schemas */
	const char *task_table, *group_table, *task_schema, *group_schema;
	/* rpc:// backend: results travel over the broker's AMQP connection settings */
	const char *broker_url;
	const char *ssl_ca, *ssl_cert, *ssl_key;
	bool ssl, ssl_verify;
	/* Redis backend: redis_backend_use_ssl (NULL = unset) and sentinel:// master_name */
	const char *redis_ssl_ca, *redis_ssl_cert, *redis_ssl_key, *redis_ssl_reqs;
	const char *master_name;
};

/* Where a backend's server listens, for the master's non-blocking health probe. */
struct cw_probe_target {
	char host[256];
	char port[16];
	const char *hello;   /* bytes to send after connect, NULL = an accepted connection is all */
	const char *answers; /* after hello: a reply starting with one of these bytes is "up" */
};

struct cw_backend_ops {
	/* "redis" matches redis://...; "db+postgresql" also db+postgresql+psycopg2://... */
	const char *scheme;
	/* Named in "unsupported URL" messages (rpc:// is not: it comes with an AMQP broker). */
	bool listed;
	/*
	 * Optional: check a URL whose scheme matched.  CW_OK; CW_ENOTFOUND when it
	 * is not one of ours after all (the caller reports an unsupported URL);
	 * CW_EINVAL with a message for a URL we know but cannot use.
	 */
	int (*check_url)(const char *url, const char *broker_url, struct cw_error *err);
	/* Optional: fill *t from url; CW_EINVAL when there is nothing to probe. */
	int (*probe_target)(const char *url, struct cw_probe_target *t);
	struct cw_backend *(*open)(const struct cw_backend_opts *o, struct cw_error *err);
	/* Store a task's meta; CW_OK or an error after retries ran out. */
	int (*store)(struct cw_backend *b, const struct cw_result_meta *m, struct cw_error *err);
	/*
	 * A chord header task ended: add entry (JSON [1, id, state, result]) to
	 * group gid at score group_index (-1 = +inf).  *entries stays NULL while
	 * parts are missing or the chord size was never set; for the last part
	 * it is a new array of the entries' JSON texts, in group order, and the
	 * group's bookkeeping keys are gone.  *nested is set when the producer
	 * saved the header as a GroupResult (groups inside the header).
	 * NULL op: the backend has no chord support.
	 */
	int (*chord_part)(struct cw_backend *b, const char *gid, int64_t group_index,
			  const char *entry, size_t len, json_t **entries, bool *nested,
			  struct cw_error *err);
	/*
	 * Optional: create what the backend needs (tables) once at worker start,
	 * before any child stores or any client polls; NULL = nothing to do.
	 */
	int (*prepare)(struct cw_backend *b, struct cw_error *err);
	/* Delete results older than result_expires (celery.backend_cleanup); NULL: nothing to do. */
	int (*cleanup)(struct cw_backend *b, long *deleted, struct cw_error *err);
	/* Drop the connection (children call this after fork: never share a socket). */
	void (*reset)(struct cw_backend *b);
	void (*close)(struct cw_backend *b);
};

/* Backend for url, or NULL for "no backend" (NULL/""/"disabled"); *err set on bad URL. */
struct cw_backend *cw_backend_open(const struct cw_backend_opts *o, struct cw_error *err);
int cw_backend_store(struct cw_backend *b, const struct cw_result_meta *m, struct cw_error *err);
int cw_backend_chord_part(struct cw_backend *b, const char *gid, int64_t group_index,
			  const char *entry, size_t len, json_t **entries, bool *nested,
			  struct cw_error *err);
/* CW_OK with *deleted = -1 when the backend keeps no rows to clean (Redis expires keys itself). */
int cw_backend_cleanup(struct cw_backend *b, long *deleted, struct cw_error *err);
void cw_backend_reset(struct cw_backend *b);
int cw_backend_prepare(struct cw_backend *b, struct cw_error *err);
/*
 * Between two attempts of a store: false when waiting delay more seconds
 * would pass deadline (give up); otherwise logs the first retry (why), sleeps
 * *delay and doubles it up to 1 s.  Backends retry like Celery's @retry.
 */
bool cw_backend_backoff(int attempt, double *delay, double deadline, double retry_for,
			const char *why);
void cw_backend_close(struct cw_backend *b);
/*
 * Cap how long a store in this process keeps retrying, whatever retry_for
 * says (seconds; < 0 lifts the cap).  The master sets a short cap: its
 * stores (unknown tasks, lost children, cancelled tasks) block the loop
 * that serves everything else, and none at all once a cold shutdown is
 * under way; pool children lift it after fork.
 */
void cw_backend_retry_cap(double seconds);

/*
 * Whether url can be given as result_backend with this broker_url: CW_OK (no
 * backend counts), or CW_EINVAL with a message that the caller prefixes with
 * the setting's name ("unsupported URL '...' (this build stores results in
 * redis:// and ...)", "rpc:// needs an amqp:// broker").
 */
int cw_backend_check_url(const char *url, const char *broker_url, struct cw_error *err);
/*
 * Where to probe the backend of url: CW_OK with *t; CW_ENOTFOUND when no
 * backend is configured (NULL, "", "disabled"); CW_EINVAL when one is but
 * there is no address to probe (rpc://, no host).
 */
int cw_backend_probe_target(const char *url, struct cw_probe_target *t);
/* For probe_target ops: host and port of url's authority (port defport when absent). */
int cw_probe_target_from_url(const char *url, const char *defport, struct cw_probe_target *t);

#endif
