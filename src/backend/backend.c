/*
 * The one table of result backends, and what is asked of "the backend"
 * without knowing which one it is: open by URL, check a result_backend
 * URL, find where to probe it; the retry backoff every backend shares.
 */
#include "backend/backend.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

extern const struct cw_backend_ops cw_redis_backend_ops;
extern const struct cw_backend_ops cw_rediss_backend_ops;
extern const struct cw_backend_ops cw_sentinel_backend_ops;
#ifdef CW_HAVE_POSTGRES
extern const struct cw_backend_ops cw_postgres_backend_ops;
#endif
#ifdef CW_HAVE_AMQP
extern const struct cw_backend_ops cw_rpc_backend_ops;
#endif

static const struct cw_backend_ops *const backends[] = {
	&cw_redis_backend_ops,
	&cw_rediss_backend_ops,
	&cw_sentinel_backend_ops,
#ifdef CW_HAVE_POSTGRES
	&cw_postgres_backend_ops,
#endif
#ifdef CW_HAVE_AMQP
	&cw_rpc_backend_ops,
#endif
};

/* "redis://..." matches "redis"; "db+postgresql+psycopg2://..." matches "db+postgresql". */
static bool scheme_matches(const char *url, const char *scheme)
{
	size_t n = strcspn(url, ":"), k = strlen(scheme);
	return n >= k && !strncmp(url, scheme, k) && (n == k || url[k] == '+');
}

#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

static const struct cw_backend_ops *find(const char *url)
{
	for (size_t i = 0; i < NBACKENDS; i++)
		if (scheme_matches(url, backends[i]->scheme))
			return backends[i];
	return NULL;
}

/* NULL, "" and "disabled" all mean: results are not stored. */
static bool none(const char *url)
{
	return !url || !*url || !strcmp(url, "disabled");
}

struct cw_backend *cw_backend_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	if (none(o->url))
		return NULL;
	const struct cw_backend_ops *ops = find(o->url);
	if (!ops) {
		cw_error_set(err, CW_EINVAL, "unsupported result backend scheme");
		return NULL;
	}
	struct cw_backend *b = ops->open(o, err);
	if (b)
		b->ops = ops;
	return b;
}

int cw_backend_check_url(const char *url, const char *broker_url, struct cw_error *err)
{
	if (none(url))
		return CW_OK;
	const struct cw_backend_ops *ops = find(url);
	int rc = !ops ? CW_ENOTFOUND
		 : ops->check_url ? ops->check_url(url, broker_url, err) : CW_OK;
	if (rc != CW_ENOTFOUND)
		return rc;
	/* "a://, b:// and c://" over the listed backends */
	char red[512], list[256];
	size_t n = 0, w = 0;
	for (size_t i = 0; i < NBACKENDS; i++)
		n += backends[i]->listed;
	list[0] = '\0';
	for (size_t i = 0, k = 0; i < NBACKENDS && w < sizeof(list); i++) {
		if (!backends[i]->listed)
			continue;
		k++;
		int r = snprintf(list + w, sizeof(list) - w, "%s%s://",
				 k == 1 ? "" : k == n ? " and " : ", ", backends[i]->scheme);
		if (r < 0)
			break;
		w += (size_t)r;
	}
	cw_url_redact(url, red, sizeof(red));
	cw_error_set(err, CW_EINVAL, "unsupported URL '%s' (this build stores results in %s)", red,
		     list);
	return CW_EINVAL;
}

int cw_backend_probe_target(const char *url, struct cw_probe_target *t)
{
	memset(t, 0, sizeof(*t));
	if (none(url) || !strstr(url, "://"))
		return CW_ENOTFOUND;
	const struct cw_backend_ops *ops = find(url);
	return ops && ops->probe_target ? ops->probe_target(url, t) : CW_EINVAL;
}

int cw_probe_target_from_url(const char *url, const char *defport, struct cw_probe_target *t)
{
	const char *p = strstr(url, "://");
	if (!p)
		return CW_EINVAL;
	p += 3;
	size_t alen = strcspn(p, "/?#");
	const char *at = memrchr(p, '@', alen);
	if (at) {
		alen -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	t->host[0] = '\0';
	snprintf(t->port, sizeof(t->port), "%s", defport);
	if (*p == '[') {
		const char *rb = memchr(p, ']', alen);
		if (rb) {
			snprintf(t->host, sizeof(t->host), "%.*s", (int)(rb - p - 1), p + 1);
			if (rb[1] == ':')
				snprintf(t->port, sizeof(t->port), "%.*s",
					 (int)(alen - (size_t)(rb + 2 - p)), rb + 2);
		}
	} else {
		const char *colon = memchr(p, ':', alen);
		size_t hl = colon ? (size_t)(colon - p) : alen;
		snprintf(t->host, sizeof(t->host), "%.*s", (int)(hl < 255 ? hl : 255), p);
		if (colon)
			snprintf(t->port, sizeof(t->port), "%.*s", (int)(alen - hl - 1), colon + 1);
	}
	return t->host[0] ? CW_OK : CW_EINVAL;
}

int cw_backend_store(struct cw_backend *b, const struct cw_result_meta *m, struct cw_error *err)
{
	return b ? b->ops->store(b, m, err) : CW_OK;
}

int cw_backend_chord_part(struct cw_backend *b, const char *gid, int64_t group_index,
			  const char *entry, size_t len, json_t **entries, bool *nested,
			  struct cw_error *err)
{
	*entries = NULL;
	*nested = false;
	if (!b)
		return CW_OK;
	if (!b->ops->chord_part)
		return CW_OK; /* as Celery's base backend: chords are joined by celery.chord_unlock */
	return b->ops->chord_part(b, gid, group_index, entry, len, entries, nested, err);
}

int cw_backend_cleanup(struct cw_backend *b, long *deleted, struct cw_error *err)
{
	*deleted = -1;
	if (!b || !b->ops->cleanup)
		return CW_OK;
	return b->ops->cleanup(b, deleted, err);
}

int cw_backend_prepare(struct cw_backend *b, struct cw_error *err)
{
	return b && b->ops->prepare ? b->ops->prepare(b, err) : CW_OK;
}

void cw_backend_reset(struct cw_backend *b)
{
	if (b)
		b->ops->reset(b);
}

void cw_backend_close(struct cw_backend *b)
{
	if (b)
		b->ops->close(b);
}

/* this process's cap on a store's retries, seconds (< 0: none); see cw_backend_retry_cap */
static double retry_cap = -1;

void cw_backend_retry_cap(double seconds)
{
	retry_cap = seconds;
}

bool cw_backend_backoff(int attempt, double *delay, double deadline, double retry_for,
			const char *why)
{
	double now = cw_now();
	if (now + *delay > deadline)
		return false;
	if (retry_cap >= 0 && now + *delay > deadline - retry_for + retry_cap)
		return false;
	if (attempt == 0)
		cw_log(CW_LOG_WARNING, "backend", "%s; retrying for up to %.0fs", why, retry_for);
	struct timespec ts = {(time_t)*delay, (long)((*delay - floor(*delay)) * 1e9)};
	nanosleep(&ts, NULL);
	*delay = fmin(*delay * 2, 1.0);
	return true;
}
