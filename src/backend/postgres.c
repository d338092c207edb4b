/*
 * Celery's database result backend (celery/backends/database, SQLAlchemy)
 * on PostgreSQL without Python: the same tables (celery_taskmeta,
 * celery_tasksetmeta and their sequences), the same columns, and the
 * `result` column as SQLAlchemy's PickleType writes it — a pickle of the
 * result value — so Python producers reading with
 * backend="db+postgresql://..." see what a Python worker would have stored.
 *
 * One connection per process (pool children reset it after fork),
 * statements with parameters, reconnect and retry with backoff for up to
 * retry_for seconds, and like the Redis backend a stored SUCCESS is never
 * overwritten.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "util/lazylib.h"
#include "util/log.h"
#include "util/url.h"

/*
 * libpq is opened on first use (util/lazylib.h), when a db+postgresql://
 * backend is opened: a worker storing its results elsewhere never maps it
 * nor what it pulls in (Kerberos, LDAP, SASL).  Calls go through pq.NAME,
 * typed by libpq-fe.h's own declarations.
 */
#define PQ_SYMBOLS(X) X(PQclear) X(PQconnectdb) X(PQerrorMessage) X(PQexec) X(PQexecParams) \
	X(PQfinish) X(PQgetvalue) X(PQntuples) X(PQresultStatus) X(PQsetNoticeReceiver) X(PQstatus)
#define PQ_NAME(f) #f,
#define PQ_SLOT(f) __typeof__(f) *f;
static const char *const pq_names[] = {PQ_SYMBOLS(PQ_NAME) NULL};
static void *pq_addr[sizeof(pq_names) / sizeof(pq_names[0]) - 1];
static struct cw_lazylib libpq = {.soname = "libpq.so.5", .names = pq_names, .addr = pq_addr};
static struct {
	PQ_SYMBOLS(PQ_SLOT)
} pq;

/* libpq, loaded (once) into pq; CW_OK or CW_EIO with the reason. */
static int pq_load(struct cw_error *err)
{
	if (cw_lazylib_open(&libpq, err) != CW_OK)
		return CW_EIO;
	size_t i = 0;
#define PQ_SET(f) memcpy(&pq.f, &pq_addr[i++], sizeof(pq.f));
	PQ_SYMBOLS(PQ_SET)
	return CW_OK;
}

struct pg_backend {
	struct cw_backend base;
	char *conninfo;          /* postgresql://... for libpq */
	char redacted[512];
	double expires, retry_for;
	PGconn *c;
	bool ready;              /* tables checked on this connection */
	bool ext_cols;           /* celery_taskmeta has the result_extended columns */
	char *task_table, *task_schema;
	/* SQL built once from the configured table names and schemas */
	char *ddl, *has_ext, *upsert, *upsert_ext, *cleanup;
};

/* "schema"."name" (or "name"), quoted as identifiers; NULL on ENOMEM. */
static char *qualified(const char *schema, const char *name)
{
	char *out = NULL, *qs = NULL, *qn = NULL;
	size_t n;
	/* PQescapeIdentifier needs a connection; quote by hand (double any '"') */
	const char *parts[2] = {schema, name};
	char **dst[2] = {&qs, &qn};
	for (int i = 0; i < 2; i++) {
		if (!parts[i] || !*parts[i])
			continue;
		n = strlen(parts[i]);
		char *q = malloc(2 * n + 3), *o = q;
		if (!q)
			goto out;
		*o++ = '"';
		for (const char *c = parts[i]; *c; c++) {
			if (*c == '"')
				*o++ = '"';
			*o++ = *c;
		}
		*o++ = '"';
		*o = '\0';
		*dst[i] = q;
	}
	if (asprintf(&out, "%s%s%s", qs ? qs : "", qs ? "." : "", qn) < 0)
		out = NULL;
out:
	free(qs);
	free(qn);
	return out;
}

