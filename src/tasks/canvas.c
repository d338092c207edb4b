/* Callbacks, errbacks, chains and chords after a task ends (see canvas.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "tasks/canvas.h"
#include "util/log.h"
#include "util/uuid.h"

/* ---- outbox ------------------------------------------------------------ */

static bool grow(struct cw_outbox *o, size_t need)
{
	if (o->len + need <= o->cap)
		return true;
	size_t cap = o->cap ? o->cap : 1024;
	while (cap < o->len + need)
		cap *= 2;
	char *p = realloc(o->buf, cap);
	if (!p)
		return false;
	o->buf = p;
	o->cap = cap;
	return true;
}

static void put_field(struct cw_outbox *o, const void *p, size_t n)
{
	uint32_t l = (uint32_t)n;
	memcpy(o->buf + o->len, &l, 4);
	memcpy(o->buf + o->len + 4, p, n);
	o->len += 4 + n;
}

int cw_outbox_add(struct cw_outbox *o, const char *queue, const char *tag, int priority,
		  const char *env, size_t len)
{
	char prio[12];
	int plen = snprintf(prio, sizeof(prio), "%d", priority);
	size_t ql = strlen(queue), tl = strlen(tag);

	if (ql > UINT32_MAX || tl > UINT32_MAX || len > UINT32_MAX ||
	    !grow(o, 16 + ql + tl + (size_t)plen + len)) {
		o->lost = true;
		return CW_ENOMEM;
	}
	put_field(o, queue, ql);
	put_field(o, tag, tl);
	put_field(o, prio, (size_t)plen);
	put_field(o, env, len);
	return CW_OK;
}

static bool get_field(const char *buf, size_t len, size_t *off, const char **p, size_t *n)
{
	uint32_t l;
	if (len - *off < 4)
		return false;
	memcpy(&l, buf + *off, 4);
	if (len - *off - 4 < l)
		return false;
	*p = buf + *off + 4;
	*n = l;
	*off += 4 + (size_t)l;
	return true;
}

bool cw_outbox_next(const char *buf, size_t len, size_t *off, struct cw_outmsg *m)
{
	const char *prio;
	size_t plen;
	char num[12];

	if (!buf || *off >= len)
		return false;
	if (!get_field(buf, len, off, &m->queue, &m->queue_len) ||
	    !get_field(buf, len, off, &m->tag, &m->tag_len) ||
	    !get_field(buf, len, off, &prio, &plen) || plen >= sizeof(num) ||
	    !get_field(buf, len, off, &m->env, &m->env_len))
		return false;
	memcpy(num, prio, plen);
	num[plen] = '\0';
	m->priority = atoi(num);
	return true;
}

void cw_outbox_free(struct cw_outbox *o)
{
	free(o->buf);
	memset(o, 0, sizeof(*o));
}

/* ---- applying signatures ------------------------------------------------ */

/*
 * Signature.apply_async(prepend, chain=chain, parent_id=..., root_id=...)
 * from inside a task: build the message and put it in the outbox.
 */
static int apply_sig(const struct cw_exec_env *env, const struct cw_request *req, json_t *sig,
		     json_t *prepend, json_t *chain, const char *group_id, struct cw_outbox *ob,
		     const char *why)
{
	char id[37], tag[37];
	struct cw_task_msg m;
	struct cw_sig_owned own;
	struct cw_error err = {0};

	cw_uuid4(id);
	cw_uuid4(tag);
	struct cw_sig_apply ap = {
		.new_id = id,
		.new_tag = tag,
		.parent_id = req->id,
		.root_id = req->root_id ? req->root_id : req->id,
		.chain = chain,
		.default_queue = env->default_queue ? env->default_queue : "celery",
		.origin = env->hostname,
		.now = cw_wall(),
	};
	int rc = cw_proto_sig_to_msg(sig, prepend, &ap, &m, &own, &err);
	if (rc != CW_OK) {
		cw_log(CW_LOG_ERROR, "canvas", "Task %s[%s]: cannot apply %s: %s", req->task, req->id,
		       why, err.msg);
		return rc;
	}
	if (group_id)
		m.group_id = group_id;
	size_t len;
	char *text = cw_proto_encode_task(&m, &len);
	if (!text) {
		cw_log(CW_LOG_ERROR, "canvas", "Task %s[%s]: out of memory building %s", req->task,
		       req->id, why);
		cw_sig_owned_clear(&own);
		return CW_ENOMEM;
	}
	rc = cw_outbox_add(ob, m.queue, tag, m.priority, text, len);
	if (rc == CW_OK)
		cw_log(CW_LOG_DEBUG, "canvas", "Task %s[%s]: %s %s[%s] -> %s", req->task, req->id, why,
		       m.task, m.id, m.queue);
	free(text);
	cw_sig_owned_clear(&own);
	return rc;
}

