/* Result meta as Celery's Redis backend stores it (celery/backends/base.py). */
#include <stdlib.h>

#include "protocol/protocol.h"

const char *cw_state_name(enum cw_state s)
{
	static const char *const names[] = {"PENDING", "RECEIVED", "STARTED", "SUCCESS",
					    "FAILURE", "RETRY",    "REVOKED", "REJECTED"};
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "PENDING";
}

const char *cw_result_status(const struct cw_result_meta *m)
{
	return m->custom_state && *m->custom_state ? m->custom_state : cw_state_name(m->state);
}

bool cw_result_ready(const struct cw_result_meta *m)
{
	return !(m->custom_state && *m->custom_state) &&
	       (m->state == CW_STATE_SUCCESS || m->state == CW_STATE_FAILURE ||
		m->state == CW_STATE_REVOKED);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

char *cw_proto_encode_result_meta(const struct cw_result_meta *m, size_t *len)
{
	json_t *o = json_object(), *result;
	char date[32];
	bool ready = cw_result_ready(m);

	if (!o)
		return NULL;
	if (m->exc_type) {
		result = json_object();
		json_t *msg;
		if (json_is_array(m->exc_args)) {
			msg = json_incref(m->exc_args);
		} else {
			msg = json_array();
			json_array_append_new(msg, json_string(m->exc_message ? m->exc_message : ""));
		}
		json_object_set_new(result, "exc_type", json_string(m->exc_type));
		json_object_set_new(result, "exc_message", msg);
		json_object_set_new(result, "exc_module",
				    json_string(m->exc_module ? m->exc_module : "builtins"));
	} else {
		result = m->result ? json_incref(m->result) : json_null();
	}
	json_object_set_new(o, "status", json_string(cw_result_status(m)));
	json_object_set_new(o, "result", result);
	json_object_set_new(o, "traceback", str_or_null(m->traceback));
	json_object_set_new(o, "children", json_array());
	if (ready)
		cw_proto_format_iso8601(m->date_done, date);
	json_object_set_new(o, "date_done", ready ? json_string(date) : json_null());
	if (m->group_id)
		json_object_set_new(o, "group_id", json_string(m->group_id));
	if (m->parent_id)
		json_object_set_new(o, "parent_id", json_string(m->parent_id));
	if (m->extended) {
		json_object_set_new(o, "name", str_or_null(m->name));
		json_object_set_new(o, "args", m->args ? json_incref(m->args) : json_null());
		json_object_set_new(o, "kwargs", m->kwargs ? json_incref(m->kwargs) : json_null());
		json_object_set_new(o, "worker", str_or_null(m->worker));
		json_object_set_new(o, "retries", json_integer(m->retries));
		json_object_set_new(o, "queue", str_or_null(m->queue));
	}
	json_object_set_new(o, "task_id", json_string(m->task_id ? m->task_id : ""));
	char *txt = cw_json_dumps(o, len);
	json_decref(o);
	return txt;
}