static int build_sql(struct pg_backend *b, const struct cw_backend_opts *o)
{
	const char *tn = o->task_table && *o->task_table ? o->task_table : "celery_taskmeta";
	const char *gn = o->group_table && *o->group_table ? o->group_table : "celery_tasksetmeta";
	char *t = qualified(o->task_schema, tn), *g = qualified(o->group_schema, gn);
	char *ts = qualified(o->task_schema, "task_id_sequence");
	char *gs = qualified(o->group_schema, "taskset_id_sequence");
	char *qts = o->task_schema && *o->task_schema ? qualified(NULL, o->task_schema) : NULL;
	char *qgs = o->group_schema && *o->group_schema ? qualified(NULL, o->group_schema) : NULL;
	char schemas[1200] = "";
	int rc = CW_ENOMEM;

	if (!t || !g || !ts || !gs)
		goto out;
	if (qts)
		snprintf(schemas, sizeof(schemas), "CREATE SCHEMA IF NOT EXISTS %s;", qts);
	if (qgs)
		snprintf(schemas + strlen(schemas), sizeof(schemas) - strlen(schemas),
			 "CREATE SCHEMA IF NOT EXISTS %s;", qgs);
	/* SQLAlchemy's DDL for Celery's models, extended columns included (unused ones stay NULL) */
	if (asprintf(&b->ddl,
		     /* held until the implicit transaction of this one PQexec commits */
		     "SELECT pg_advisory_xact_lock(8150913);"
		     "%s"
		     "CREATE SEQUENCE IF NOT EXISTS %s;"
		     "CREATE TABLE IF NOT EXISTS %s ("
		     " id INTEGER NOT NULL, task_id VARCHAR(155), status VARCHAR(50), result BYTEA,"
		     " date_done TIMESTAMP WITHOUT TIME ZONE, traceback TEXT,"
		     " name VARCHAR(155), args BYTEA, kwargs BYTEA, worker VARCHAR(155),"
		     " retries INTEGER, queue VARCHAR(155), PRIMARY KEY (id), UNIQUE (task_id));"
		     "CREATE SEQUENCE IF NOT EXISTS %s;"
		     "CREATE TABLE IF NOT EXISTS %s ("
		     " id INTEGER NOT NULL, taskset_id VARCHAR(155), result BYTEA,"
		     " date_done TIMESTAMP WITHOUT TIME ZONE, PRIMARY KEY (id), UNIQUE (taskset_id));",
		     schemas, ts, t, gs, g) < 0)
		goto out;
	if (asprintf(&b->has_ext,
		     "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND"
		     " column_name = 'worker' AND table_schema = COALESCE(NULLIF($2, ''),"
		     " current_schema())") < 0)
		goto out;
	/* a SUCCESS already stored stays (a lost worker's late FAILURE must not replace it) */
	if (asprintf(&b->upsert,
		     "INSERT INTO %s (id, task_id, status, result, date_done, traceback)"
		     " VALUES (nextval('%s'), $1, $2, $3, $4::timestamp, $5)"
		     " ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status,"
		     " result = EXCLUDED.result, date_done = EXCLUDED.date_done,"
		     " traceback = EXCLUDED.traceback WHERE %s.status <> 'SUCCESS'",
		     t, ts, t) < 0)
		goto out;
	if (asprintf(&b->upsert_ext,
		     "INSERT INTO %s (id, task_id, status, result, date_done, traceback, name,"
		     " args, kwargs, worker, retries, queue)"
		     " VALUES (nextval('%s'), $1, $2, $3, $4::timestamp, $5, $6, $7, $8, $9,"
		     " $10::integer, $11)"
		     " ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status,"
		     " result = EXCLUDED.result, date_done = EXCLUDED.date_done,"
		     " traceback = EXCLUDED.traceback, name = EXCLUDED.name, args = EXCLUDED.args,"
		     " kwargs = EXCLUDED.kwargs, worker = EXCLUDED.worker,"
		     " retries = EXCLUDED.retries, queue = EXCLUDED.queue"
		     " WHERE %s.status <> 'SUCCESS'", t, ts, t) < 0)
		goto out;
	if (asprintf(&b->cleanup,
		     "WITH a AS (DELETE FROM %s WHERE date_done < (now() AT TIME ZONE 'utc') -"
		     " make_interval(secs => $1::double precision) RETURNING 1),"
		     " b AS (DELETE FROM %s WHERE date_done < (now() AT TIME ZONE 'utc') -"
		     " make_interval(secs => $1::double precision) RETURNING 1)"
		     " SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)", t, g) < 0)
		goto out;
	b->task_table = strdup(tn);
	b->task_schema = strdup(o->task_schema ? o->task_schema : "");
	rc = b->task_table && b->task_schema ? CW_OK : CW_ENOMEM;
out:
	free(t);
	free(g);
	free(ts);
	free(gs);
	free(qts);
	free(qgs);
	return rc;
}

static void pg_close(struct cw_backend *base);

static void drop(struct pg_backend *b)
{
	if (b->c)
		pq.PQfinish(b->c);
	b->c = NULL;
	b->ready = false;
}

