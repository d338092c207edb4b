/*
 * Building task messages: what the worker publishes for callbacks, chains
 * and chord bodies.  The shape follows celery/app/amqp.py as_task_v2 and
 * Signature.apply_async (canvas.py): new args go in front of the
 * signature's own unless it is immutable, the signature's options give
 * task_id, link/link_error, routing, limits, eta/countdown/expires.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

/* ---- Python repr of JSON values, for argsrepr/kwargsrepr ----------- */

struct sbuf {
	char *p;
	size_t len, cap, max;
	bool cut;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
	if (b->cut)
		return;
	if (b->len + n > b->max) {
		n = b->max - b->len;
		b->cut = true;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->cut = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void puts_(struct sbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void repr_str(struct sbuf *b, const char *s, size_t n)
{
	bool dq = memchr(s, '\'', n) && !memchr(s, '"', n);
	char q = dq ? '"' : '\'';

	put(b, &q, 1);
	for (size_t i = 0; i < n && !b->cut; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '\\' || c == (unsigned char)q) {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(b, esc, 2);
		} else if (c == '\n') {
			puts_(b, "\\n");
		} else if (c == '\r') {
			puts_(b, "\\r");
		} else if (c == '\t') {
			puts_(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			puts_(b, esc);
		} else {
			put(b, (const char *)&s[i], 1);
		}
	}
	put(b, &q, 1);
}

static void repr(struct sbuf *b, const json_t *v, unsigned depth)
{
	char num[64];

	if (depth > 32) {
		puts_(b, "...");
		return;
	}
	switch (json_typeof(v)) {
	case JSON_NULL:
		puts_(b, "None");
		break;
	case JSON_TRUE:
		puts_(b, "True");
		break;
	case JSON_FALSE:
		puts_(b, "False");
		break;
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		puts_(b, num);
		break;
	case JSON_REAL: {
		double d = json_real_value(v);
		if (d == floor(d) && fabs(d) < 1e16)
			snprintf(num, sizeof(num), "%.1f", d);
		else
			snprintf(num, sizeof(num), "%.17g", d);
		puts_(b, num);
		break;
	}
	case JSON_STRING:
		if (cw_json_is_bigint(v)) {
			size_t len;
			char *t = cw_json_dumps(v, &len);
			if (t)
				put(b, t, len);
			free(t);
		} else {
			repr_str(b, json_string_value(v), json_string_length(v));
		}
		break;
	case JSON_ARRAY: {
		size_t i;
		json_t *x;
		puts_(b, "[");
		json_array_foreach(v, i, x) {
			if (i)
				puts_(b, ", ");
			repr(b, x, depth + 1);
		}
		puts_(b, "]");
		break;
	}
	case JSON_OBJECT: {
		const char *k;
		json_t *x;
		bool first = true;
		puts_(b, "{");
		json_object_foreach((json_t *)v, k, x) {
			if (!first)
				puts_(b, ", ");
			first = false;
			repr_str(b, k, strlen(k));
			puts_(b, ": ");
			repr(b, x, depth + 1);
		}
		puts_(b, "}");
		break;
	}
	}
}

char *cw_proto_pyrepr(const json_t *v, bool as_tuple, size_t max)
{
	struct sbuf b = {.max = max ? max : 1024};

	if (as_tuple && json_is_array(v)) {
		size_t i;
		json_t *x;
		puts_(&b, "(");
		json_array_foreach(v, i, x) {
			if (i)
				puts_(&b, ", ");
			repr(&b, x, 1);
		}
		if (json_array_size(v) == 1)
			puts_(&b, ",");
		puts_(&b, ")");
	} else {
		repr(&b, v, 0);
	}
	if (b.cut && b.p && b.len >= 3)
		memcpy(b.p + b.len - 3, "...", 3);
	if (!b.p)
		return strdup("");
	return b.p;
}

char *cw_proto_exc_repr(const char *type, const json_t *args, size_t max)
{
	json_t *a = json_is_array(args) ? json_incref((json_t *)args)
					: json_pack("[O]", args ? (json_t *)args : json_null());
	char *inner = a ? cw_proto_pyrepr(a, false, max) : NULL, *out = NULL;

	json_decref(a);
	size_t n = inner ? strlen(inner) : 0;
	if (n >= 2 && inner[0] == '[' && inner[n - 1] == ']') {
		inner[n - 1] = '\0';
		if (asprintf(&out, "%s(%s)", type ? type : "Exception", inner + 1) < 0)
			out = NULL;
	}
	free(inner);
	return out;
}

/* ---- message ----------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *limit(double v)
{
	return v > 0 ? json_real(v) : json_null();
}

static json_t *ref_or_null(json_t *v)
{
	return v ? json_incref(v) : json_null();
}

char *cw_proto_encode_task(const struct cw_task_msg *m, size_t *len)
{
	json_t *root = NULL, *headers, *props, *body, *embed;
	char *text = NULL, *b64 = NULL, *argsrepr = NULL, *kwargsrepr = NULL, *out = NULL;
	json_t *args = m->args ? json_incref(m->args) : json_array();
	json_t *kwargs = m->kwargs ? json_incref(m->kwargs) : json_object();
	size_t tlen;

	if (!m->task || !m->id || !json_is_array(args) || !json_is_object(kwargs))
		goto out;
	argsrepr = cw_proto_pyrepr(args, true, 1024);
	kwargsrepr = cw_proto_pyrepr(kwargs, false, 1024);
	if (!argsrepr || !kwargsrepr)
		goto out;
	embed = json_pack("{s:o,s:o,s:o,s:o}", "callbacks", ref_or_null(m->callbacks), "errbacks",
			  ref_or_null(m->errbacks), "chain", ref_or_null(m->chain), "chord",
			  ref_or_null(m->chord));
	body = embed ? json_pack("[O,O,o]", args, kwargs, embed) : NULL;
	if (!body)
		goto out;
	text = cw_json_dumps(body, &tlen);
	json_decref(body);
	if (!text || !(b64 = cw_base64_encode((const unsigned char *)text, tlen, NULL)))
		goto out;

	headers = json_pack(
		"{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:I,s:[o,o],s:s,s:o,s:s,s:s,s:s,s:b}", "lang", "py",
		"task", m->task, "id", m->id, "shadow", str_or_null(m->shadow), "eta",
		str_or_null(m->eta), "expires", str_or_null(m->expires), "group",
		str_or_null(m->group_id), "group_index",
		m->group_index >= 0 ? json_integer(m->group_index) : json_null(), "retries",
		(json_int_t)m->retries, "timelimit", limit(m->time_limit), limit(m->soft_time_limit),
		"root_id", m->root_id ? m->root_id : m->id, "parent_id", str_or_null(m->parent_id),
		"argsrepr", argsrepr, "kwargsrepr", kwargsrepr, "origin",
		m->origin ? m->origin : "cworker", "ignore_result", m->ignore_result);
	props = json_pack("{s:s,s:s,s:i,s:{s:s,s:s},s:i,s:s,s:s}", "correlation_id", m->id,
			  "reply_to", m->reply_to ? m->reply_to : "", "delivery_mode", 2,
			  "delivery_info", "exchange", m->exchange ? m->exchange : "", "routing_key",
			  m->routing_key ? m->routing_key : "celery", "priority", m->priority,
			  "body_encoding", "base64", "delivery_tag", m->delivery_tag ? m->delivery_tag : m->id);
	if (!headers || !props) {
		json_decref(headers);
		json_decref(props);
		goto out;
	}
	root = json_pack("{s:s,s:s,s:s,s:o,s:o}", "body", b64, "content-encoding", "utf-8",
			 "content-type", "application/json", "headers", headers, "properties", props);
	if (root)
		out = cw_json_dumps(root, len);
out:
	json_decref(root);
	json_decref(args);
	json_decref(kwargs);
	free(text);
	free(b64);
	free(argsrepr);
	free(kwargsrepr);
	return out;
}

/* ---- signatures --------------------------------------------------------- */

static const char *opt_str(const json_t *opts, const char *key)
{
	return json_string_value(json_object_get(opts, key));
}

static double opt_num(const json_t *opts, const char *key)
{
	json_t *v = json_object_get(opts, key);
	return json_is_number(v) ? json_number_value(v) : 0;
}

/* link / link_error: one signature or a list of them (maybe_list) */
static json_t *as_list(json_t *v)
{
	if (json_is_object(v))
		return json_pack("[O]", v);
	if (json_is_array(v) && json_array_size(v))
		return json_incref(v);
	return NULL;
}

int cw_proto_sig_to_msg(const json_t *sig, json_t *prepend, const struct cw_sig_apply *ap,
			struct cw_task_msg *m, struct cw_sig_owned *own, struct cw_error *err)
{
	memset(m, 0, sizeof(*m));
	memset(own, 0, sizeof(*own));
	m->group_index = -1;
	if (!json_is_object(sig)) {
		cw_error_set(err, CW_EINVALTASK, "signature is not a mapping");
		return CW_EINVALTASK;
	}
	json_t *opts = json_object_get(sig, "options");
	json_t *type = json_object_get(sig, "subtask_type");
	const char *task = json_string_value(json_object_get(sig, "task"));
	if (type && !json_is_null(type)) {
		cw_error_set(err, CW_EINVALTASK, "cworker cannot apply a %s signature from a worker",
			     json_string_value(type) ? json_string_value(type) : "non-task");
		return CW_EINVALTASK;
	}
	if (!task || !*task) {
		cw_error_set(err, CW_EINVALTASK, "signature has no task name");
		return CW_EINVALTASK;
	}
	if (opts && !json_is_object(opts))
		opts = NULL;
	json_t *sargs = json_object_get(sig, "args"), *skw = json_object_get(sig, "kwargs");
	if (json_is_null(sargs))
		sargs = NULL;
	if (json_is_null(skw))
		skw = NULL;
	if ((sargs && !json_is_array(sargs)) || (skw && !json_is_object(skw))) {
		cw_error_set(err, CW_EINVALTASK, "signature args/kwargs have the wrong type");
		return CW_EINVALTASK;
	}
	own->args = json_array();
	if (!own->args)
		return CW_ENOMEM;
	if (prepend && !json_is_true(json_object_get(sig, "immutable")))
		json_array_extend(own->args, prepend);
	if (sargs)
		json_array_extend(own->args, sargs);
	m->task = task;
	m->args = own->args;
	m->kwargs = skw;
	m->id = opt_str(opts, "task_id");
	if (!m->id || !*m->id)
		m->id = ap->new_id;
	own->callbacks = as_list(json_object_get(opts, "link"));
	own->errbacks = as_list(json_object_get(opts, "link_error"));
	m->callbacks = own->callbacks;
	m->errbacks = own->errbacks;
	m->chain = ap->chain;
	json_t *chord = json_object_get(opts, "chord");
	m->chord = json_is_object(chord) ? chord : NULL;
	m->group_id = opt_str(opts, "group_id");
	json_t *gi = json_object_get(opts, "group_index");
	if (json_is_integer(gi))
		m->group_index = json_integer_value(gi);
	m->root_id = ap->root_id ? ap->root_id : opt_str(opts, "root_id");
	m->parent_id = ap->parent_id ? ap->parent_id : opt_str(opts, "parent_id");
	m->shadow = opt_str(opts, "shadow");
	m->reply_to = opt_str(opts, "reply_to");
	m->origin = ap->origin;
	m->time_limit = opt_num(opts, "time_limit");
	m->soft_time_limit = opt_num(opts, "soft_time_limit");
	m->ignore_result = json_is_true(json_object_get(opts, "ignore_result"));
	m->priority = (int)opt_num(opts, "priority");
	if (m->priority < 0 || m->priority > 255)
		m->priority = 0;

	/* eta: an explicit one, else countdown from now (as_task_v2) */
	m->eta = opt_str(opts, "eta");
	double countdown = opt_num(opts, "countdown");
	if (!m->eta && countdown > 0) {
		cw_proto_format_iso8601(ap->now + countdown, own->eta);
		strcat(own->eta, "+00:00");
		m->eta = own->eta;
	}
	json_t *exp = json_object_get(opts, "expires");
	if (json_is_string(exp)) {
		m->expires = json_string_value(exp);
	} else if (json_is_number(exp)) {
		cw_proto_format_iso8601(ap->now + json_number_value(exp), own->expires);
		strcat(own->expires, "+00:00");
		m->expires = own->expires;
	}

	/* routing: queue (a name or a {"name": ...} dict), else routing_key, else the default */
	json_t *q = json_object_get(opts, "queue");
	const char *queue = json_is_string(q) ? json_string_value(q)
			    : json_is_object(q) ? json_string_value(json_object_get(q, "name"))
						: NULL;
	const char *rk = opt_str(opts, "routing_key");
	m->exchange = opt_str(opts, "exchange");
	if (json_is_object(json_object_get(opts, "exchange")))
		m->exchange = json_string_value(json_object_get(json_object_get(opts, "exchange"), "name"));
	m->queue = queue ? queue : rk ? rk : ap->default_queue;
	m->routing_key = rk ? rk : m->queue;
	m->delivery_tag = ap->new_tag;
	return CW_OK;
}

void cw_sig_owned_clear(struct cw_sig_owned *own)
{
	json_decref(own->args);
	json_decref(own->callbacks);
	json_decref(own->errbacks);
	memset(own, 0, sizeof(*own));
}