static json_t *embed_list(const struct cw_request *req, const char *key)
{
	json_t *v = json_object_get(req->embed, key);
	return json_is_array(v) && json_array_size(v) ? v : NULL;
}

static void callbacks(const struct cw_exec_env *env, const struct cw_request *req, json_t *retval,
		      struct cw_outbox *ob)
{
	json_t *cbs = embed_list(req, "callbacks"), *sig;
	json_t *prepend = json_pack("[O]", retval ? retval : json_null());
	char gid[37];
	size_t i;

	if (!cbs || !prepend) {
		json_decref(prepend);
		return;
	}
	/* more than one: Celery applies them as one group */
	if (json_array_size(cbs) > 1)
		cw_uuid4(gid);
	json_array_foreach(cbs, i, sig)
		(void)apply_sig(env, req, sig, prepend, NULL, json_array_size(cbs) > 1 ? gid : NULL,
				ob, "callback");
	json_decref(prepend);
}

static void next_in_chain(const struct cw_exec_env *env, const struct cw_request *req,
			  json_t *retval, struct cw_outbox *ob)
{
	json_t *chain = embed_list(req, "chain");
	if (!chain)
		return;
	size_t n = json_array_size(chain);
	json_t *rest = json_array(), *prepend = json_pack("[O]", retval ? retval : json_null());
	for (size_t i = 0; rest && i + 1 < n; i++)
		json_array_append(rest, json_array_get(chain, i));
	if (rest && prepend)
		(void)apply_sig(env, req, json_array_get(chain, n - 1), prepend, rest, NULL, ob,
				"chain step");
	else
		cw_log(CW_LOG_ERROR, "canvas", "Task %s[%s]: out of memory applying the chain",
		       req->task, req->id);
	json_decref(rest);
	json_decref(prepend);
}

static void errbacks(const struct cw_exec_env *env, const struct cw_request *req,
		     json_t *errbacks_list, struct cw_outbox *ob)
{
	json_t *sig, *prepend;
	size_t i;

	if (!errbacks_list)
		return;
	/*
	 * A C worker cannot see an errback's Python signature, so every errback
	 * gets Celery's old-style call, errback.apply_async((task_id,)), the
	 * same call a Python worker makes for errbacks it has not registered.
	 */
	prepend = json_pack("[s]", req->id);
	json_array_foreach(errbacks_list, i, sig)
		(void)apply_sig(env, req, sig, prepend, NULL, NULL, ob, "errback");
	json_decref(prepend);
}

/*
 * chord_error_from_stack: the chord body fails with ChordError without
 * running, and its own errbacks are called.
 */
static void chord_error(const struct cw_exec_env *env, const struct cw_request *req, json_t *body,
			const char *msg, struct cw_outbox *ob)
{
	json_t *opts = json_object_get(body, "options");
	const char *body_id = json_string_value(json_object_get(opts, "task_id"));
	const char *body_task = json_string_value(json_object_get(body, "task"));

	cw_log(CW_LOG_ERROR, "canvas", "Chord %s raised: ChordError(%s)", req->group, msg);
	if (!body_id)
		return;
	struct cw_result_meta m = {
		.state = CW_STATE_FAILURE,
		.task_id = body_id,
		.exc_type = "ChordError",
		.exc_module = "celery.exceptions",
		.exc_message = msg,
	};
	struct cw_request breq = {.id = (char *)body_id, .task = (char *)(body_task ?: "?"),
				  .root_id = req->root_id, .group_index = -1};
	struct cw_exec_env e = *env;
	e.result_extended = false;
	cw_exec_store(&e, NULL, "", &m);
	json_t *link_error = json_object_get(opts, "link_error");
	json_t *list = json_is_object(link_error) ? json_pack("[O]", link_error)
		       : json_is_array(link_error) ? json_incref(link_error)
						   : NULL;
	errbacks(env, &breq, list, ob);
	json_decref(list);
}

