/*
 * Celery task messages, protocol v2 (metadata in headers, body
 * [args, kwargs, embed]) and v1 (everything in a body dict), decoded into
 * one struct cw_request.  Mirrors celery/worker/consumer/consumer.py
 * (on_task_received), strategy.py (proto1_to_proto2) and request.py.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

static bool is_json_type(const char *ct)
{
	return !strcmp(ct, "application/json");
}

static int decode_body(const struct cw_envelope *env, const struct cw_proto_limits *lim,
		       json_t **out, struct cw_error *err)
{
	if (!is_json_type(env->content_type)) {
		cw_error_set(err, CW_ECONTENT, "Refusing to deserialize untrusted content of type %s",
			     env->content_type[0] ? env->content_type : "(none)");
		return CW_ECONTENT;
	}
	struct cw_error jerr = {0};
	*out = cw_json_loads((const char *)env->body, env->body_len, lim, &jerr);
	if (!*out) {
		cw_error_set(err, CW_EDECODE, "body: %s", jerr.msg);
		return CW_EDECODE;
	}
	return CW_OK;
}

int cw_proto_peek_task(const struct cw_envelope *env, const struct cw_proto_limits *lim,
		       char **name, char **id, struct cw_error *err)
{
	json_t *task = env->task ? NULL : json_object_get(env->headers, "task");
	json_t *body = NULL;
	const char *n, *i;

	*name = *id = NULL;
	if (env->task) { /* protocol v2, scanned: the reader checked the types */
		n = env->task->task;
		i = env->task->id;
	} else if (task) { /* protocol v2 */
		n = json_string_value(task);
		i = json_string_value(json_object_get(env->headers, "id"));
		if (!n) {
			cw_error_set(err, CW_EFORMAT, "task header is not a string");
			return CW_EFORMAT;
		}
	} else { /* protocol v1: the body must be decoded to find the name */
		int rc = decode_body(env, lim, &body, err);
		if (rc)
			return rc;
		n = json_string_value(json_object_get(body, "task"));
		i = json_string_value(json_object_get(body, "id"));
		if (!json_is_object(body) || !n) {
			json_decref(body);
			cw_error_set(err, CW_EFORMAT, "neither a v2 task header nor a v1 task body");
			return CW_EFORMAT;
		}
	}
	*name = strdup(n);
	*id = strdup(i ? i : "");
	json_decref(body);
	if (!*name || !*id) {
		free(*name);
		free(*id);
		*name = *id = NULL;
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	return CW_OK;
}

#define NSTR 13

/* The string fields, freed by cw_request_clear and packed by cw_request_pack, in this order. */
static void string_fields(struct cw_request *r, char **f[NSTR])
{
	char **const all[NSTR] = {&r->id, &r->task, &r->root_id, &r->parent_id, &r->group,
				  &r->shadow, &r->origin, &r->eta, &r->expires, &r->argsrepr,
				  &r->kwargsrepr, &r->reply_to, &r->correlation_id};
	memcpy(f, all, sizeof(all));
}

void cw_request_clear(struct cw_request *r)
{
	char **strs[NSTR];
	string_fields(r, strs);
	for (size_t i = 0; i < NSTR; i++)
		free(*strs[i]);
	json_decref(r->args);
	json_decref(r->kwargs);
	json_decref(r->embed);
	memset(r, 0, sizeof(*r));
	r->group_index = -1;
}

/* An optional string field; non-strings other than null are errors. */
static int str_field(json_t *obj, const char *key, const char **out, struct cw_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return CW_OK;
	if (!json_is_string(v) || cw_json_is_bigint(v)) {
		cw_error_set(err, CW_EINVALTASK, "field %s is not a string", key);
		return CW_EINVALTASK;
	}
	*out = json_string_value(v);
	return CW_OK;
}

/* Copy an optional string field. */
static int opt_str(json_t *obj, const char *key, char **out, struct cw_error *err)
{
	const char *s;
	int rc = str_field(obj, key, &s, err);
	if (rc != CW_OK || !s)
		return rc;
	*out = strdup(s);
	return *out ? CW_OK : CW_ENOMEM;
}

static int dup_str(const char *s, char **out)
{
	*out = s ? strdup(s) : NULL;
	return !s || *out ? CW_OK : CW_ENOMEM;
}

