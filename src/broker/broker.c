/*
 * The one table of transports, and what is asked of "the broker" without
 * knowing which one it is: pick by URL scheme, check a --broker URL, name
 * the transport, describe it for stats.  A new transport is one file and
 * one row below.
 */
#include "broker/broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/url.h"

extern const struct cw_broker_ops cw_redis_broker_ops;
#ifdef CW_HAVE_AMQP
extern const struct cw_broker_ops cw_amqp_broker_ops;
#endif
extern const struct cw_broker_ops cw_null_broker_ops;

static const struct cw_broker_ops *const transports[] = {
	&cw_redis_broker_ops,
#ifdef CW_HAVE_AMQP
	&cw_amqp_broker_ops,
#endif
	&cw_null_broker_ops,
};
#define NTRANSPORTS (sizeof(transports) / sizeof(transports[0]))

static const struct cw_broker_ops *find(const char *scheme, size_t n)
{
	for (size_t i = 0; i < NTRANSPORTS; i++)
		for (const char *const *s = transports[i]->url_schemes; s && *s; s++)
			if (strlen(*s) == n && !strncmp(scheme, *s, n))
				return transports[i];
	return NULL;
}

const struct cw_broker_ops *cw_broker_lookup(const char *url)
{
	return url ? find(url, strcspn(url, ":")) : NULL;
}

const char *cw_broker_url_transport(const char *url)
{
	const struct cw_broker_ops *ops = cw_broker_lookup(url);
	return ops ? ops->scheme : NULL;
}

/* "a://, b:// and c://": the listed schemes (all of them with every_scheme). */
static void scheme_list(char *out, size_t outsz, bool every_scheme)
{
	const char *names[32] = {NULL};
	size_t n = 0, w = 0;

	for (size_t i = 0; i < NTRANSPORTS; i++) {
		int k = 0;
		for (const char *const *s = transports[i]->url_schemes; s && *s; s++, k++)
			if ((every_scheme || k < transports[i]->listed) && n < 32)
				names[n++] = *s;
	}
	out[0] = '\0';
	for (size_t i = 0; i < n && w < outsz; i++) {
		const char *sep = i == 0 ? "" : i + 1 == n && !every_scheme ? " and " : ", ";
		int r = snprintf(out + w, outsz - w, "%s%s://", sep, names[i]);
		if (r < 0)
			break;
		w += (size_t)r;
	}
}

struct cw_broker *cw_broker_open(struct cw_loop *loop, const struct cw_broker_opts *o,
				 const struct cw_broker_handler *h, struct cw_error *err)
{
	const struct cw_broker_ops *ops = cw_broker_lookup(o->url);
	if (!ops) {
		char have[256];
		scheme_list(have, sizeof(have), true);
		cw_error_set(err, CW_EINVAL,
			     "unsupported broker URL scheme '%.*s' (this build has %s)",
			     o->url ? (int)strcspn(o->url, ":") : 0, o->url ? o->url : "", have);
		return NULL;
	}
	struct cw_broker *b = ops->open(loop, o, h, err);
	if (b)
		b->ops = ops;
	return b;
}

int cw_broker_check_url(const char *url, struct cw_error *err)
{
	struct cw_url u;
	const struct cw_broker_ops *ops = NULL;
	char first[2048];

	/* a list (sentinel://a;sentinel://b) is its transport's to check: its first URL picks it */
	snprintf(first, sizeof(first), "%.*s", (int)strcspn(url, ";?"), url);
	if (cw_url_parse(first, &u, err) == CW_OK)
		ops = find(u.scheme, strlen(u.scheme));
	if (!ops || ops->listed == 0) {
		char red[512], speaks[256];
		cw_url_redact(url, red, sizeof(red));
		scheme_list(speaks, sizeof(speaks), false);
		cw_error_set(err, CW_EINVAL, "unsupported URL '%s' (this build speaks %s)", red,
			     speaks);
		return CW_EINVAL;
	}
	return ops->check_url ? ops->check_url(url, err) : CW_OK;
}

const char *cw_broker_transport(const struct cw_broker *b)
{
	return b->ops->scheme;
}

json_t *cw_broker_info(struct cw_broker *b)
{
	json_t *info = b->ops->info ? b->ops->info(b) : NULL;
	return info ? info : json_object();
}

void cw_delivery_free(struct cw_delivery *d)
{
	if (!d)
		return;
	cw_envelope_clear(&d->env);
	free(d->raw);
	free(d->queue);
	free(d->tag);
	free(d);
}
