/*
 * Prometheus metrics of the master (see metrics.h): the task table, the
 * task counters that tasks name themselves, and the exposition text.
 */
#include "http/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runtime histogram upper bounds, seconds (+Inf is implicit). */
static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
				60, 300};
static const char *const bound_text[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
					 "1", "2.5", "5", "10", "30", "60", "300"};
#define NBOUNDS (sizeof(bounds) / sizeof(bounds[0]))

static const char *const state_names[CW_M_NSTATES] = {
	"received", "started", "succeeded", "failed", "retried", "revoked", "rejected"};
static const char *const recycle_names[CW_RECYCLE_N] = {
	"max_tasks", "max_memory", "memory_limit", "time_limit", "terminated", "crash"};

struct tstat {
	char *name;              /* as seen (NULL for "other") */
	char *label;             /* escaped label value */
	size_t label_len;
	uint64_t c[CW_M_NCOUNT];
	uint64_t *cnt;           /* CW_M_MAX_COUNTERS task counters; NULL until one is counted */
	uint64_t hist[NBOUNDS + 1]; /* per bucket, not cumulative; last = over every bound */
	uint64_t hcount;
	double hsum;
	char *hcache;            /* rendered histogram lines, valid unless hdirty */
	size_t hcache_len;
	bool hdirty;
};

/* A task counter family: cworker_<name>_total. */
#define COUNTER_NAME_MAX 32
struct tcounter {
	char name[COUNTER_NAME_MAX];
	char *help;              /* NULL: the generic text */
};

struct qdepth {
	char *label;
	long depth;
};

struct cw_metrics {
	int max_tasks;
	struct tstat *t;         /* t[0..nt) */
	int nt;
	int other;               /* index of "other", -1 until used */
	int *slots;              /* open addressing: index + 1, 0 = empty */
	size_t nslots;
	uint64_t reconnects;
	struct tcounter counters[CW_M_MAX_COUNTERS];
	int ncounters;
	struct qdepth *q;
	int nq;
	char *build_line;
};

/* ---- output buffer ------------------------------------------------------ */