static int opt_int(json_t *obj, const char *key, int64_t dflt, int64_t *out, struct cw_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = dflt;
	if (!v || json_is_null(v))
		return CW_OK;
	if (!json_is_integer(v)) {
		cw_error_set(err, CW_EINVALTASK, "field %s is not an integer", key);
		return CW_EINVALTASK;
	}
	*out = json_integer_value(v);
	return CW_OK;
}

/* timelimit = [hard, soft], either may be null; numbers may be int or float. */
static int timelimit(json_t *tl, double *hard, double *soft, struct cw_error *err)
{
	if (!tl || json_is_null(tl))
		return CW_OK;
	if (!json_is_array(tl) || json_array_size(tl) != 2)
		goto bad;
	for (size_t i = 0; i < 2; i++) {
		json_t *v = json_array_get(tl, i);
		double d = 0;
		if (json_is_number(v))
			d = json_number_value(v);
		else if (!json_is_null(v))
			goto bad;
		if (!isfinite(d) || d < 0)
			goto bad;
		*(i == 0 ? hard : soft) = d;
	}
	return CW_OK;
bad:
	cw_error_set(err, CW_EINVALTASK, "timelimit is not [hard, soft]");
	return CW_EINVALTASK;
}

static int check_time(const char *s, const char *what, bool utc, struct cw_error *err)
{
	double t;
	if (s && cw_proto_parse_iso8601(s, utc, &t) != CW_OK) {
		cw_error_set(err, CW_EINVALTASK, "invalid %s value '%.64s'", what, s);
		return CW_EINVALTASK;
	}
	return CW_OK;
}

static int take_args(struct cw_request *r, json_t *args, json_t *kwargs, struct cw_error *err)
{
	if (!args || json_is_null(args))
		args = NULL;
	if (!kwargs || json_is_null(kwargs))
		kwargs = NULL;
	if (args && !json_is_array(args)) {
		cw_error_set(err, CW_EINVALTASK, "task positional arguments must be a list");
		return CW_EINVALTASK;
	}
	if (kwargs && !json_is_object(kwargs)) {
		cw_error_set(err, CW_EINVALTASK, "Task keyword arguments must be a mapping");
		return CW_EINVALTASK;
	}
	r->args = args ? json_incref(args) : json_array();
	r->kwargs = kwargs ? json_incref(kwargs) : json_object();
	return r->args && r->kwargs ? CW_OK : CW_ENOMEM;
}

static int v2_body(json_t *body, struct cw_request *r, struct cw_error *err);
static int v1_body(json_t *body, struct cw_request *r, struct cw_error *err);

#define TH_STR(i, field) [i] = {#field, offsetof(struct cw_task_headers, field)}
const struct cw_task_header_str cw_task_header_strs[CW_TH_NSTR] = {
	TH_STR(CW_TH_ID, id),         TH_STR(CW_TH_TASK, task),
	TH_STR(CW_TH_ROOT_ID, root_id), TH_STR(CW_TH_PARENT_ID, parent_id),
	TH_STR(CW_TH_GROUP, group),   TH_STR(CW_TH_SHADOW, shadow),
	TH_STR(CW_TH_ORIGIN, origin), TH_STR(CW_TH_ETA, eta),
	TH_STR(CW_TH_EXPIRES, expires), TH_STR(CW_TH_ARGSREPR, argsrepr),
	TH_STR(CW_TH_KWARGSREPR, kwargsrepr),
};

/* The headers of a tree, checked field by field in the order errors are reported. */
static int headers_from_tree(json_t *h, struct cw_task_headers *th, struct cw_error *err)
{
	int rc;

	for (int i = 0; i < CW_TH_NSTR; i++)
		if ((rc = str_field(h, cw_task_header_strs[i].name, cw_task_header_slot(th, i), err)))
			return rc;
	if ((rc = opt_int(h, "retries", 0, &th->retries, err)) ||
	    (rc = opt_int(h, "group_index", -1, &th->group_index, err)) ||
	    (rc = timelimit(json_object_get(h, "timelimit"), &th->time_limit,
			    &th->soft_time_limit, err)))
		return rc;
	th->ignore_result = json_is_true(json_object_get(h, "ignore_result"));
	return CW_OK;
}

static int decode_v2(const struct cw_envelope *env, json_t *body, struct cw_request *r,
		     struct cw_error *err)
{
	struct cw_task_headers tree = {0};
	struct cw_task_headers *th = env->task;
	char **strs[NSTR];
	int rc;

