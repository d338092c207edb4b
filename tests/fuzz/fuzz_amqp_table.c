/*
 * Fuzz target: AMQP field tables as they arrive in a message's headers.
 * rabbitmq-c decodes the wire bytes; cworker turns the table into JSON (the
 * kombu envelope the consumer sees).  Whatever converts must convert back
 * into a table that encodes, decodes again and gives the same JSON text
 * (the publish path, e.g. a retried task's headers).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "broker/amqp_table.h"
#include "protocol/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	amqp_pool_t pool;
	amqp_table_t t;
	struct cw_error err = {0};
	size_t off = 0;
	amqp_bytes_t in = {size, (void *)data};

	init_amqp_pool(&pool, 4096);
	if (amqp_decode_table(in, &pool, &t, &off) != AMQP_STATUS_OK) {
		empty_amqp_pool(&pool);
		return 0;
	}
	json_t *j = cw_amqp_table_to_json(&t, 64, &err);
	if (!j) {
		if (err.code != CW_ELIMIT && err.code != CW_EPROTO && err.code != CW_ENOMEM)
			abort();
		empty_amqp_pool(&pool);
		return 0;
	}
	amqp_pool_t pool2;
	amqp_table_t t2;
	init_amqp_pool(&pool2, 4096);
	if (cw_amqp_table_from_json(j, &pool2, &t2, &err) == CW_OK) {
		size_t cap = 1 << 20, woff = 0;
		void *buf = malloc(cap);
		amqp_bytes_t out = {cap, buf};
		if (buf && amqp_encode_table(out, &t2, &woff) == AMQP_STATUS_OK) {
			amqp_pool_t pool3;
			amqp_table_t t3;
			size_t roff = 0;
			amqp_bytes_t again = {woff, buf};
			init_amqp_pool(&pool3, 4096);
			if (amqp_decode_table(again, &pool3, &t3, &roff) != AMQP_STATUS_OK)
				abort(); /* what we encode must decode */
			json_t *j2 = cw_amqp_table_to_json(&t3, 64, &err);
			char *a = cw_json_dumps(j, NULL), *b = j2 ? cw_json_dumps(j2, NULL) : NULL;
			if (!j2 || !a || !b || strcmp(a, b))
				abort(); /* the JSON form is a fixed point */
			free(a);
			free(b);
			json_decref(j2);
			empty_amqp_pool(&pool3);
		}
		free(buf);
	} else if (err.code != CW_EINVAL && err.code != CW_ENOMEM) {
		abort();
	}
	json_decref(j);
	empty_amqp_pool(&pool2);
	empty_amqp_pool(&pool);
	return 0;
}
