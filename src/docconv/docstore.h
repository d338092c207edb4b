/*
 * The PostgreSQL document store behind docconv.convert(output="postgresql:TABLE"):
 * one row per converted document, unique on (sha256, format), and a
 * cworker_batch_items table recording each task of a batch (done or failed)
 * for `cworker batch status`.
 *
 * One connection per process (pool child), opened on first use, statements
 * prepared once per connection and table, one reconnect when the server
 * went away.  Passwords never appear in messages (URLs are redacted).
 */
#ifndef CW_DOCSTORE_H
#define CW_DOCSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#define CW_DOCSTORE_PREFIX "postgresql:"

/*
 * The store's own outcome codes (docconv is a module and does not see the
 * worker's util/err.h); the values match the worker's CW_* codes of the
 * same meaning, so they read the same in logs.
 */
enum cw_docstore_rc {
	CW_DOCSTORE_OK = 0,
	CW_DOCSTORE_ENOMEM = -1,
	CW_DOCSTORE_EIO = -4,        /* database unreachable, connection lost */
	CW_DOCSTORE_EINVAL = -5,     /* bad name or URL, statement refused by the server */
	CW_DOCSTORE_ENOTFOUND = -10,
};

/* What went wrong; msg is always NUL-terminated and never carries a password. */
struct cw_docstore_error {
	int code;
	char msg[256];
};

#define CW_DOCSTORE_MUST_CHECK __attribute__((warn_unused_result))

/* One converted document. */
struct cw_docstore_doc {
	const char *source;
	const char *sha256;        /* 64 lowercase hex digits */
	const char *format;
	const char *content;
	size_t content_len;
	json_t *metadata, *ocr_pages, *warnings;
	int page_count;
	const char *batch, *task_id; /* may be NULL */
};

/* One task of a batch, done or failed. */
struct cw_docstore_item {
	const char *batch, *task_id, *source;
	bool failed;
	const char *table;         /* done: where the document is */
	long long doc_id;
	const char *error;         /* failed: "ExcType: message" */
	long long total;           /* batch size the producer announced; < 0 = not given */
	double started;            /* Unix time the task started */
};

/* TABLE or SCHEMA.TABLE of plain identifiers ([A-Za-z_][A-Za-z0-9_]*, <= 63 bytes each). */
int cw_docstore_check_table(const char *table,
			    struct cw_docstore_error *err) CW_DOCSTORE_MUST_CHECK;
/* db+postgresql://, postgresql:// or postgres:// URL; CW_DOCSTORE_EINVAL otherwise. */
int cw_docstore_check_url(const char *url,
			  struct cw_docstore_error *err) CW_DOCSTORE_MUST_CHECK;
/*
 * postgresql://... for libpq from any accepted spelling (malloc'd; NULL when
 * not one of them), and the URL for messages with its passwords masked.
 */
char *cw_docstore_libpq_url(const char *url);
void cw_docstore_redact(const char *url, char *out, size_t outsz);
/* Hex SHA-256 of data into hex[65]. */
void cw_docstore_sha256(const unsigned char *data, size_t len, char hex[65]);

/*
 * The id of the stored document with this sha256 and format: CW_DOCSTORE_OK
 * with *id, CW_DOCSTORE_ENOTFOUND when there is none, CW_DOCSTORE_EIO
 * (database unreachable or refusing), CW_DOCSTORE_EINVAL (table unusable).
 */
int cw_docstore_find(const char *url, const char *table, const char *sha256, const char *format,
		     long long *id, struct cw_docstore_error *err) CW_DOCSTORE_MUST_CHECK;
/*
 * Store d.  When a row with the same (sha256, format) exists: replace=false
 * keeps it (*existing = true, *id = its id); replace=true overwrites its
 * content and returns its id (*existing = false).  Safe against concurrent
 * writers: the UNIQUE constraint decides.
 */
int cw_docstore_put(const char *url, const char *table, const struct cw_docstore_doc *d,
		    bool replace, long long *id, bool *existing,
		    struct cw_docstore_error *err) CW_DOCSTORE_MUST_CHECK;
/* Record one task of a batch (an upsert on (batch, task_id): a redelivery counts once). */
int cw_docstore_note(const char *url, const struct cw_docstore_item *it,
		     struct cw_docstore_error *err) CW_DOCSTORE_MUST_CHECK;

/* `cworker batch status ID --database URL [--json]`: argv[0] is "batch". Exit status. */
int cw_docstore_batch_main(int argc, char **argv);

/* Close this process's connection. */
void cw_docstore_close(void);

#endif
