/*
 * Fuzz target: bytes as they would sit in celery_taskmeta.result go through
 * cw_pickle_loads; whatever loads must dump and load back to the same value,
 * and dumping is a fixed point (dumps(loads(dumps(v))) == dumps(v)).  The
 * raw bytes also go through the JSON parser, and any JSON value parsed must
 * pickle into bytes that load back.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * v came from a parser under lim: its pickle loads back and repickles to the
 * same bytes; same_text: the value also prints the same (not for values from
 * cw_json_loads, whose bigints may carry leading zeros that an int drops).
 */
static void check_roundtrip(const json_t *v, const struct cw_proto_limits *lim, bool same_text)
{
	struct cw_error err = {0};
	size_t n, n2;
	unsigned char *p = cw_pickle_dumps(v, &n);

	/* only ENOMEM or over 512 levels (lim->max_depth is 64) may fail */
	if (!p)
		abort();
	json_t *back = cw_pickle_loads(p, n, lim, &err);
	if (!back) {
		/* a pickle can be larger than the JSON text it came from */
		if (err.code != CW_ELIMIT && err.code != CW_ENOMEM)
			abort();
		free(p);
		return;
	}
	char *t1 = same_text ? cw_json_dumps(v, NULL) : NULL;
	char *t2 = same_text ? cw_json_dumps(back, NULL) : NULL;
	if (t1 && t2 && strcmp(t1, t2) != 0)
		abort();
	unsigned char *p2 = cw_pickle_dumps(back, &n2);
	if (p2 && (n2 != n || memcmp(p, p2, n) != 0))
		abort();
	free(t1);
	free(t2);
	free(p2);
	json_decref(back);
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct cw_proto_limits lim = {1u << 20, 64};
	struct cw_error err = {0};
	json_t *v = cw_pickle_loads(data, size, &lim, &err);

	if (v) {
		check_roundtrip(v, &lim, true);
		json_decref(v);
	} else if (err.code != CW_EDECODE && err.code != CW_ELIMIT && err.code != CW_ENOMEM) {
		abort();
	}
	v = cw_json_loads((const char *)data, size, &lim, &err);
	if (v) {
		check_roundtrip(v, &lim, false);
		json_decref(v);
	}
	return 0;
}