bool cw_mbuf_reserve(struct cw_mbuf *b, size_t n)
{
	if (b->oom)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

void cw_mbuf_put(struct cw_mbuf *b, const char *s, size_t n)
{
	if (!cw_mbuf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void cw_mbuf_puts(struct cw_mbuf *b, const char *s)
{
	cw_mbuf_put(b, s, strlen(s));
}

void cw_mbuf_printf(struct cw_mbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !cw_mbuf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void cw_mbuf_free(struct cw_mbuf *b)
{
	free(b->p);
	*b = (struct cw_mbuf){0};
}

/* Unsigned decimal without printf: the hot path of a scrape. */
static void put_u64(struct cw_mbuf *b, uint64_t v)
{
	char tmp[24];
	int i = (int)sizeof(tmp);
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	cw_mbuf_put(b, tmp + i, sizeof(tmp) - (size_t)i);
}

static void put_i64(struct cw_mbuf *b, long long v)
{
	if (v < 0) {
		cw_mbuf_put(b, "-", 1);
		put_u64(b, (uint64_t)(-(v + 1)) + 1);
	} else {
		put_u64(b, (uint64_t)v);
	}
}

#define PUTS(b, lit) cw_mbuf_put((b), (lit), sizeof(lit) - 1)

/* ---- labels ------------------------------------------------------------- */

/* Length of one well-formed UTF-8 sequence at s (no overlongs, no surrogates), 0 if bad. */
static size_t utf8_seq(const unsigned char *s)
{
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (s[0] >= 0xe0 && s[0] <= 0xef) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))
			return 0;
		return 3;
	}
	if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
			return 0;
		if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

bool cw_metrics_label(const char *str, struct cw_mbuf *out)
{
	const unsigned char *s = (const unsigned char *)str;
	while (*s) {
		size_t n = utf8_seq(s);
		if (!n || (*s < 0x20 && *s != '\n') || *s == 0x7f)
			return false;
		if (*s == '\\')
			PUTS(out, "\\\\");
		else if (*s == '"')
			PUTS(out, "\\\"");
		else if (*s == '\n')
			PUTS(out, "\\n");
		else
			cw_mbuf_put(out, (const char *)s, n);
		s += n;
	}
	return true;
}

/* ---- table -------------------------------------------------------------- */

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

struct cw_metrics *cw_metrics_new(int max_tasks, const char *version, const char *features)
{
	struct cw_metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->max_tasks = max_tasks > 0 ? max_tasks : 1;
	m->other = -1;
	m->nslots = 16;
	while (m->nslots < (size_t)m->max_tasks * 2)
		m->nslots *= 2;
	m->slots = calloc(m->nslots, sizeof(*m->slots));
	m->t = calloc((size_t)m->max_tasks + 1, sizeof(*m->t));
	struct cw_mbuf b = {0};
	PUTS(&b, "cworker_build_info{version=\"");
	cw_metrics_label(version, &b);
	PUTS(&b, "\",features=\"");
	cw_metrics_label(features, &b);
	PUTS(&b, "\"} 1\n");
	m->build_line = b.oom ? NULL : b.p;
	if (!m->slots || !m->t || !m->build_line) {
		if (!m->build_line)
			cw_mbuf_free(&b);
		cw_metrics_free(m);
		return NULL;
	}
	return m;
}

void cw_metrics_free(struct cw_metrics *m)
{
	if (!m)
		return;
	for (int i = 0; m->t && i < m->nt; i++) {
		free(m->t[i].name);
		free(m->t[i].label);
		free(m->t[i].hcache);
		free(m->t[i].cnt);
	}
	for (int i = 0; i < m->ncounters; i++)
		free(m->counters[i].help);
	for (int i = 0; i < m->nq; i++)
		free(m->q[i].label);
	free(m->q);
	free(m->t);
	free(m->slots);
	free(m->build_line);
	free(m);
}

static struct tstat *new_entry(struct cw_metrics *m, const char *name, const struct cw_mbuf *lbl)
{
	struct tstat *t = &m->t[m->nt];
	*t = (struct tstat){.hdirty = true};
	t->name = name ? strdup(name) : NULL;
	t->label = malloc(lbl->len + 1);
	if ((name && !t->name) || !t->label) {
		free(t->name);
		free(t->label);
		return NULL;
	}
	memcpy(t->label, lbl->p ? lbl->p : "", lbl->len);
	t->label[lbl->len] = '\0';
	t->label_len = lbl->len;
	m->nt++;
	return t;
}

static struct tstat *other(struct cw_metrics *m)
{
	if (m->other < 0) {
		struct cw_mbuf l = {.p = "other", .len = 5};
		if (!new_entry(m, NULL, &l))
			return NULL;
		m->other = m->nt - 1;
	}
	return &m->t[m->other];
}

static struct tstat *entry(struct cw_metrics *m, const char *task)
{
	if (!task || !*task || !strcmp(task, "other"))
		return other(m);
	size_t mask = m->nslots - 1, i = hash(task) & mask;
	for (; m->slots[i]; i = (i + 1) & mask) {
		struct tstat *t = &m->t[m->slots[i] - 1];
		if (t->name && !strcmp(t->name, task))
			return t;
	}
	/* keep one entry free for "other" */
	int named = m->nt - (m->other >= 0);
	if (named >= m->max_tasks)
		return other(m);
	struct cw_mbuf l = {0};
	bool ok = cw_metrics_label(task, &l);
	struct tstat *t = ok && !l.oom ? new_entry(m, task, &l) : NULL;
	cw_mbuf_free(&l);
	if (!t)
		return other(m);
	m->slots[i] = m->nt;
	return t;
}

void cw_metrics_task(struct cw_metrics *m, const char *task, enum cw_mcount k, uint64_t n)
{
	if (!m || k >= CW_M_NCOUNT)
		return;
	struct tstat *t = entry(m, task);
	if (t)
		t->c[k] += n;
}

/* ---- task counters ------------------------------------------------------ */

/* Counter names whose family would be one of ours. */
static const char *const builtin_counters[] = {
	"tasks", "task_time_limit_hits", "child_recycles", "broker_reconnects"};

static bool counter_name_ok(const char *name)
{
	size_t n = 0;
	for (; name[n]; n++)
		if (!((name[n] >= 'a' && name[n] <= 'z') || (name[n] >= '0' && name[n] <= '9') ||
		      name[n] == '_'))
			return false;
	if (n == 0 || n >= COUNTER_NAME_MAX)
		return false;
	for (size_t i = 0; i < sizeof(builtin_counters) / sizeof(builtin_counters[0]); i++)
		if (!strcmp(name, builtin_counters[i]))
			return false;
	return true;
}

/* Index of counter name, added when new; -1 if refused or the table is full. */
static int counter_index(struct cw_metrics *m, const char *name)
{
	for (int i = 0; i < m->ncounters; i++)
		if (!strcmp(m->counters[i].name, name))
			return i;
	if (m->ncounters == CW_M_MAX_COUNTERS || !counter_name_ok(name))
		return -1;
	struct tcounter *c = &m->counters[m->ncounters];
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->help = NULL;
	return m->ncounters++;
}

void cw_metrics_task_counter(struct cw_metrics *m, const char *task, const char *counter,
			     uint64_t n)
{
	if (!m || !counter)
		return;
	int k = counter_index(m, counter);
	struct tstat *t = k >= 0 ? entry(m, task) : NULL;
	if (!t)
		return;
	if (!t->cnt && !(t->cnt = calloc(CW_M_MAX_COUNTERS, sizeof(*t->cnt))))
		return;
	t->cnt[k] += n;
}

bool cw_metrics_declare_counter(struct cw_metrics *m, const char *counter, const char *help)
{
	if (!m || !counter)
		return false;
	int k = counter_index(m, counter);
	if (k < 0)
		return false;
	if (!help)
		return true;
	char *h = strdup(help);
	if (!h)
		return false;
	free(m->counters[k].help);
	m->counters[k].help = h;
	return true;
}

void cw_metrics_runtime(struct cw_metrics *m, const char *task, double s)
{
	if (!m)
		return;
	struct tstat *t = entry(m, task);
	if (!t)
		return;
	if (!(s >= 0))
		s = 0;
	size_t i = 0;
	while (i < NBOUNDS && s > bounds[i])
		i++;
	t->hist[i]++;
	t->hcount++;
	t->hsum += s;
	t->hdirty = true;
}

void cw_metrics_reconnect(struct cw_metrics *m)
{
	if (m)
		m->reconnects++;
}

int cw_metrics_task_labels(const struct cw_metrics *m)
{
	return m ? m->nt : 0;
}

void cw_metrics_queue_depth(struct cw_metrics *m, const char *queue, long depth)
{
	if (!m)
		return;
	struct cw_mbuf l = {0};
	if (!cw_metrics_label(queue, &l) || l.oom) {
		cw_mbuf_free(&l);
		return;
	}
	for (int i = 0; i < m->nq; i++)
		if (!strcmp(m->q[i].label, l.p ? l.p : "")) {
			cw_mbuf_free(&l);
			if (depth >= 0) {
				m->q[i].depth = depth;
			} else {
				free(m->q[i].label);
				m->q[i] = m->q[--m->nq];
			}
			return;
		}
	if (depth < 0 || m->nq >= 4096) {
		cw_mbuf_free(&l);
		return;
	}
	struct qdepth *q = realloc(m->q, (size_t)(m->nq + 1) * sizeof(*q));
	if (!q) {
		cw_mbuf_free(&l);
		return;
	}
	m->q = q;
	m->q[m->nq].label = l.p ? l.p : strdup("");
	m->q[m->nq].depth = depth;
	if (m->q[m->nq].label)
		m->nq++;
}

/* ---- rendering ---------------------------------------------------------- */

static void family(struct cw_mbuf *b, const char *name, const char *type, const char *help)
{
	PUTS(b, "# HELP ");
	cw_mbuf_puts(b, name);
	cw_mbuf_put(b, " ", 1);
	cw_mbuf_puts(b, help);
	PUTS(b, "\n# TYPE ");
	cw_mbuf_puts(b, name);
	cw_mbuf_put(b, " ", 1);
	cw_mbuf_puts(b, type);
	cw_mbuf_put(b, "\n", 1);
}

static void task_line(struct cw_mbuf *b, const char *prefix, size_t plen, const struct tstat *t,
		      const char *suffix, size_t slen, uint64_t v)
{
	cw_mbuf_put(b, prefix, plen);
	cw_mbuf_put(b, t->label, t->label_len);
	cw_mbuf_put(b, suffix, slen);
	put_u64(b, v);
	cw_mbuf_put(b, "\n", 1);
}

static void render_hist(struct tstat *t)
{
	static const char pre[] = "cworker_task_runtime_seconds_bucket{task=\"";
	struct cw_mbuf b = {0};
	uint64_t cum = 0;
	for (size_t i = 0; i <= NBOUNDS; i++) {
		cum += t->hist[i];
		PUTS(&b, pre);
		cw_mbuf_put(&b, t->label, t->label_len);
		PUTS(&b, "\",le=\"");
		cw_mbuf_puts(&b, i < NBOUNDS ? bound_text[i] : "+Inf");
		PUTS(&b, "\"} ");
		put_u64(&b, cum);
		cw_mbuf_put(&b, "\n", 1);
	}
	PUTS(&b, "cworker_task_runtime_seconds_sum{task=\"");
	cw_mbuf_put(&b, t->label, t->label_len);
	cw_mbuf_printf(&b, "\"} %.9g\n", t->hsum);
	task_line(&b, "cworker_task_runtime_seconds_count{task=\"",
		  sizeof("cworker_task_runtime_seconds_count{task=\"") - 1, t, "\"} ", 3, t->hcount);
	if (b.oom) {
		cw_mbuf_free(&b);
		return;
	}
	free(t->hcache);
	t->hcache = b.p;
	t->hcache_len = b.len;
	t->hdirty = false;
}

static void render_counter(const struct cw_metrics *m, int k, struct cw_mbuf *b)
{
	const struct tcounter *c = &m->counters[k];
	char name[64], pre[80], help[96];
	int plen = snprintf(pre, sizeof(pre), "cworker_%s_total{task=\"", c->name);
	snprintf(name, sizeof(name), "cworker_%s_total", c->name);
	snprintf(help, sizeof(help), "Counter \"%s\" reported by successful tasks, by task name.",
		 c->name);
	family(b, name, "counter", c->help ? c->help : help);
	for (int i = 0; i < m->nt; i++)
		if (m->t[i].cnt && m->t[i].cnt[k])
			task_line(b, pre, (size_t)plen, &m->t[i], "\"} ", 3, m->t[i].cnt[k]);
}

static void gauge(struct cw_mbuf *b, const char *name, const char *help, long long v)
{
	family(b, name, "gauge", help);
	cw_mbuf_puts(b, name);
	cw_mbuf_put(b, " ", 1);
	put_i64(b, v);
	cw_mbuf_put(b, "\n", 1);
}

void cw_metrics_render(struct cw_metrics *m, const struct cw_metrics_sample *s,
		       struct cw_mbuf *b)
{
	family(b, "cworker_build_info", "gauge", "cworker version and the optional features built in.");
	cw_mbuf_puts(b, m->build_line);

	family(b, "cworker_tasks_total", "counter",
	       "Task messages by task name and what happened to them.");
	static const char tpre[] = "cworker_tasks_total{task=\"";
	for (int k = 0; k < CW_M_NSTATES; k++) {
		char suf[48];
		int n = snprintf(suf, sizeof(suf), "\",state=\"%s\"} ", state_names[k]);
		for (int i = 0; i < m->nt; i++)
			task_line(b, tpre, sizeof(tpre) - 1, &m->t[i], suf, (size_t)n, m->t[i].c[k]);
	}

	family(b, "cworker_task_time_limit_hits_total", "counter",
	       "Soft and hard time limits reached, by task name.");
	static const char lpre[] = "cworker_task_time_limit_hits_total{task=\"";
	for (int i = 0; i < m->nt; i++) {
		const struct tstat *t = &m->t[i];
		if (!t->c[CW_M_SOFT_LIMIT] && !t->c[CW_M_HARD_LIMIT])
			continue;
		task_line(b, lpre, sizeof(lpre) - 1, t, "\",limit=\"soft\"} ", 16, t->c[CW_M_SOFT_LIMIT]);
		task_line(b, lpre, sizeof(lpre) - 1, t, "\",limit=\"hard\"} ", 16, t->c[CW_M_HARD_LIMIT]);
	}

	for (int k = 0; k < m->ncounters; k++)
		render_counter(m, k, b);

	family(b, "cworker_task_runtime_seconds", "histogram",
	       "Run time of finished tasks in the pool, by task name.");
	for (int i = 0; i < m->nt; i++) {
		struct tstat *t = &m->t[i];
		if (!t->hcount)
			continue;
		if (t->hdirty)
			render_hist(t);
		if (!t->hdirty)
			cw_mbuf_put(b, t->hcache, t->hcache_len);
	}

	gauge(b, "cworker_task_labels", "Distinct task label values in use (capped; the rest is \"other\").",
	      m->nt);
	gauge(b, "cworker_reserved_messages",
	      "Prefetched messages held by the worker and not started yet.", s->reserved);
	gauge(b, "cworker_eta_messages", "Messages held until their ETA or countdown.", s->eta);

	int busy = 0;
	long total_rss = 0;
	for (int i = 0; i < s->nchildren; i++) {
		busy += s->children[i].busy;
		total_rss += s->children[i].rss_kib;
	}
	family(b, "cworker_children", "gauge", "Pool processes by state.");
	PUTS(b, "cworker_children{state=\"busy\"} ");
	put_i64(b, busy);
	PUTS(b, "\ncworker_children{state=\"idle\"} ");
	put_i64(b, s->nchildren - busy);
	cw_mbuf_put(b, "\n", 1);

	family(b, "cworker_child_recycles_total", "counter",
	       "Pool processes replaced, by reason.");
	for (int r = 0; r < CW_RECYCLE_N; r++) {
		PUTS(b, "cworker_child_recycles_total{reason=\"");
		cw_mbuf_puts(b, recycle_names[r]);
		PUTS(b, "\"} ");
		put_i64(b, s->recycles[r]);
		cw_mbuf_put(b, "\n", 1);
	}

	family(b, "cworker_child_rss_bytes", "gauge", "Resident set size of each pool process.");
	for (int i = 0; i < s->nchildren; i++) {
		PUTS(b, "cworker_child_rss_bytes{slot=\"");
		put_i64(b, s->children[i].slot);
		PUTS(b, "\",pid=\"");
		put_i64(b, s->children[i].pid);
		PUTS(b, "\"} ");
		put_i64(b, (long long)s->children[i].rss_kib * 1024);
		cw_mbuf_put(b, "\n", 1);
	}
	gauge(b, "cworker_children_rss_bytes", "Resident set size of all pool processes together.",
	      (long long)total_rss * 1024);
	gauge(b, "cworker_master_rss_bytes", "Resident set size of the master process.",
	      (long long)s->master_rss_kib * 1024);

	gauge(b, "cworker_broker_up", "1 while the broker connection is up.", s->broker_up);
	family(b, "cworker_broker_reconnects_total", "counter",
	       "Times the broker connection came back after a loss.");
	PUTS(b, "cworker_broker_reconnects_total ");
	put_u64(b, m->reconnects);
	cw_mbuf_put(b, "\n", 1);
	gauge(b, "cworker_backend_up",
	      "1 while the result backend answers (or none is configured); probed on a timer.",
	      s->backend_up || !s->backend_configured);

	family(b, "cworker_queue_depth", "gauge",
	       "Messages waiting in each consumed queue (all priorities), sampled on a timer.");
	for (int i = 0; i < m->nq; i++) {
		PUTS(b, "cworker_queue_depth{queue=\"");
		cw_mbuf_puts(b, m->q[i].label);
		PUTS(b, "\"} ");
		put_i64(b, m->q[i].depth);
		cw_mbuf_put(b, "\n", 1);
	}
}
