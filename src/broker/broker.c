#include <string.h>

#include "broker/broker.h"

extern const struct cw_broker_ops cw_redis_broker_ops;
#ifdef CW_HAVE_AMQP
extern const struct cw_broker_ops cw_amqp_broker_ops;
#endif

const struct cw_broker_ops *cw_broker_lookup(const char *url)
{
	static const struct cw_broker_ops *const all[] = {
		&cw_redis_broker_ops,
#ifdef CW_HAVE_AMQP
		&cw_amqp_broker_ops,
#endif
	};
	size_t n = strcspn(url, ":");
#ifdef CW_HAVE_AMQP
	/* amqps:// is the same transport over TLS; pyamqp:// is Celery's name for it */
	if ((n == 5 && !strncmp(url, "amqps", 5)) || (n == 6 && !strncmp(url, "pyamqp", 6)))
		return &cw_amqp_broker_ops;
#endif
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strlen(all[i]->scheme) == n && !strncmp(url, all[i]->scheme, n))
			return all[i];
	return NULL;
}