	r->proto = 2;
	r->utc = true;
	if (!th) {
		if ((rc = headers_from_tree(env->headers, &tree, err)))
			return rc;
		th = &tree;
	}
	/* the request's first string fields are the headers', in the same order */
	string_fields(r, strs);
	for (int i = 0; i < CW_TH_NSTR; i++)
		if ((rc = dup_str(*cw_task_header_slot(th, i), strs[i])))
			return rc;
	r->retries = th->retries;
	r->group_index = th->group_index;
	r->time_limit = th->time_limit;
	r->soft_time_limit = th->soft_time_limit;
	r->ignore_result = th->ignore_result;
	return v2_body(body, r, err);
}

/* args, kwargs and embed from a v2 body [args, kwargs, embed] */
static int v2_body(json_t *body, struct cw_request *r, struct cw_error *err)
{
	int rc;
	if (!json_is_array(body) || json_array_size(body) != 3) {
		cw_error_set(err, CW_EINVALTASK, "task body is not [args, kwargs, embed]");
		return CW_EINVALTASK;
	}
	if ((rc = take_args(r, json_array_get(body, 0), json_array_get(body, 1), err)))
		return rc;
	json_t *embed = json_array_get(body, 2);
	if (json_is_null(embed))
		embed = NULL;
	if (embed && !json_is_object(embed)) {
		cw_error_set(err, CW_EINVALTASK, "task embed is not a mapping");
		return CW_EINVALTASK;
	}
	r->embed = embed ? json_incref(embed) : json_object();
	return CW_OK;
}

static int decode_v1(json_t *body, struct cw_request *r, struct cw_error *err)
{
	int rc;

	r->proto = 1;
	if (!json_is_object(body)) {
		cw_error_set(err, CW_EINVALTASK, "v1 task body is not a mapping");
		return CW_EINVALTASK;
	}
	json_t *utc = json_object_get(body, "utc");
	r->utc = !utc || json_is_null(utc) || json_is_true(utc);
	if ((rc = opt_str(body, "id", &r->id, err)) || (rc = opt_str(body, "task", &r->task, err)) ||
	    (rc = opt_str(body, "taskset", &r->group, err)) ||
	    (rc = opt_str(body, "eta", &r->eta, err)) ||
	    (rc = opt_str(body, "expires", &r->expires, err)) ||
	    (rc = opt_int(body, "retries", 0, &r->retries, err)) ||
	    (rc = timelimit(json_object_get(body, "timelimit"), &r->time_limit,
			    &r->soft_time_limit, err)))
		return rc;
	return v1_body(body, r, err);
}

/* args, kwargs and embed from a v1 body dict */
static int v1_body(json_t *body, struct cw_request *r, struct cw_error *err)
{
	int rc;
	if ((rc = take_args(r, json_object_get(body, "args"), json_object_get(body, "kwargs"), err)))
		return rc;
	r->embed = json_object();
	if (!r->embed)
		return CW_ENOMEM;
	const char *keys[] = {"callbacks", "errbacks", "chord"};
	for (size_t i = 0; i < 3; i++)
		json_object_set(r->embed, keys[i],
				json_object_get(body, keys[i]) ? json_object_get(body, keys[i]) : json_null());
	json_object_set_new(r->embed, "chain", json_null());
	return CW_OK;
}

int cw_proto_decode_request(const struct cw_envelope *env, const struct cw_proto_limits *lim,
			    struct cw_request *r, struct cw_error *err)
{
	json_t *body = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	r->group_index = -1;
	rc = decode_body(env, lim, &body, err);
	if (rc)
		return rc;
	if (env->task || json_object_get(env->headers, "task"))
		rc = decode_v2(env, body, r, err);
	else
		rc = decode_v1(body, r, err);
	json_decref(body);
	if (rc == CW_OK && (!r->id || !*r->id)) {
		cw_error_set(err, CW_EINVALTASK, "task message has no id");
		rc = CW_EINVALTASK;
	}
	if (rc == CW_OK && !r->task) {
		cw_error_set(err, CW_EINVALTASK, "task message has no task name");
		rc = CW_EINVALTASK;
	}
	if (rc == CW_OK)
		rc = check_time(r->eta, "ETA", r->utc, err);
	if (rc == CW_OK)
		rc = check_time(r->expires, "expires", r->utc, err);
	if (rc == CW_OK && ((env->reply_to && !(r->reply_to = strdup(env->reply_to))) ||
			    (env->correlation_id && !(r->correlation_id = strdup(env->correlation_id)))))
		rc = CW_ENOMEM;
	if (rc != CW_OK)
		cw_request_clear(r);
	return rc;
}

