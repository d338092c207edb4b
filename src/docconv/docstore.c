/*
 * PostgreSQL document store for docconv.convert (see docstore.h).
 *
 * Correctness against concurrent writers comes from the database: the
 * document table is UNIQUE (sha256, format) and rows go in with
 * INSERT ... ON CONFLICT; a reader that loses the race selects the
 * winner's id.  Tables are created under an advisory lock so workers
 * starting together do not trip over each other's CREATE TABLE.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "docstore.h"

#define DS_LOCK_KEY 8150914    /* pg_advisory_lock key for DDL (part 1 uses 8150913) */
#define DS_MAX_TABLES 16       /* tables with prepared statements on one connection */
#define BATCH_TABLE "cworker_batch_items"

static PGconn *conn;
static char *conn_url;         /* the URL conn was opened with */
static char redacted[512];
static char tables[DS_MAX_TABLES][140];
static int ntables;
static bool batch_ready;

static void __attribute__((format(printf, 3, 4)))
ds_error(struct cw_docstore_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static bool ident_ok(const char *s, size_t n)
{
	if (n == 0 || n > 63 || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') ||
				  s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

int cw_docstore_check_table(const char *table, struct cw_docstore_error *err)
{
	const char *dot = strchr(table, '.');
	bool ok = dot ? ident_ok(table, (size_t)(dot - table)) && ident_ok(dot + 1, strlen(dot + 1))
		      : ident_ok(table, strlen(table));
	if (!ok) {
		ds_error(err, CW_DOCSTORE_EINVAL,
			     "'%.80s' is not a table name: use TABLE or SCHEMA.TABLE made of letters, "
			     "digits and '_' (not starting with a digit, at most 63 each)", table);
		return CW_DOCSTORE_EINVAL;
	}
	return CW_DOCSTORE_OK;
}

void cw_docstore_sha256(const unsigned char *data, size_t len, char hex[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL))
		n = 0;
	for (unsigned int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", i < n ? md[i] : 0);
	hex[64] = '\0';
}

/* "schema"."table" (identifiers already checked: no quotes inside). */
static void quoted(const char *table, char *out, size_t outsz)
{
	const char *dot = strchr(table, '.');
	if (dot)
		snprintf(out, outsz, "\"%.*s\".\"%s\"", (int)(dot - table), table, dot + 1);
	else
		snprintf(out, outsz, "\"%s\"", table);
}

static void quiet(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res; /* NOTICEs of CREATE ... IF NOT EXISTS are expected */
}

void cw_docstore_close(void)
{
	if (conn)
		PQfinish(conn);
	conn = NULL;
	free(conn_url);
	conn_url = NULL;
	ntables = 0;
	batch_ready = false;
}

/* libpq's message, first line only, after prefix. */
static int db_fail(struct cw_docstore_error *err, int code, const char *what)
{
	char msg[200];
	snprintf(msg, sizeof(msg), "%s", conn ? PQerrorMessage(conn) : "out of memory");
	msg[strcspn(msg, "\n")] = '\0';
	ds_error(err, code, "document store %s: %s: %s", redacted, what, msg);
	return code;
}

static int connect_db(const char *url, struct cw_docstore_error *err)
{
	if (conn && (strcmp(conn_url, url) || PQstatus(conn) != CONNECTION_OK))
		cw_docstore_close();
	if (conn)
		return CW_DOCSTORE_OK;
	cw_docstore_redact(url, redacted, sizeof(redacted));
	char *pq = cw_docstore_libpq_url(url);
	if (!pq)
		return cw_docstore_check_url(url, err);
	/* defaults first: parameters in the URL (?connect_timeout=...) override them */
	const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
	const char *vals[] = {"10", "cworker-docstore", pq, NULL};
	conn = PQconnectdbParams(keys, vals, 1);
	free(pq);
	conn_url = strdup(url);
	if (!conn || !conn_url || PQstatus(conn) != CONNECTION_OK) {
		db_fail(err, CW_DOCSTORE_EIO, "cannot connect");
		cw_docstore_close();
		return CW_DOCSTORE_EIO;
	}
	PQsetNoticeReceiver(conn, quiet, NULL);
	return CW_DOCSTORE_OK;
}

static bool ok(PGresult *r)
{
	int st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/*
 * The outcome of a setup statement (consumes r): CW_DOCSTORE_OK, or the error with the
 * connection closed (CW_DOCSTORE_EINVAL: the server refused it, CW_DOCSTORE_EIO: connection lost).
 */
static int checked(PGresult *r, const char *what, struct cw_docstore_error *err)
{
	if (ok(r)) {
		PQclear(r);
		return CW_DOCSTORE_OK;
	}
	int code = PQstatus(conn) == CONNECTION_OK ? CW_DOCSTORE_EINVAL : CW_DOCSTORE_EIO;
	db_fail(err, code, what);
	PQclear(r);
	cw_docstore_close();
	return code;
}

/* Run DDL under a transaction-scoped advisory lock. */
static int run_ddl(const char *sql, const char *what, struct cw_docstore_error *err)
{
	char *full = NULL;
	/*
	 * One PQexec with several statements is one transaction: the lock must
	 * last until it commits, or the next worker's CREATE ... IF NOT EXISTS
	 * misses the uncommitted table and fails on pg_type's unique index.
	 */
	if (asprintf(&full, "SELECT pg_advisory_xact_lock(%d);%s", DS_LOCK_KEY, sql) < 0) {
		ds_error(err, CW_DOCSTORE_ENOMEM, "out of memory");
		return CW_DOCSTORE_ENOMEM;
	}
	PGresult *r = PQexec(conn, full);
	free(full);
	return checked(r, what, err);
}

static int prepare(const char *name, const char *sql, int nparams, const char *what,
		   struct cw_docstore_error *err)
{
	return checked(PQprepare(conn, name, sql, nparams, NULL), what, err);
}

static int ensure_batch(struct cw_docstore_error *err)
{
	if (batch_ready)
		return CW_DOCSTORE_OK;
	int rc = run_ddl("CREATE TABLE IF NOT EXISTS " BATCH_TABLE " ("
			 " batch TEXT NOT NULL, task_id TEXT NOT NULL, source TEXT,"
			 " status TEXT NOT NULL, doc_table TEXT, doc_id BIGINT, error TEXT,"
			 " total BIGINT, started_at TIMESTAMPTZ,"
			 " finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
			 " PRIMARY KEY (batch, task_id));",
			 "cannot create " BATCH_TABLE, err);
	if (rc == CW_DOCSTORE_OK)
		rc = prepare("ds_note",
			     "INSERT INTO " BATCH_TABLE " (batch, task_id, source, status, doc_table,"
			     " doc_id, error, total, started_at) VALUES ($1, $2, $3, $4, $5,"
			     " $6::bigint, $7, $8::bigint, to_timestamp($9::double precision))"
			     " ON CONFLICT (batch, task_id) DO UPDATE SET source = EXCLUDED.source,"
			     " status = EXCLUDED.status, doc_table = EXCLUDED.doc_table,"
			     " doc_id = EXCLUDED.doc_id, error = EXCLUDED.error,"
			     " total = COALESCE(EXCLUDED.total, " BATCH_TABLE ".total),"
			     " started_at = EXCLUDED.started_at, finished_at = now()",
			     9, "cannot prepare the batch statement", err);
	batch_ready = rc == CW_DOCSTORE_OK;
	return rc;
}

static int table_ddl(const char *q, const char *table, struct cw_docstore_error *err)
{
	char *sql = NULL, schema[80] = "", what[200];
	const char *dot = strchr(table, '.');
	if (dot)
		snprintf(schema, sizeof(schema), "CREATE SCHEMA IF NOT EXISTS \"%.*s\";",
			 (int)(dot - table), table);
	if (asprintf(&sql,
		     "%sCREATE TABLE IF NOT EXISTS %s ("
		     " id BIGSERIAL PRIMARY KEY, source TEXT NOT NULL, sha256 CHAR(64) NOT NULL,"
		     " format TEXT NOT NULL, content TEXT NOT NULL, metadata JSONB,"
		     " page_count INTEGER, ocr_pages JSONB, warnings JSONB, batch TEXT, task_id TEXT,"
		     " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (sha256, format));",
		     schema, q) < 0) {
		ds_error(err, CW_DOCSTORE_ENOMEM, "out of memory");
		return CW_DOCSTORE_ENOMEM;
	}
	snprintf(what, sizeof(what), "cannot create table %s", table);
	int rc = run_ddl(sql, what, err);
	free(sql);
	return rc;
}

static int table_statements(const char *q, const char *table, int slot,
			    struct cw_docstore_error *err)
{
	static const char cols[] = "source, sha256, format, content, metadata, page_count,"
				   " ocr_pages, warnings, batch, task_id";
	static const char vals[] = "$1, $2, $3, $4, $5::jsonb, $6::integer, $7::jsonb, $8::jsonb,"
				   " $9, $10";
	char name[32], what[200], *sql[3] = {NULL, NULL, NULL};
	int rc = CW_DOCSTORE_ENOMEM;
	snprintf(what, sizeof(what), "table %s is not a cworker document table", table);
	if (asprintf(&sql[0], "SELECT id FROM %s WHERE sha256 = $1 AND format = $2", q) < 0 ||
	    asprintf(&sql[1], "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (sha256, format)"
		     " DO NOTHING RETURNING id", q, cols, vals) < 0 ||
	    asprintf(&sql[2], "INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (sha256, format)"
		     " DO UPDATE SET source = EXCLUDED.source, content = EXCLUDED.content,"
		     " metadata = EXCLUDED.metadata, page_count = EXCLUDED.page_count,"
		     " ocr_pages = EXCLUDED.ocr_pages, warnings = EXCLUDED.warnings,"
		     " batch = EXCLUDED.batch, task_id = EXCLUDED.task_id, created_at = now()"
		     " RETURNING id", q, cols, vals) < 0) {
		ds_error(err, CW_DOCSTORE_ENOMEM, "out of memory");
		goto out;
	}
	static const char *const kinds[] = {"find", "ins", "upd"};
	static const int nparams[] = {2, 10, 10};
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "ds%d_%s", slot, kinds[i]);
		if ((rc = prepare(name, sql[i], nparams[i], what, err)) != CW_DOCSTORE_OK)
			goto out;
	}
out:
	for (int i = 0; i < 3; i++)
		free(sql[i]);
	return rc;
}

/* Connected, table created and its statements prepared: the slot number, or < 0. */
static int ensure_table(const char *url, const char *table, struct cw_docstore_error *err)
{
	int rc = cw_docstore_check_table(table, err);
	if (rc == CW_DOCSTORE_OK)
		rc = connect_db(url, err);
	if (rc == CW_DOCSTORE_OK)
		rc = ensure_batch(err);
	if (rc != CW_DOCSTORE_OK)
		return rc;
	for (int i = 0; i < ntables; i++)
		if (!strcmp(tables[i], table))
			return i;
	if (ntables == DS_MAX_TABLES) {
		PQclear(PQexec(conn, "DEALLOCATE ALL"));
		ntables = 0;
		batch_ready = false;
		if ((rc = ensure_batch(err)) != CW_DOCSTORE_OK)
			return rc;
	}
	char q[160];
	quoted(table, q, sizeof(q));
	if ((rc = table_ddl(q, table, err)) != CW_DOCSTORE_OK ||
	    (rc = table_statements(q, table, ntables, err)) != CW_DOCSTORE_OK)
		return rc;
	snprintf(tables[ntables], sizeof(tables[ntables]), "%s", table);
	return ntables++;
}

/*
 * Execute prepared statement kind on table's slot; one reconnect and retry
 * when the connection broke.  *res: the result on CW_DOCSTORE_OK.
 */
static int exec_prepared(const char *url, const char *table, const char *kind, int n,
			 const char *const *vals, PGresult **res, struct cw_docstore_error *err)
{
	for (int attempt = 0;; attempt++) {
		char name[32];
		bool had_conn = conn != NULL;
		int slot;
		if (table) {
			slot = ensure_table(url, table, err);
		} else {
			slot = connect_db(url, err);
			if (slot == CW_DOCSTORE_OK)
				slot = ensure_batch(err);
		}
		if (slot < 0) {
			/* a connection that died idle fails its first DDL: one fresh try */
			if (slot == CW_DOCSTORE_EIO && attempt == 0 && had_conn)
				continue;
			return slot;
		}
		if (table)
			snprintf(name, sizeof(name), "ds%d_%s", slot, kind);
		else
			snprintf(name, sizeof(name), "%s", kind);
		PGresult *r = PQexecPrepared(conn, name, n, vals, NULL, NULL, 0);
		if (ok(r)) {
			*res = r;
			return CW_DOCSTORE_OK;
		}
		bool broken = PQstatus(conn) != CONNECTION_OK;
		db_fail(err, broken ? CW_DOCSTORE_EIO : CW_DOCSTORE_EINVAL, table ? table : BATCH_TABLE);
		PQclear(r);
		if (!broken)
			return CW_DOCSTORE_EINVAL;
		cw_docstore_close();
		if (attempt > 0)
			return CW_DOCSTORE_EIO;
	}
}

int cw_docstore_find(const char *url, const char *table, const char *sha256, const char *format,
		     long long *id, struct cw_docstore_error *err)
{
	const char *v[2] = {sha256, format};
	PGresult *r = NULL;
	int rc = exec_prepared(url, table, "find", 2, v, &r, err);
	if (rc != CW_DOCSTORE_OK)
		return rc;
	rc = PQntuples(r) > 0 ? CW_DOCSTORE_OK : CW_DOCSTORE_ENOTFOUND;
	if (rc == CW_DOCSTORE_OK)
		*id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return rc;
}

/* A copy of s[0..len) without NUL bytes: PostgreSQL text cannot hold them. */
static char *without_nul(const char *s, size_t len, size_t *out_len)
{
	char *out = malloc(len + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (s[i])
			*o++ = s[i];
	*o = '\0';
	if (out_len)
		*out_len = (size_t)(o - out);
	return out;
}

/* Strings with U+0000 (a hostile PDF's title) lose it: jsonb refuses \u0000. */
static void scrub(json_t *v)
{
	const char *key;
	json_t *item;
	size_t i;
	if (json_is_string(v) && json_string_length(v) != strlen(json_string_value(v))) {
		size_t n = 0;
		char *clean = without_nul(json_string_value(v), json_string_length(v), &n);
		if (clean)
			json_string_setn(v, clean, n);
		free(clean);
	} else if (json_is_object(v)) {
		json_object_foreach(v, key, item)
			scrub(item);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, item)
			scrub(item);
	}
}

static char *json_text(json_t *v)
{
	if (!v)
		return NULL;
	json_t *copy = json_deep_copy(v);
	scrub(copy);
	char *text = copy ? json_dumps(copy, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(copy);
	return text;
}

int cw_docstore_put(const char *url, const char *table, const struct cw_docstore_doc *d,
		    bool replace, long long *id, bool *existing, struct cw_docstore_error *err)
{
	char pages[24];
	char *meta = json_text(d->metadata), *ocr = json_text(d->ocr_pages),
	     *warn = json_text(d->warnings), *content = without_nul(d->content, d->content_len, NULL);
	PGresult *r = NULL;
	int rc;
	*existing = false;
	if (!content || (d->metadata && !meta) || (d->ocr_pages && !ocr) ||
	    (d->warnings && !warn)) {
		ds_error(err, CW_DOCSTORE_ENOMEM, "out of memory");
		rc = CW_DOCSTORE_ENOMEM;
		goto out;
	}
	snprintf(pages, sizeof(pages), "%d", d->page_count);
	const char *v[10] = {d->source, d->sha256, d->format, content, meta, pages, ocr, warn,
			     d->batch, d->task_id};
	rc = exec_prepared(url, table, replace ? "upd" : "ins", 10, v, &r, err);
	if (rc != CW_DOCSTORE_OK)
		goto out;
	if (PQntuples(r) > 0) {
		*id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	} else {
		/* another writer stored it first: its row is the document */
		*existing = true;
		rc = cw_docstore_find(url, table, d->sha256, d->format, id, err);
		if (rc == CW_DOCSTORE_ENOTFOUND) {
			ds_error(err, CW_DOCSTORE_EIO, "document store %s: the row for %s vanished",
				     redacted, d->sha256);
			rc = CW_DOCSTORE_EIO;
		}
	}
out:
	PQclear(r);
	free(meta);
	free(ocr);
	free(warn);
	free(content);
	return rc;
}

int cw_docstore_note(const char *url, const struct cw_docstore_item *it,
		     struct cw_docstore_error *err)
{
	char doc_id[24], total[24], started[40];
	snprintf(doc_id, sizeof(doc_id), "%lld", it->doc_id);
	snprintf(total, sizeof(total), "%lld", it->total);
	snprintf(started, sizeof(started), "%.6f", it->started);
	const char *v[9] = {it->batch, it->task_id, it->source, it->failed ? "failed" : "done",
			    it->failed ? NULL : it->table, it->failed ? NULL : doc_id,
			    it->failed ? it->error : NULL, it->total >= 0 ? total : NULL, started};
	PGresult *r = NULL;
	int rc = exec_prepared(url, NULL, "ds_note", 9, v, &r, err);
	PQclear(r);
	return rc;
}

/* ---- cworker batch status ------------------------------------------------ */

static void batch_usage(FILE *out)
{
	fprintf(out,
		"Usage: cworker batch status BATCH_ID [--database URL] [--json]\n"
		"Progress of a docconv batch stored with output=\"postgresql:TABLE\":\n"
		"documents done and failed, the batch size (batch_total), documents/s.\n\n"
		"  --database URL   PostgreSQL URL (default: env CWORKER_DATABASE_URL)\n"
		"  --json           One JSON object instead of text\n"
		"  -h, --help       Print this help and exit\n");
}

struct batch_stats {
	long long done, failed, total; /* total < 0: unknown */
	double elapsed;
	json_t *failures;              /* [{source, error}], newest last */
};

static int batch_query(const char *id, struct batch_stats *s, struct cw_docstore_error *err)
{
	const char *v[1] = {id};
	PGresult *r = PQexec(conn, "SELECT to_regclass('" BATCH_TABLE "') IS NOT NULL");
	if (!ok(r))
		goto fail;
	bool exists = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!exists)
		return CW_DOCSTORE_OK;
	r = PQexecParams(conn,
			 "SELECT count(*) FILTER (WHERE status = 'done'),"
			 " count(*) FILTER (WHERE status = 'failed'), max(total),"
			 " COALESCE(EXTRACT(EPOCH FROM max(finished_at) -"
			 " min(COALESCE(started_at, finished_at))), 0)"
			 " FROM " BATCH_TABLE " WHERE batch = $1", 1, NULL, v, NULL, NULL, 0);
	if (!ok(r) || PQntuples(r) != 1)
		goto fail;
	s->done = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	s->failed = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
	if (!PQgetisnull(r, 0, 2))
		s->total = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
	s->elapsed = strtod(PQgetvalue(r, 0, 3), NULL);
	PQclear(r);
	r = PQexecParams(conn,
			 "SELECT source, error FROM " BATCH_TABLE " WHERE batch = $1 AND"
			 " status = 'failed' ORDER BY finished_at LIMIT 100", 1, NULL, v, NULL,
			 NULL, 0);
	if (!ok(r))
		goto fail;
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(s->failures,
				      json_pack("{s:s?,s:s?}", "source",
						PQgetisnull(r, i, 0) ? NULL : PQgetvalue(r, i, 0),
						"error",
						PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1)));
	PQclear(r);
	return CW_DOCSTORE_OK;
fail:
	PQclear(r);
	return db_fail(err, CW_DOCSTORE_EIO, "cannot read the batch");
}

static void batch_print(const char *id, const struct batch_stats *s, bool as_json)
{
	long long finished = s->done + s->failed;
	double rate = s->elapsed > 0 ? (double)finished / s->elapsed : 0;
	if (as_json) {
		json_t *o = json_pack("{s:s,s:I,s:I,s:o,s:o,s:f,s:f,s:O}", "batch", id, "done",
				      (json_int_t)s->done, "failed", (json_int_t)s->failed, "total",
				      s->total >= 0 ? json_integer(s->total) : json_null(),
				      "pending",
				      s->total >= 0 ? json_integer(s->total > finished
								   ? s->total - finished : 0)
						    : json_null(),
				      "elapsed", s->elapsed, "documents_per_second", rate,
				      "failures", s->failures);
		char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
		printf("%s\n", text ? text : "{}");
		free(text);
		json_decref(o);
		return;
	}
	char total[32] = "?";
	if (s->total >= 0)
		snprintf(total, sizeof(total), "%lld", s->total);
	printf("batch %s\n", id);
	printf("done: %lld\nfailed: %lld\ntotal: %s\n", s->done, s->failed, total);
	if (s->total >= 0)
		printf("pending: %lld\n", s->total > finished ? s->total - finished : 0);
	printf("rate: %.2f documents/s (%lld in %.3f s)\n", rate, finished, s->elapsed);
	for (size_t i = 0; i < json_array_size(s->failures); i++) {
		json_t *f = json_array_get(s->failures, i);
		printf("failed: %s: %s\n", json_string_value(json_object_get(f, "source")),
		       json_string_value(json_object_get(f, "error")));
	}
}

int cw_docstore_batch_main(int argc, char **argv)
{
	static const struct option lopts[] = {{"database", required_argument, NULL, 'd'},
					      {"json", no_argument, NULL, 'j'},
					      {"help", no_argument, NULL, 'h'},
					      {NULL, 0, NULL, 0}};
	const char *url = getenv("CWORKER_DATABASE_URL");
	bool as_json = false;
	struct cw_docstore_error err = {0};
	optind = 1;
	opterr = 0;
	for (int ch; (ch = getopt_long(argc, argv, "+:h", lopts, NULL)) != -1;) {
		if (ch == 'd') {
			url = optarg;
		} else if (ch == 'j') {
			as_json = true;
		} else if (ch == 'h') {
			batch_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "cworker batch: error: %s option '%s'\n",
				ch == ':' ? "missing value for" : "unknown", argv[optind - 1]);
			return 64;
		}
	}
	/* getopt_long with "+" stops at the first operand; allow options after it too */
	const char *op = NULL, *id = NULL;
	for (int i = optind; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			as_json = true;
		} else if (!strcmp(argv[i], "--database")) {
			if (i + 1 == argc) {
				fprintf(stderr, "cworker batch: error: missing value for --database\n");
				return 64;
			}
			url = argv[++i];
		} else if (!strncmp(argv[i], "--database=", 11)) {
			url = argv[i] + 11;
		} else if (!op) {
			op = argv[i];
		} else if (!id) {
			id = argv[i];
		} else {
			fprintf(stderr, "cworker batch: error: unexpected argument '%s'\n", argv[i]);
			return 64;
		}
	}
	if (!op || strcmp(op, "status") || !id) {
		batch_usage(stderr);
		return 64;
	}
	if (!url || !*url) {
		fprintf(stderr, "cworker batch: error: no database: pass --database URL or set "
				"CWORKER_DATABASE_URL\n");
		return 64;
	}
	if (cw_docstore_check_url(url, &err) != CW_DOCSTORE_OK) {
		fprintf(stderr, "cworker batch: error: %s\n", err.msg);
		return 64;
	}
	struct batch_stats s = {.total = -1, .failures = json_array()};
	int rc = connect_db(url, &err);
	if (rc == CW_DOCSTORE_OK)
		rc = batch_query(id, &s, &err);
	if (rc == CW_DOCSTORE_OK)
		batch_print(id, &s, as_json);
	else
		fprintf(stderr, "cworker batch: error: %s\n", err.msg);
	json_decref(s.failures);
	cw_docstore_close();
	return rc == CW_DOCSTORE_OK ? 0 : 1;
}
