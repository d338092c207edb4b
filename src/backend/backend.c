#include "backend/backend.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "loop/loop.h"
#include "util/log.h"

extern const struct cw_backend_ops cw_redis_backend_ops;
#ifdef CW_HAVE_POSTGRES
extern const struct cw_backend_ops cw_postgres_backend_ops;
#endif
#ifdef CW_HAVE_AMQP
extern const struct cw_backend_ops cw_rpc_backend_ops;
#endif

static const struct cw_backend_ops *const backends[] = {
	&cw_redis_backend_ops,
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

struct cw_backend *cw_backend_open(const struct cw_backend_opts *o, struct cw_error *err)
{
	if (!o->url || !*o->url || !strcmp(o->url, "disabled"))
		return NULL;
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (scheme_matches(o->url, backends[i]->scheme)) {
			struct cw_backend *b = backends[i]->open(o, err);
			if (b)
				b->ops = backends[i];
			return b;
		}
	cw_error_set(err, CW_EINVAL, "unsupported result backend scheme");
	return NULL;
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

bool cw_backend_backoff(int attempt, double *delay, double deadline, double retry_for,
			const char *why)
{
	if (cw_now() + *delay > deadline)
		return false;
	if (attempt == 0)
		cw_log(CW_LOG_WARNING, "backend", "%s; retrying for up to %.0fs", why, retry_for);
	struct timespec ts = {(time_t)*delay, (long)((*delay - floor(*delay)) * 1e9)};
	nanosleep(&ts, NULL);
	*delay = fmin(*delay * 2, 1.0);
	return true;
}