/*
 * The master -> child form of a decoded request: what cw_proto_decode_request
 * found, so the child does not parse the envelope again.  Fixed fields in
 * host order, then each string as a u32 length (NONE for NULL) and its
 * bytes, then the decoded body, which the child still parses for args,
 * kwargs and embed (json_t cannot cross the process boundary).
 */
#define NONE UINT32_MAX

struct packed_head {
	int32_t proto, priority;
	int64_t retries, group_index;
	double time_limit, soft_time_limit;
	uint8_t ignore_result, utc;
};

char *cw_request_pack(const struct cw_request *r, int priority, const unsigned char *body,
		      size_t blen, size_t *len)
{
	struct packed_head hd = {.proto = r->proto, .priority = priority, .retries = r->retries,
				 .group_index = r->group_index, .time_limit = r->time_limit,
				 .soft_time_limit = r->soft_time_limit,
				 .ignore_result = r->ignore_result, .utc = r->utc};
	if (blen > NONE - 1)
		return NULL;
	size_t total = sizeof(hd) + 4 + blen;
	char **strs[NSTR];
	string_fields((struct cw_request *)r, strs); /* read only */
	for (size_t i = 0; i < NSTR; i++)
		total += 4 + (*strs[i] ? strlen(*strs[i]) : 0);
	char *out = malloc(total), *p = out;
	if (!out)
		return NULL;
	memcpy(p, &hd, sizeof(hd));
	p += sizeof(hd);
	for (size_t i = 0; i < NSTR; i++) {
		const char *v = *strs[i];
		uint32_t l = v ? (uint32_t)strlen(v) : NONE;
		memcpy(p, &l, 4);
		p += 4;
		if (v) {
			memcpy(p, v, l);
			p += l;
		}
	}
	uint32_t bl = (uint32_t)blen;
	memcpy(p, &bl, 4);
	memcpy(p + 4, body, blen);
	*len = total;
	return out;
}

int cw_request_unpack(const char *buf, size_t len, const struct cw_proto_limits *lim,
		      struct cw_request *r, int *priority, struct cw_error *err)
{
	struct packed_head hd;
	const char *p = buf, *end = buf + len;
	char **strs[NSTR];
	int rc = CW_EFORMAT;

	memset(r, 0, sizeof(*r));
	r->group_index = -1;
	if (len < sizeof(hd))
		goto bad;
	memcpy(&hd, p, sizeof(hd));
	p += sizeof(hd);
	r->proto = hd.proto;
	r->retries = hd.retries;
	r->group_index = hd.group_index;
	r->time_limit = hd.time_limit;
	r->soft_time_limit = hd.soft_time_limit;
	r->ignore_result = hd.ignore_result;
	r->utc = hd.utc;
	*priority = hd.priority;
	string_fields(r, strs);
	for (size_t i = 0; i < NSTR; i++) {
		uint32_t l;
		if (end - p < 4)
			goto bad;
		memcpy(&l, p, 4);
		p += 4;
		if (l == NONE)
			continue;
		if ((size_t)(end - p) < l)
			goto bad;
		if (!(*strs[i] = strndup(p, l))) {
			rc = CW_ENOMEM;
			goto bad;
		}
		p += l;
	}
	uint32_t bl;
	if (end - p < 4)
		goto bad;
	memcpy(&bl, p, 4);
	p += 4;
	if ((size_t)(end - p) != bl || (r->proto != 1 && r->proto != 2))
		goto bad;
	struct cw_error jerr = {0};
	json_t *body = cw_json_loads(p, bl, lim, &jerr);
	if (!body) {
		cw_error_set(err, CW_EDECODE, "body: %s", jerr.msg);
		cw_request_clear(r);
		return CW_EDECODE;
	}
	rc = r->proto == 2 ? v2_body(body, r, err) : v1_body(body, r, err);
	json_decref(body);
	if (rc != CW_OK)
		cw_request_clear(r);
	return rc;
bad:
	if (rc == CW_EFORMAT)
		cw_error_set(err, CW_EFORMAT, "packed request is cut short or malformed");
	else
		cw_error_set(err, rc, "out of memory");
	cw_request_clear(r);
	return rc;
}
