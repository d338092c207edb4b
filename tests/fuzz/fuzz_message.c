/*
 * Fuzz target: bytes as they would sit on a Redis queue go through the
 * consumer's whole decode path (envelope -> peek -> request), decoded
 * arguments are re-encoded and re-parsed, and the raw bytes also go
 * through the JSON and base64 decoders directly.  The task-queue reader,
 * which scans plain envelopes without a tree, must read every input exactly
 * as the tree reader does.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/control.h"
#include "protocol/protocol.h"

#include "../unit/envelope_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct cw_proto_limits lim = {1u << 20, 64};
	const char *buf = (const char *)data;
	struct cw_envelope env;
	struct cw_request req;
	struct cw_error err = {0};
	char *name = NULL, *id = NULL;
	bool scanned;

	if (envelope_readings_differ(buf, size, &lim, &scanned))
		abort();

	if (cw_proto_decode_envelope(buf, size, &lim, &env, &err) == CW_OK) {
		if (cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_OK) {
			free(name);
			free(id);
		}
		if (cw_proto_decode_request(&env, &lim, &req, &err) == CW_OK) {
			size_t n;
			char *txt = cw_json_dumps(req.args, &n);
			if (txt) {
				json_t *again = cw_json_loads(txt, n, &lim, &err);
				/* a value we wrote must parse back */
				if (!again)
					abort();
				char *txt2 = cw_json_dumps(again, NULL);
				if (!txt2 || strcmp(txt, txt2) != 0)
					abort();
				free(txt2);
				json_decref(again);
				free(txt);
			}
			struct cw_result_meta m = {.state = CW_STATE_SUCCESS, .task_id = req.id,
						   .result = req.kwargs, .extended = true,
						   .args = req.args, .kwargs = req.kwargs};
			free(cw_proto_encode_result_meta(&m, NULL));
			/* every signature in the embed becomes a message that decodes back */
			static const char *const keys[] = {"callbacks", "errbacks", "chain"};
			for (size_t k = 0; k < 3; k++) {
				json_t *list = json_object_get(req.embed, keys[k]), *sig;
				size_t i;
				json_array_foreach(list, i, sig) {
					struct cw_sig_apply ap = {.new_id = "id", .new_tag = "tag",
								  .parent_id = req.id,
								  .default_queue = "celery",
								  .now = 1e9};
					struct cw_task_msg tm;
					struct cw_sig_owned own;
					if (cw_proto_sig_to_msg(sig, req.args, &ap, &tm, &own, &err) != CW_OK)
						continue;
					size_t len;
					char *msg = cw_proto_encode_task(&tm, &len);
					struct cw_envelope e2;
					struct cw_request r2;
					if (msg) {
						if (cw_proto_decode_envelope(msg, len, &lim, &e2, &err) != CW_OK)
							abort();
						if (cw_proto_decode_request(&e2, &lim, &r2, &err) == CW_OK)
							cw_request_clear(&r2);
						else if (err.code != CW_ELIMIT)
							abort();
						cw_envelope_clear(&e2);
					}
					free(msg);
					cw_sig_owned_clear(&own);
				}
			}
			double t;
			if (req.eta)
				(void)!cw_proto_parse_iso8601(req.eta, req.utc, &t);
			cw_request_clear(&req);
		}
		struct cw_control ctl;
		if (cw_proto_decode_control(&env, &lim, &ctl, &err) == CW_OK) {
			(void)cw_control_for_me(&ctl, "celery@host");
			cw_control_clear(&ctl);
		}
		cw_envelope_clear(&env);
	}
	json_decref(cw_json_loads(buf, size, &lim, &err));
	if (size < 4096) {
		unsigned char out[4096];
		size_t n;
		(void)!cw_base64_decode(buf, size, out, &n);
	}
	return 0;
}