static void quiet(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res; /* NOTICEs of CREATE ... IF NOT EXISTS are expected */
}

static int ensure(struct pg_backend *b, struct cw_error *err)
{
	if (b->c && pq.PQstatus(b->c) != CONNECTION_OK)
		drop(b);
	if (!b->c) {
		b->c = pq.PQconnectdb(b->conninfo);
		if (!b->c || pq.PQstatus(b->c) != CONNECTION_OK) {
			char msg[200];
			snprintf(msg, sizeof(msg), "%s", b->c ? pq.PQerrorMessage(b->c) : "out of memory");
			msg[strcspn(msg, "\n")] = '\0';
			cw_error_set(err, CW_EIO, "cannot connect to result backend %s: %s",
				     b->redacted, msg);
			drop(b);
			return CW_EIO;
		}
		pq.PQsetNoticeReceiver(b->c, quiet, NULL);
	}
	if (b->ready)
		return CW_OK;
	PGresult *r = pq.PQexec(b->c, b->ddl);
	int st = r ? pq.PQresultStatus(r) : PGRES_FATAL_ERROR;
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		cw_error_set(err, CW_EIO, "result backend %s: cannot create the tables: %s",
			     b->redacted, b->c ? pq.PQerrorMessage(b->c) : "?");
		pq.PQclear(r);
		/* the transaction (and its advisory lock) ended with the error */
		drop(b);
		return CW_EIO;
	}
	pq.PQclear(r);
	const char *pv[2] = {b->task_table, b->task_schema};
	r = pq.PQexecParams(b->c, b->has_ext, 2, NULL, pv, NULL, NULL, 0);
	b->ext_cols = r && pq.PQresultStatus(r) == PGRES_TUPLES_OK && pq.PQntuples(r) > 0;
	pq.PQclear(r);
	b->ready = true;
	return CW_OK;
}

static struct cw_backend *pg_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	if (pq_load(err) != CW_OK)
		return NULL;
	struct pg_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	/* db+postgresql[+driver]://rest -> postgresql://rest */
	const char *rest = strstr(o->url, "://");
	if (!rest || strncmp(o->url, "db+postgresql", 13) != 0) {
		cw_error_set(err, CW_EINVAL, "not a db+postgresql:// URL");
		free(b);
		return NULL;
	}
	if (asprintf(&b->conninfo, "postgresql%s", rest) < 0) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		free(b);
		return NULL;
	}
	cw_url_redact(o->url, b->redacted, sizeof(b->redacted));
	b->expires = o->expires;
	b->retry_for = o->retry_for > 0 ? o->retry_for : 60;
	if (build_sql(b, o) != CW_OK) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		pg_close(&b->base);
		return NULL;
	}
	return &b->base;
}

static int pg_store(struct cw_backend *base, const struct cw_result_meta *m, struct cw_error *err)
{
	struct pg_backend *b = (struct pg_backend *)base;
	bool ready = cw_result_ready(m);
	json_t *value;
	char date[40], retries[24];
	size_t plen = 0, alen = 0, klen = 0;
	unsigned char *pickle = NULL;
	char *args = NULL, *kwargs = NULL;
	int rc = CW_EIO;

	/* the value Celery's backend stores: the result, or the exception as a dict */
	if (m->exc_type) {
		/* exc_message is the exception's args: a tuple, as a Python worker's rows have */
		json_t *exc_args = json_is_array(m->exc_args)
					   ? json_incref(m->exc_args)
					   : json_pack("[s]", m->exc_message ? m->exc_message : "");
		pickle = exc_args ? cw_pickle_dumps_exception(m->exc_type, exc_args,
							  m->exc_module ? m->exc_module
									: "builtins",
							  &plen)
			      : NULL;
		json_decref(exc_args);
	} else {
		value = m->result ? json_incref(m->result) : json_null();
		pickle = cw_pickle_dumps(value, &plen);
		json_decref(value);
	}
	if (!pickle) {
		cw_error_set(err, CW_ENOMEM, "out of memory encoding the result");
		return CW_ENOMEM;
	}
	if (ready)
		cw_proto_format_iso8601(m->date_done, date);
	if (m->extended) {
		args = m->args ? cw_json_dumps(m->args, &alen) : NULL;
		kwargs = m->kwargs ? cw_json_dumps(m->kwargs, &klen) : NULL;
	}
	snprintf(retries, sizeof(retries), "%lld", (long long)m->retries);
	double deadline = cw_now() + b->retry_for, delay = 0.05;
	for (int attempt = 0;; attempt++) {
		if (ensure(b, err) == CW_OK) {
			bool ext = m->extended && b->ext_cols;
			const char *vals[11] = {m->task_id, cw_result_status(m), (char *)pickle,
						ready ? date : NULL, m->traceback, m->name, args,
						kwargs, m->worker, retries, m->queue};
			int lens[11] = {0, 0, (int)plen, 0, 0, 0, (int)alen, (int)klen, 0, 0, 0};
			int fmts[11] = {0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0};
			PGresult *r = pq.PQexecParams(b->c, ext ? b->upsert_ext : b->upsert, ext ? 11 : 5, NULL,
						   vals, lens, fmts, 0);
			if (r && pq.PQresultStatus(r) == PGRES_COMMAND_OK) {
				pq.PQclear(r);
				rc = CW_OK;
				break;
			}
			cw_error_set(err, CW_EIO, "result backend %s: %s", b->redacted,
				     pq.PQerrorMessage(b->c));
			err->msg[strcspn(err->msg, "\n")] = '\0';
			pq.PQclear(r);
			if (pq.PQstatus(b->c) == CONNECTION_OK)
				break; /* the server refused the statement: retrying will not help */
			drop(b);
		}
		if (!cw_backend_backoff(attempt, &delay, deadline, b->retry_for, err->msg))
			break;
	}
	free(pickle);
	free(args);
	free(kwargs);
	return rc;
}

