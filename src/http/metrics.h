/*
 * Prometheus metrics of the master: per-task counters and runtime
 * histograms kept in a bounded table (past max_tasks names, or for names
 * that are not clean UTF-8, everything is counted under task="other"),
 * plus gauges the caller samples at scrape time.  Rendering writes the
 * text exposition format 0.0.4; each task's histogram block is cached
 * until that task changes, so a scrape costs little more than a copy.
 * Single threaded (the master's loop); no I/O.
 */
#ifndef CW_METRICS_H
#define CW_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pool/pool.h"

enum cw_mcount {
	CW_M_RECEIVED, CW_M_STARTED, CW_M_SUCCEEDED, CW_M_FAILED, CW_M_RETRIED, CW_M_REVOKED,
	CW_M_REJECTED,          /* the tasks_total{state=...} family, in this order */
	CW_M_SOFT_LIMIT, CW_M_HARD_LIMIT,
	CW_M_NCOUNT
};
#define CW_M_NSTATES (CW_M_REJECTED + 1)
/* Distinct task counter names (cw_task_count); further names are not exported. */
#define CW_M_MAX_COUNTERS 16

/* Growable output buffer. */
struct cw_mbuf {
	char *p;
	size_t len, cap;
	bool oom;               /* an append failed: the text is incomplete */
};
/* Room for n more bytes; false (and b->oom) when memory ran out. */
bool cw_mbuf_reserve(struct cw_mbuf *b, size_t n);
void cw_mbuf_put(struct cw_mbuf *b, const char *s, size_t n);
void cw_mbuf_puts(struct cw_mbuf *b, const char *s);
void cw_mbuf_printf(struct cw_mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cw_mbuf_free(struct cw_mbuf *b);

/* What the caller knows at scrape time. */
struct cw_metrics_child {
	int slot;
	pid_t pid;
	long rss_kib;
	bool busy;
};
struct cw_metrics_sample {
	long reserved;          /* prefetched, unstarted messages (ready + rate-limited) */
	long eta;               /* messages held for their ETA/countdown */
	long running;
	const struct cw_metrics_child *children;
	int nchildren;
	long master_rss_kib;
	long recycles[CW_RECYCLE_N];   /* pool processes replaced, by reason */
	bool broker_up, backend_up, backend_configured;
};

struct cw_metrics;

/* max_tasks: distinct task labels before names go to "other" (>= 1). */
struct cw_metrics *cw_metrics_new(int max_tasks, const char *version, const char *features);
void cw_metrics_free(struct cw_metrics *m);

/* Count n events of kind k for task name (NULL or "" = "other"). NULL m: no-op. */
void cw_metrics_task(struct cw_metrics *m, const char *task, enum cw_mcount k, uint64_t n);
/*
 * Add n to the task counter named counter for task name: rendered as the
 * family cworker_<counter>_total{task="..."}.  Names are 1..31 characters of
 * [a-z0-9_] and must not clash with a built-in family; others are ignored.
 * NULL m: no-op.
 */
void cw_metrics_task_counter(struct cw_metrics *m, const char *task, const char *counter,
			     uint64_t n);
/*
 * Give a task counter its HELP text and render its family from now on, even
 * before anything is counted (families of undeclared counters appear at their
 * first count, with a generic HELP).  False if the name is refused or memory ran out.
 */
bool cw_metrics_declare_counter(struct cw_metrics *m, const char *counter, const char *help);
/* A task ran for seconds (histogram). */
void cw_metrics_runtime(struct cw_metrics *m, const char *task, double seconds);
void cw_metrics_reconnect(struct cw_metrics *m);
/* Latest sampled depth of a consumed queue (< 0: forget the queue). */
void cw_metrics_queue_depth(struct cw_metrics *m, const char *queue, long depth);
/* Distinct task labels in use (including "other" once used). */
int cw_metrics_task_labels(const struct cw_metrics *m);

/* Append the whole exposition text to out. */
void cw_metrics_render(struct cw_metrics *m, const struct cw_metrics_sample *s,
		       struct cw_mbuf *out);

/* Escape a Prometheus label value into out; false if s is not clean UTF-8. */
bool cw_metrics_label(const char *s, struct cw_mbuf *out);

#endif
