/* kombu's Redis envelope: {"body", "content-type", "content-encoding", "headers", "properties"}. */
#include <stdlib.h>
#include <string.h>

#include "protocol/envelope_int.h"
#include "protocol/protocol.h"

static const char *str_or(json_t *obj, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : dflt;
}

void cw_envelope_clear(struct cw_envelope *env)
{
	json_decref(env->root);
	free(env->task);
	free(env->body);
	memset(env, 0, sizeof(*env));
}

/*
 * The fields of env from its root object (env->root set): headers and
 * properties become objects when absent; CW_EFORMAT when headers are
 * something else.
 */
static int fill(struct cw_envelope *env, struct cw_error *err)
{
	json_t *root = env->root, *props, *di;

	env->content_type = str_or(root, "content-type", "");
	env->content_encoding = str_or(root, "content-encoding", "");
	env->headers = json_object_get(root, "headers");
	if (!json_is_object(env->headers)) {
		if (env->headers && !json_is_null(env->headers)) {
			cw_error_set(err, CW_EFORMAT, "envelope headers are not a mapping");
			return CW_EFORMAT;
		}
		json_object_set_new(root, "headers", json_object());
		env->headers = json_object_get(root, "headers");
	}
	props = json_object_get(root, "properties");
	if (!json_is_object(props)) {
		json_object_set_new(root, "properties", json_object());
		props = json_object_get(root, "properties");
	}
	env->properties = props;
	env->delivery_tag = json_string_value(json_object_get(props, "delivery_tag"));
	env->correlation_id = json_string_value(json_object_get(props, "correlation_id"));
	env->reply_to = json_string_value(json_object_get(props, "reply_to"));
	json_t *pri = json_object_get(props, "priority");
	env->priority = json_is_integer(pri) ? (int)json_integer_value(pri) : 0;
	di = json_object_get(props, "delivery_info");
	env->exchange = str_or(di, "exchange", "");
	env->routing_key = str_or(di, "routing_key", "");
	env->redelivered = json_is_true(json_object_get(di, "redelivered")) ||
			   json_is_true(json_object_get(env->headers, "redelivered"));
	return CW_OK;
}

int cw_proto_decode_envelope(const char *buf, size_t len, const struct cw_proto_limits *lim,
			     struct cw_envelope *env, struct cw_error *err)
{
	struct cw_error jerr = {0};
	json_t *root, *body;
	int rc;

	memset(env, 0, sizeof(*env));
	root = cw_json_loads(buf, len, lim, &jerr);
	if (!root) {
		cw_error_set(err, jerr.code == CW_ELIMIT ? CW_ELIMIT : CW_EFORMAT,
			     "not a kombu envelope: %s", jerr.msg);
		return err ? err->code : CW_EFORMAT;
	}
	env->root = root;
	body = json_object_get(root, "body");
	if (!json_is_object(root) || !json_is_string(body)) {
		cw_error_set(err, CW_EFORMAT, "not a kombu envelope: %s",
			     json_is_object(root) ? "no string \"body\"" : "not a JSON object");
		cw_envelope_clear(env);
		return CW_EFORMAT;
	}
	if ((rc = fill(env, err)) != CW_OK) {
		cw_envelope_clear(env);
		return rc;
	}
	return cw_envelope_take_body(env, json_string_value(body), json_string_length(body),
				     !strcmp(str_or(env->properties, "body_encoding", ""), "base64"),
				     err);
}

int cw_envelope_take_body(struct cw_envelope *env, const char *b, size_t blen, bool base64,
			  struct cw_error *err)
{
	if (base64) {
		env->body = malloc(blen / 4 * 3 + 1);
		if (!env->body) {
			cw_error_set(err, CW_ENOMEM, "out of memory");
			cw_envelope_clear(env);
			return CW_ENOMEM;
		}
		if (cw_base64_decode(b, blen, env->body, &env->body_len) != CW_OK) {
			cw_error_set(err, CW_EDECODE, "message body is not valid base64");
			cw_envelope_clear(env);
			return CW_EDECODE;
		}
	} else {
		env->body = malloc(blen + 1);
		if (!env->body) {
			cw_error_set(err, CW_ENOMEM, "out of memory");
			cw_envelope_clear(env);
			return CW_ENOMEM;
		}
		memcpy(env->body, b, blen);
		env->body_len = blen;
	}
	env->body[env->body_len] = '\0';
	return CW_OK;
}

int cw_proto_adopt_envelope(json_t *root, unsigned char *body, size_t body_len,
			    struct cw_envelope *env, struct cw_error *err)
{
	int rc;

	memset(env, 0, sizeof(*env));
	env->root = root;
	env->body = body;
	env->body_len = body_len;
	if (!json_is_object(root) || !body) {
		cw_error_set(err, CW_EFORMAT, "not a kombu envelope: %s",
			     body ? "not a JSON object" : "no body");
		cw_envelope_clear(env);
		return CW_EFORMAT;
	}
	if ((rc = fill(env, err)) != CW_OK) {
		cw_envelope_clear(env);
		return rc;
	}
	env->body[body_len] = '\0';
	return CW_OK;
}