/*
 * At worker start, in the master before any child exists: the tables are
 * there before the first result, so a Python client's own create_all()
 * never races a child's DDL.  The connection is closed again (children
 * open their own).
 */
static int pg_prepare(struct cw_backend *base, struct cw_error *err)
{
	struct pg_backend *b = (struct pg_backend *)base;
	int rc = ensure(b, err);
	drop(b);
	return rc;
}

static void pg_reset(struct cw_backend *base)
{
	struct pg_backend *b = (struct pg_backend *)base;
	/*
	 * After fork: the parent's socket must not be used or closed with a
	 * Terminate message by us; libpq has no "forget" call, so leak the
	 * PGconn in the child (one per child, created before fork only if the
	 * master stored something).
	 */
	b->c = NULL;
	b->ready = false;
}

static void pg_close(struct cw_backend *base)
{
	struct pg_backend *b = (struct pg_backend *)base;
	drop(b);
	free(b->conninfo);
	free(b->ddl);
	free(b->has_ext);
	free(b->upsert);
	free(b->upsert_ext);
	free(b->cleanup);
	free(b->task_table);
	free(b->task_schema);
	free(b);
}

/* celery.backend_cleanup: rows whose date_done is older than result_expires. */
static int pg_cleanup(struct cw_backend *base, long *deleted, struct cw_error *err)
{
	struct pg_backend *b = (struct pg_backend *)base;
	char secs[32];

	*deleted = 0;
	if (b->expires <= 0)
		return CW_OK; /* results never expire */
	if (ensure(b, err) != CW_OK)
		return CW_EIO;
	snprintf(secs, sizeof(secs), "%.3f", b->expires);
	const char *v[1] = {secs};
	PGresult *r = pq.PQexecParams(b->c, b->cleanup, 1, NULL, v, NULL, NULL, 0);
	int rc = CW_OK;
	if (r && pq.PQresultStatus(r) == PGRES_TUPLES_OK && pq.PQntuples(r) == 1) {
		*deleted = atol(pq.PQgetvalue(r, 0, 0));
	} else {
		cw_error_set(err, CW_EIO, "result backend %s: cleanup failed: %s", b->redacted,
			     pq.PQerrorMessage(b->c));
		rc = CW_EIO;
	}
	pq.PQclear(r);
	return rc;
}

static int pg_check_url(const char *url, const char *broker_url, struct cw_error *err)
{
	(void)broker_url;
	(void)err;
	return !strncmp(url, "db+postgresql://", 16) || !strncmp(url, "db+postgresql+", 14)
		       ? CW_OK : CW_ENOTFOUND;
}

static int pg_probe_target(const char *url, struct cw_probe_target *t)
{
	return cw_probe_target_from_url(url, "5432", t); /* an accepted connection is all */
}

const struct cw_backend_ops cw_postgres_backend_ops = {
	.scheme = "db+postgresql",
	.listed = true,
	.check_url = pg_check_url,
	.probe_target = pg_probe_target,
	.open = pg_open,
	.store = pg_store,
	.cleanup = pg_cleanup,
	.prepare = pg_prepare,
	.reset = pg_reset,
	.close = pg_close,
};
