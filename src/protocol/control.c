#include "protocol/control.h"

#include <fnmatch.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

void cw_control_clear(struct cw_control *c)
{
	json_decref(c->root);
	memset(c, 0, sizeof(*c));
}

int cw_proto_decode_control(const struct cw_envelope *env, const struct cw_proto_limits *lim,
			    struct cw_control *c, struct cw_error *err)
{
	struct cw_error jerr = {0};

	memset(c, 0, sizeof(*c));
	if (strcmp(env->content_type, "application/json") != 0) {
		cw_error_set(err, CW_ECONTENT, "control message of type %s refused",
			     env->content_type[0] ? env->content_type : "(none)");
		return CW_ECONTENT;
	}
	c->root = cw_json_loads((const char *)env->body, env->body_len, lim, &jerr);
	if (!c->root) {
		cw_error_set(err, CW_EDECODE, "control message: %s", jerr.msg);
		return CW_EDECODE;
	}
	c->method = json_string_value(json_object_get(c->root, "method"));
	if (!json_is_object(c->root) || !c->method) {
		cw_control_clear(c);
		cw_error_set(err, CW_EFORMAT, "control message without a method");
		return CW_EFORMAT;
	}
	c->arguments = json_object_get(c->root, "arguments");
	if (!json_is_object(c->arguments)) {
		json_object_set_new(c->root, "arguments", json_object());
		c->arguments = json_object_get(c->root, "arguments");
	}
	json_t *dest = json_object_get(c->root, "destination");
	c->destination = json_is_array(dest) && json_array_size(dest) ? dest : NULL;
	c->pattern = json_string_value(json_object_get(c->root, "pattern"));
	c->matcher = json_string_value(json_object_get(c->root, "matcher"));
	json_t *rt = json_object_get(c->root, "reply_to");
	c->reply_exchange = json_string_value(json_object_get(rt, "exchange"));
	c->reply_routing_key = json_string_value(json_object_get(rt, "routing_key"));
	c->ticket = json_string_value(json_object_get(c->root, "ticket"));
	json_t *exp = json_object_get(env->headers, "expires");
	c->expires = json_is_number(exp) ? json_number_value(exp) : 0;
	json_t *clock = json_object_get(env->headers, "clock");
	c->clock = json_is_integer(clock) ? (long long)json_integer_value(clock) : 0;
	return CW_OK;
}

bool cw_control_for_me(const struct cw_control *c, const char *hostname)
{
	if (c->destination) {
		size_t i;
		json_t *v;
		json_array_foreach(c->destination, i, v)
			if (json_is_string(v) && !strcmp(json_string_value(v), hostname))
				return true;
		return false;
	}
	if (c->pattern && c->matcher) {
		if (!strcmp(c->matcher, "glob"))
			return fnmatch(c->pattern, hostname, 0) == 0;
		if (!strcmp(c->matcher, "pcre")) {
			/* Python's re.match anchors at the start only; POSIX ERE is close enough for names */
			regex_t re;
			if (regcomp(&re, c->pattern, REG_EXTENDED | REG_NOSUB) != 0)
				return false;
			regmatch_t m;
			bool ok = regexec(&re, hostname, 1, &m, 0) == 0;
			regfree(&re);
			if (ok) {
				/* require the match to start at 0, like re.match */
				regex_t re2;
				char *anch = malloc(strlen(c->pattern) + 4);
				if (!anch)
					return false;
				strcpy(anch, "^(");
				strcat(anch, c->pattern);
				strcat(anch, ")");
				ok = regcomp(&re2, anch, REG_EXTENDED | REG_NOSUB) == 0 &&
				     regexec(&re2, hostname, 0, NULL, 0) == 0;
				regfree(&re2);
				free(anch);
			}
			return ok;
		}
		return false; /* kombu raises MatcherNotInstalled: the node ignores it */
	}
	return true;
}
