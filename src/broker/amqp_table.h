/*
 * AMQP 0-9-1 field tables <-> JSON, the way py-amqp maps them to Python
 * values (so Celery's task headers survive the trip both ways):
 *
 *   void <-> null, boolean <-> bool, any integer kind <-> integer (u64
 *   above INT64_MAX as a bigint), f32/f64 <-> real, decimal -> real,
 *   timestamp -> integer seconds, long string <-> string (bytes that are
 *   not UTF-8 become null), array <-> array, table <-> object.
 *
 * Integers are written the way py-amqp writes them: 'I' (int32) when they
 * fit, else 'l' (int64); bigints beyond int64 are refused.
 */
#ifndef CW_AMQP_TABLE_H
#define CW_AMQP_TABLE_H

#include <amqp.h>
#include <jansson.h>

#include "util/err.h"

/* JSON object for t; nesting deeper than max_depth is refused.  NULL on error. */
json_t *cw_amqp_table_to_json(const amqp_table_t *t, size_t max_depth, struct cw_error *err);

/*
 * Fill *t from a JSON object, allocating from pool (freed with the pool).
 * CW_EINVAL for values that have no AMQP form.
 */
int cw_amqp_table_from_json(json_t *obj, amqp_pool_t *pool, amqp_table_t *t,
			    struct cw_error *err) CW_MUST_CHECK;

#endif