static void chord_part(const struct cw_exec_env *env, const struct cw_request *req,
		       const struct cw_result_meta *m, json_t *retval, struct cw_outbox *ob)
{
	json_t *body = json_object_get(req->embed, "chord");
	json_t *result, *entry;
	json_t *parts = NULL;
	bool nested = false;
	struct cw_error err = {0};
	char *text;
	size_t len;

	if (!req->group || !json_is_object(body) || !env->backend)
		return;
	if (m->state == CW_STATE_SUCCESS)
		result = retval ? json_incref(retval) : json_null();
	else if (json_is_array(m->exc_args))
		result = json_pack("{s:s,s:O,s:s}", "exc_type", m->exc_type ?: "Exception",
				   "exc_message", m->exc_args, "exc_module",
				   m->exc_module ?: "builtins");
	else
		result = json_pack("{s:s,s:[s],s:s}", "exc_type", m->exc_type ?: "Exception",
				   "exc_message", m->exc_message ?: "", "exc_module",
				   m->exc_module ?: "builtins");
	entry = json_pack("[i,s,s,o]", 1, req->id, cw_state_name(m->state), result);
	text = entry ? cw_json_dumps(entry, &len) : NULL;
	json_decref(entry);
	if (!text) {
		cw_log(CW_LOG_ERROR, "canvas", "Task %s[%s]: out of memory recording chord part",
		       req->task, req->id);
		return;
	}
	int rc = cw_backend_chord_part(env->backend, req->group, req->group_index, text, len,
				       &parts, &nested, &err);
	free(text);
	if (rc != CW_OK) {
		chord_error(env, req, body, err.msg, ob);
		return;
	}
	if (!parts)
		return; /* more parts to come */
	if (nested) {
		chord_error(env, req, body,
			    "cworker cannot join a chord whose header contains groups; "
			    "run such chords on Python workers",
			    ob);
		json_decref(parts);
		return;
	}
	json_t *values = json_array(), *p;
	size_t i;
	json_array_foreach(parts, i, p) {
		json_t *tup = cw_json_loads(json_string_value(p), json_string_length(p),
					    &env->limits, &err);
		const char *tid = json_string_value(json_array_get(tup, 1));
		const char *state = json_string_value(json_array_get(tup, 2));
		json_t *val = json_array_get(tup, 3);
		if (!json_is_array(tup) || !tid || !state) {
			chord_error(env, req, body, "a chord part in the backend is corrupt", ob);
			json_decref(tup);
			goto out;
		}
		if (!strcmp(state, "FAILURE") || !strcmp(state, "REVOKED")) {
			char *r = cw_proto_exc_repr(
				json_string_value(json_object_get(val, "exc_type")),
				json_object_get(val, "exc_message"), 400);
			char *msg = NULL;
			if (asprintf(&msg, "Dependency %s raised %s", tid, r ? r : "an exception") < 0)
				msg = NULL;
			chord_error(env, req, body, msg ? msg : "Dependency raised", ob);
			free(r);
			free(msg);
			json_decref(tup);
			goto out;
		}
		json_array_append(values, val ? val : json_null());
		json_decref(tup);
	}
	/* callback.delay(results): a fresh call, not a child of this task */
	json_t *prepend = json_pack("[O]", values);
	if (prepend)
		(void)apply_sig(env, req, body, prepend, NULL, NULL, ob, "chord body");
	json_decref(prepend);
out:
	json_decref(values);
	json_decref(parts);
}

void cw_canvas_after(const struct cw_exec_env *env, const struct cw_request *req,
		     const struct cw_result_meta *m, json_t *retval, struct cw_outbox *ob)
{
	if (!req || !req->embed)
		return;
	switch (m->state) {
	case CW_STATE_SUCCESS:
		callbacks(env, req, retval, ob);
		next_in_chain(env, req, retval, ob);
		chord_part(env, req, m, retval, ob);
		break;
	case CW_STATE_FAILURE:
		chord_part(env, req, m, retval, ob);
		errbacks(env, req, embed_list(req, "errbacks"), ob);
		break;
	case CW_STATE_REVOKED:
		chord_part(env, req, m, retval, ob);
		break;
	default:
		break;
	}
}
