/*
 * Unit tests for src/protocol: envelopes captured from Debian's Python
 * Celery 5.2 (tests/unit/data), task protocol v1/v2, refusal of other
 * content types, hostile input, JSON with big integers, ISO-8601, result
 * meta text.  Run from tests/unit (meson sets the workdir).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/control.h"
#include "protocol/protocol.h"

#include "check.h"
#include "envelope_same.h"

static const struct cw_proto_limits lim = CW_PROTO_LIMITS_DEFAULT;

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cannot open %s (run from tests/unit)\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *p = malloc((size_t)n + 1);
	if (!p || fread(p, 1, (size_t)n, f) != (size_t)n)
		exit(1);
	p[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* Decode envelope + request from a captured file; returns the request rc. */
static int decode_file(const char *path, struct cw_envelope *env, struct cw_request *req,
		       struct cw_error *err)
{
	size_t len;
	char *raw = slurp(path, &len);
	int rc = cw_proto_decode_envelope(raw, len, &lim, env, err);
	free(raw);
	if (rc != CW_OK)
		return rc;
	return cw_proto_decode_request(env, &lim, req, err);
}

static void test_v2_capture(void)
{
	struct cw_envelope env;
	struct cw_request req;
	struct cw_error err = {0};
	char *name, *id;

	CHECK(decode_file("data/v2_eta_priority.json", &env, &req, &err) == CW_OK);
	CHECK(req.proto == 2 && !strcmp(req.task, "cworker.add"));
	CHECK(strlen(req.id) == 36 && !strcmp(req.id, req.root_id));
	CHECK(req.eta && req.expires && req.retries == 0 && req.group_index == -1);
	CHECK(env.priority == 3 && !strcmp(env.routing_key, "celery") && env.exchange[0] == '\0');
	CHECK(env.delivery_tag && strlen(env.delivery_tag) == 36);
	CHECK(json_array_size(req.args) == 2 && json_integer_value(json_array_get(req.args, 1)) == 2);
	json_t *big = json_object_get(req.kwargs, "big");
	CHECK(cw_json_is_bigint(big));
	char *txt = cw_json_dumps(req.kwargs, NULL);
	CHECK(txt && !strcmp(txt, "{\"big\":1180591620717411303424}"));
	free(txt);
	CHECK(json_is_object(req.embed) && json_object_get(req.embed, "callbacks"));
	double eta, exp;
	CHECK(cw_proto_parse_iso8601(req.eta, true, &eta) == CW_OK);
	CHECK(cw_proto_parse_iso8601(req.expires, true, &exp) == CW_OK && exp - eta > 45 && exp - eta < 55);
	CHECK(cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_OK);
	CHECK(!strcmp(name, "cworker.add") && !strcmp(id, req.id));
	free(name);
	free(id);
	cw_request_clear(&req);
	cw_envelope_clear(&env);

	CHECK(decode_file("data/v2_unicode.json", &env, &req, &err) == CW_OK);
	json_t *s = json_array_get(req.args, 0);
	CHECK(json_string_length(s) == strlen("ü😀") + 2);
	CHECK(!memcmp(json_string_value(s), "ü😀\0x", strlen("ü😀") + 2));
	cw_request_clear(&req);
	cw_envelope_clear(&env);
}

static void test_v1_capture(void)
{
	struct cw_envelope env;
	struct cw_request req;
	struct cw_error err = {0};
	char *name, *id;

	CHECK(decode_file("data/v1_eta.json", &env, &req, &err) == CW_OK);
	CHECK(req.proto == 1 && !strcmp(req.task, "cworker.add") && req.utc);
	CHECK(req.eta && !req.expires && json_array_size(req.args) == 2);
	CHECK(json_is_object(req.kwargs) && json_object_size(req.kwargs) == 0);
	CHECK(json_object_get(req.embed, "chain") && json_is_null(json_object_get(req.embed, "chain")));
	CHECK(cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_OK);
	CHECK(!strcmp(name, "cworker.add") && !strcmp(id, req.id));
	free(name);
	free(id);
	cw_request_clear(&req);
	cw_envelope_clear(&env);
}

static void test_pickle_refused(void)
{
	struct cw_envelope env;
	struct cw_request req;
	struct cw_error err = {0};
	char *name, *id;

	CHECK(decode_file("data/v2_pickle.json", &env, &req, &err) == CW_ECONTENT);
	CHECK(strstr(err.msg, "application/x-python-serialize") != NULL);
	/* v2: the name is still readable from the headers (NotRegistered must work) */
	CHECK(cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_OK && !strcmp(name, "cworker.add"));
	free(name);
	free(id);
	cw_envelope_clear(&env);
}

/* Build an envelope around a body (base64-encoded, as kombu does). */
static char *envelope(const char *ctype, const char *headers, const char *body)
{
	char *b64 = cw_base64_encode((const unsigned char *)body, strlen(body), NULL);
	size_t n = strlen(b64) + strlen(headers) + strlen(ctype) + 512;
	char *out = malloc(n);
	snprintf(out, n,
		 "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": \"%s\", "
		 "\"headers\": %s, \"properties\": {\"delivery_tag\": \"t1\", \"body_encoding\": "
		 "\"base64\", \"delivery_info\": {\"exchange\": \"\", \"routing_key\": \"q\"}}}",
		 b64, ctype, headers);
	free(b64);
	return out;
}

static int decode_text(const char *raw, struct cw_request *req, struct cw_error *err)
{
	struct cw_envelope env;
	int rc = cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, err);
	if (rc == CW_OK) {
		rc = cw_proto_decode_request(&env, &lim, req, err);
		if (rc == CW_OK)
			cw_request_clear(req);
	}
	cw_envelope_clear(&env);
	return rc;
}

static void test_bad_messages(void)
{
	struct cw_request req;
	struct cw_error err = {0};
	const char *v2h = "{\"task\": \"t\", \"id\": \"i\"}";
	struct {
		const char *ctype, *headers, *body;
		int want;
	} cases[] = {
		{"application/json", v2h, "[[1], {}, {}]", CW_OK},
		{"application/json", v2h, "[[1], {}, null]", CW_OK},
		{"application/json", v2h, "[[1], {}]", CW_EINVALTASK},
		{"application/json", v2h, "[\"x\", {}, {}]", CW_EINVALTASK},
		{"application/json", v2h, "[[], [], {}]", CW_EINVALTASK},
		{"application/json", v2h, "[[], {}, 5]", CW_EINVALTASK},
		{"application/json", v2h, "{\"a\": 1}", CW_EINVALTASK},
		{"application/json", v2h, "[[1], {}, {}", CW_EDECODE},
		{"application/json", v2h, "[[NaN], {}, {}]", CW_EDECODE},
		{"application/json", v2h, "[[1e999], {}, {}]", CW_EDECODE},
		{"application/x-yaml", v2h, "- 1", CW_ECONTENT},
		{"application/x-msgpack", v2h, "\x93", CW_ECONTENT},
		{"", v2h, "[[], {}, {}]", CW_ECONTENT},
		{"application/json", "{\"task\": \"t\"}", "[[], {}, {}]", CW_EINVALTASK},
		{"application/json", "{\"task\": \"t\", \"id\": \"i\", \"eta\": \"tomorrow\"}",
		 "[[], {}, {}]", CW_EINVALTASK},
		{"application/json", "{\"task\": \"t\", \"id\": \"i\", \"timelimit\": [1]}",
		 "[[], {}, {}]", CW_EINVALTASK},
		{"application/json", "{\"task\": \"t\", \"id\": \"i\", \"timelimit\": [10, 5.5]}",
		 "[[], {}, {}]", CW_OK},
		{"application/json", "{\"task\": \"t\", \"id\": \"i\", \"retries\": \"x\"}",
		 "[[], {}, {}]", CW_EINVALTASK},
		{"application/json", "{}", "{\"task\": \"t\", \"id\": \"i\", \"kwargs\": []}",
		 CW_EINVALTASK},
		{"application/json", "{}", "{\"task\": \"t\", \"id\": \"i\"}", CW_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *raw = envelope(cases[i].ctype, cases[i].headers, cases[i].body);
		int rc = decode_text(raw, &req, &err);
		if (rc != cases[i].want)
			fprintf(stderr, "case %zu: got %d want %d (%s)\n", i, rc, cases[i].want, err.msg);
		CHECK(rc == cases[i].want);
		free(raw);
	}

	/* timelimit is [hard, soft] */
	struct cw_envelope env;
	char *raw = envelope("application/json",
			     "{\"task\": \"t\", \"id\": \"i\", \"timelimit\": [10, 5.5]}", "[[], {}, {}]");
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_decode_request(&env, &lim, &req, &err) == CW_OK);
	CHECK(req.time_limit == 10 && req.soft_time_limit == 5.5);
	cw_request_clear(&req);
	cw_envelope_clear(&env);
	free(raw);

	/* garbage and broken envelopes never decode, never crash */
	const char *garbage[] = {"", "x", "null", "[]", "{}", "{\"body\": 5}", "\xff\xfe",
				 "{\"body\": \"@@@@\", \"properties\": {\"body_encoding\": \"base64\"}}",
				 "{\"body\": \"abc\", \"headers\": [1]}"};
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		int rc = cw_proto_decode_envelope(garbage[i], strlen(garbage[i]), &lim, &env, &err);
		CHECK(rc == CW_EFORMAT || rc == CW_EDECODE);
		cw_envelope_clear(&env);
	}
	/* v1 body that is not a task */
	raw = envelope("application/json", "{}", "[1, 2]");
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	char *name, *id;
	CHECK(cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_EFORMAT);
	cw_envelope_clear(&env);
	free(raw);
	/* v1 pickle body: the name cannot be read; a decode error */
	raw = envelope("application/x-python-serialize", "{}", "\x80\x04.");
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_peek_task(&env, &lim, &name, &id, &err) == CW_ECONTENT);
	cw_envelope_clear(&env);
	free(raw);
}

static void roundtrip(const char *in, const char *want)
{
	struct cw_error err = {0};
	json_t *v = cw_json_loads(in, strlen(in), &lim, &err);
	CHECK(v != NULL);
	if (!v) {
		fprintf(stderr, "  %s: %s\n", in, err.msg);
		return;
	}
	char *out = cw_json_dumps(v, NULL);
	if (strcmp(out, want))
		fprintf(stderr, "  roundtrip %s -> %s (want %s)\n", in, out, want);
	CHECK(!strcmp(out, want));
	free(out);
	json_decref(v);
}

static void test_json(void)
{
	struct cw_error err = {0};

	roundtrip("[1180591620717411303424, -1267650600228229401496703205376]",
		  "[1180591620717411303424,-1267650600228229401496703205376]");
	roundtrip("[9223372036854775807, -9223372036854775808]",
		  "[9223372036854775807,-9223372036854775808]");
	roundtrip("[9223372036854775808, -9223372036854775809]",
		  "[9223372036854775808,-9223372036854775809]");
	roundtrip("{\"k\": \"1180591620717411303424\"}", "{\"k\":\"1180591620717411303424\"}");
	roundtrip("[\"a\\\"b\\\\\", 100000000000000000000000, \"]\"]",
		  "[\"a\\\"b\\\\\",100000000000000000000000,\"]\"]");
	roundtrip("null", "null");
	roundtrip("\"x\\u0000y\"", "\"x\\u0000y\"");

	/* floats keep their value exactly */
	const char *floats[] = {"0.1", "1e-300", "1.7976931348623157e308", "-2.5", "5e-324"};
	for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++) {
		json_t *v = cw_json_loads(floats[i], strlen(floats[i]), &lim, &err);
		char *out = cw_json_dumps(v, NULL);
		CHECK(out && strtod(out, NULL) == strtod(floats[i], NULL));
		free(out);
		json_decref(v);
	}
	/* 10**400 as an integer literal */
	char big[410];
	big[0] = '1';
	memset(big + 1, '0', 400);
	big[401] = '\0';
	roundtrip(big, big);

	/* nesting limit */
	char deep[2000];
	memset(deep, '[', 600);
	memset(deep + 600, ']', 600);
	deep[1200] = '\0';
	CHECK(cw_json_loads(deep, 1200, &lim, &err) == NULL && err.code == CW_ELIMIT);
	struct cw_proto_limits small = {16, 8};
	CHECK(cw_json_loads("[1,2,3,4,5,6,7,8,9]", 19, &small, &err) == NULL && err.code == CW_ELIMIT);

	json_t *b = cw_json_bigint("-123456789012345678901234567890");
	CHECK(cw_json_is_bigint(b));
	json_decref(b);
	b = cw_json_bigint("42");
	CHECK(json_is_integer(b) && json_integer_value(b) == 42);
	json_decref(b);
	CHECK(cw_json_bigint("12a") == NULL && cw_json_bigint("-") == NULL);
}

static void test_base64(void)
{
	unsigned char out[16];
	size_t n;
	CHECK(cw_base64_decode("aGVsbG8=", 8, out, &n) == CW_OK && n == 5 && !memcmp(out, "hello", 5));
	CHECK(cw_base64_decode("aGk=", 4, out, &n) == CW_OK && n == 2);
	CHECK(cw_base64_decode("aA==", 4, out, &n) == CW_OK && n == 1);
	CHECK(cw_base64_decode("aGk", 3, out, &n) != CW_OK);
	CHECK(cw_base64_decode("a=Gk", 4, out, &n) != CW_OK);
	CHECK(cw_base64_decode("aG\nk", 4, out, &n) != CW_OK);
	CHECK(cw_base64_decode("====", 4, out, &n) != CW_OK);
	char *e = cw_base64_encode((const unsigned char *)"hello", 5, &n);
	CHECK(!strcmp(e, "aGVsbG8=") && n == 8);
	free(e);
}

static void test_iso8601(void)
{
	double t;
	char buf[32];
	CHECK(cw_proto_parse_iso8601("1970-01-01T00:00:00", true, &t) == CW_OK && t == 0);
	CHECK(cw_proto_parse_iso8601("2026-11-24T11:40:04.123456+00:00", true, &t) == CW_OK);
	CHECK(fabs(t - 1795520404.123456) < 1e-6);
	CHECK(cw_proto_parse_iso8601("2026-11-24T13:40:04.123456+02:00", true, &t) == CW_OK);
	CHECK(fabs(t - 1795520404.123456) < 1e-6);
	CHECK(cw_proto_parse_iso8601("2026-11-24T06:10:04-05:30", true, &t) == CW_OK && t == 1795520404);
	CHECK(cw_proto_parse_iso8601("2026-11-24T11:40:04Z", true, &t) == CW_OK && t == 1795520404);
	CHECK(cw_proto_parse_iso8601("2024-02-29T00:00:00", true, &t) == CW_OK && t == 1709164800);
	CHECK(cw_proto_parse_iso8601("2026-13-01T00:00:00", true, &t) != CW_OK);
	CHECK(cw_proto_parse_iso8601("2026-11-24T11:40:04+0", true, &t) != CW_OK);
	CHECK(cw_proto_parse_iso8601("2026-11-24T11:40:04.", true, &t) != CW_OK);
	CHECK(cw_proto_parse_iso8601("yesterday", true, &t) != CW_OK);
	cw_proto_format_iso8601(1795520404.123456, buf);
	CHECK(!strcmp(buf, "2026-11-24T11:40:04.123456"));
	cw_proto_format_iso8601(0, buf);
	CHECK(!strcmp(buf, "1970-01-01T00:00:00.000000"));
}

static void test_result_meta(void)
{
	json_t *v = cw_json_loads("[1, 1180591620717411303424]", 27, &lim, NULL);
	struct cw_result_meta m = {.state = CW_STATE_SUCCESS, .task_id = "abc", .result = v,
				   .date_done = 1795520404.5};
	char *txt = cw_proto_encode_result_meta(&m, NULL);
	CHECK(!strcmp(txt, "{\"status\":\"SUCCESS\",\"result\":[1,1180591620717411303424],"
			   "\"traceback\":null,\"children\":[],\"date_done\":\"2026-11-24T11:40:04.500000\","
			   "\"task_id\":\"abc\"}"));
	free(txt);

	json_t *args = json_pack("[i]", 7), *kwargs = json_object();
	struct cw_result_meta f = {.state = CW_STATE_FAILURE, .task_id = "t", .exc_type = "ValueError",
				   .exc_module = "builtins", .exc_message = "boom", .traceback = "tb",
				   .date_done = 0, .parent_id = "p", .extended = true, .name = "n",
				   .worker = "w@h", .queue = "celery", .args = args, .kwargs = kwargs,
				   .retries = 2};
	txt = cw_proto_encode_result_meta(&f, NULL);
	CHECK(!strcmp(txt, "{\"status\":\"FAILURE\",\"result\":{\"exc_type\":\"ValueError\",\"exc_message\":"
			   "[\"boom\"],\"exc_module\":\"builtins\"},\"traceback\":\"tb\",\"children\":[],"
			   "\"date_done\":\"1970-01-01T00:00:00.000000\",\"parent_id\":\"p\",\"name\":\"n\","
			   "\"args\":[7],\"kwargs\":{},\"worker\":\"w@h\",\"retries\":2,\"queue\":\"celery\","
			   "\"task_id\":\"t\"}"));
	free(txt);
	struct cw_result_meta p = {.state = CW_STATE_STARTED, .task_id = "s"};
	txt = cw_proto_encode_result_meta(&p, NULL);
	CHECK(strstr(txt, "\"date_done\":null") && strstr(txt, "\"result\":null"));
	free(txt);
	json_decref(args);
	json_decref(kwargs);
	json_decref(v);
	CHECK(!strcmp(cw_state_name(CW_STATE_REVOKED), "REVOKED"));
}

static void control_case(const char *body, const char *host, bool want)
{
	struct cw_envelope env;
	struct cw_control c;
	struct cw_error err = {0};
	char *raw = envelope("application/json", "{\"clock\": 7, \"expires\": 12.5}", body);
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_decode_control(&env, &lim, &c, &err) == CW_OK);
	CHECK(c.clock == 7 && c.expires == 12.5);
	CHECK(cw_control_for_me(&c, host) == want);
	cw_control_clear(&c);
	cw_envelope_clear(&env);
	free(raw);
}

static void test_control(void)
{
	const char *rv = "{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"a\"}, "
			 "\"destination\": null, \"pattern\": null, \"matcher\": null}";
	control_case(rv, "celery@h", true);
	control_case("{\"method\": \"ping\", \"destination\": [\"w1@h\", \"w2@h\"]}", "w2@h", true);
	control_case("{\"method\": \"ping\", \"destination\": [\"w1@h\"]}", "w2@h", false);
	control_case("{\"method\": \"ping\", \"pattern\": \"w*@h\", \"matcher\": \"glob\"}", "w9@h", true);
	control_case("{\"method\": \"ping\", \"pattern\": \"x*\", \"matcher\": \"glob\"}", "w9@h", false);
	control_case("{\"method\": \"ping\", \"pattern\": \"w[0-9]\", \"matcher\": \"pcre\"}", "w9@h", true);
	control_case("{\"method\": \"ping\", \"pattern\": \"[0-9]\", \"matcher\": \"pcre\"}", "w9@h", false);
	control_case("{\"method\": \"ping\", \"pattern\": \"w\", \"matcher\": \"nope\"}", "w9@h", false);

	struct cw_envelope env;
	struct cw_control c;
	struct cw_error err = {0};
	char *raw = envelope("application/json", "{}", "{\"arguments\": {}}");
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_decode_control(&env, &lim, &c, &err) == CW_EFORMAT);
	cw_envelope_clear(&env);
	free(raw);
	raw = envelope("application/x-python-serialize", "{}", "x");
	CHECK(cw_proto_decode_envelope(raw, strlen(raw), &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_decode_control(&env, &lim, &c, &err) == CW_ECONTENT);
	cw_envelope_clear(&env);
	free(raw);
}

static void repr_case(const char *json, bool tuple, const char *want)
{
	struct cw_error err = {0};
	json_t *v = cw_json_loads(json, strlen(json), &lim, &err);
	char *got = v ? cw_proto_pyrepr(v, tuple, 1024) : NULL;
	CHECK(got && !strcmp(got, want));
	if (got && strcmp(got, want))
		fprintf(stderr, "  repr(%s) = %s, want %s\n", json, got, want);
	free(got);
	json_decref(v);
}

static void test_pyrepr(void)
{
	repr_case("[1]", true, "(1,)");
	repr_case("[2, 3]", true, "(2, 3)");
	repr_case("[]", true, "()");
	repr_case("{\"a\": [1, \"x\"], \"b\": null}", false, "{'a': [1, 'x'], 'b': None}");
	repr_case("[true, false, 1.5, 2.0]", false, "[True, False, 1.5, 2.0]");
	repr_case("[\"it's\"]", false, "[\"it's\"]");
	repr_case("[\"a\\nb\\\\\"]", false, "['a\\nb\\\\']");
	repr_case("[123456789012345678901234567890]", false, "[123456789012345678901234567890]");
	/* exception reprs as Python prints them */
	json_t *ea = json_pack("[s,i]", "it's", 3), *es = json_string("boom");
	char *er = cw_proto_exc_repr("KeyError", ea, 100), *es_r = cw_proto_exc_repr("ValueError", es, 100);
	CHECK(er && !strcmp(er, "KeyError(\"it's\", 3)"));
	CHECK(es_r && !strcmp(es_r, "ValueError('boom')"));
	free(er);
	free(es_r);
	json_decref(ea);
	json_decref(es);
	/* cut at max bytes with a visible ellipsis */
	json_t *big = json_array();
	for (int i = 0; i < 1000; i++)
		json_array_append_new(big, json_integer(i));
	char *r = cw_proto_pyrepr(big, true, 50);
	CHECK(r && strlen(r) == 50 && !strcmp(r + 47, "..."));
	free(r);
	json_decref(big);
}

/* A chain step as Celery's producer writes it into embed.chain. */
static const char chain_sig[] =
	"{\"task\": \"cworker.add\", \"args\": [2], \"kwargs\": {}, \"options\": "
	"{\"task_id\": \"89db7546-6fbe-436a-810b-8a623b823908\", \"reply_to\": \"r-1\", "
	"\"link_error\": {\"task\": \"cworker.echo\", \"args\": [], \"kwargs\": {}, "
	"\"options\": {}, \"subtask_type\": null, \"immutable\": true}, "
	"\"countdown\": 10, \"expires\": 60, \"soft_time_limit\": 5, \"priority\": 3}, "
	"\"subtask_type\": null, \"immutable\": false}";

static void test_signature_message(void)
{
	struct cw_error err = {0};
	json_t *sig = cw_json_loads(chain_sig, strlen(chain_sig), &lim, &err);
	json_t *prepend = json_pack("[i]", 1);
	json_t *rest = json_pack("[{s:s}]", "task", "cworker.echo");
	struct cw_sig_apply ap = {.new_id = "new-id", .new_tag = "tag-1", .parent_id = "parent",
				  .root_id = "root", .chain = rest, .default_queue = "celery",
				  .origin = "gen1@host", .now = 1764547200.0};
	struct cw_task_msg m;
	struct cw_sig_owned own;

	CHECK(sig != NULL);
	CHECK(cw_proto_sig_to_msg(sig, prepend, &ap, &m, &own, &err) == CW_OK);
	CHECK(!strcmp(m.id, "89db7546-6fbe-436a-810b-8a623b823908"));
	CHECK(!strcmp(m.queue, "celery") && m.priority == 3);
	size_t len;
	char *text = cw_proto_encode_task(&m, &len);
	CHECK(text != NULL);

	/* what we build is what our own decoder (and Celery) reads */
	struct cw_envelope env;
	struct cw_request req;
	CHECK(cw_proto_decode_envelope(text, len, &lim, &env, &err) == CW_OK);
	CHECK(cw_proto_decode_request(&env, &lim, &req, &err) == CW_OK);
	CHECK(req.proto == 2 && !strcmp(req.task, "cworker.add"));
	CHECK(!strcmp(req.id, "89db7546-6fbe-436a-810b-8a623b823908"));
	CHECK(!strcmp(req.parent_id, "parent") && !strcmp(req.root_id, "root"));
	CHECK(json_array_size(req.args) == 2 && json_integer_value(json_array_get(req.args, 0)) == 1 &&
	      json_integer_value(json_array_get(req.args, 1)) == 2);
	CHECK(req.soft_time_limit == 5 && req.time_limit == 0);
	CHECK(req.eta && !strcmp(req.eta, "2025-12-01T00:00:10.000000+00:00"));
	CHECK(req.expires && !strcmp(req.expires, "2025-12-01T00:01:00.000000+00:00"));
	CHECK(req.argsrepr && !strcmp(req.argsrepr, "(1, 2)"));
	CHECK(!strcmp(env.delivery_tag, "tag-1") && !strcmp(env.routing_key, "celery"));
	CHECK(env.correlation_id && !strcmp(env.correlation_id, req.id));
	CHECK(env.priority == 3);
	json_t *ch = json_object_get(req.embed, "chain");
	CHECK(json_array_size(ch) == 1);
	json_t *eb = json_object_get(req.embed, "errbacks");
	CHECK(json_array_size(eb) == 1 &&
	      !strcmp(json_string_value(json_object_get(json_array_get(eb, 0), "task")),
		      "cworker.echo"));
	CHECK(!strcmp(json_string_value(json_object_get(env.headers, "origin")), "gen1@host"));
	cw_request_clear(&req);
	cw_envelope_clear(&env);
	free(text);
	cw_sig_owned_clear(&own);

	/* immutable: the parent's result is not passed on */
	json_object_set_new(sig, "immutable", json_true());
	CHECK(cw_proto_sig_to_msg(sig, prepend, &ap, &m, &own, &err) == CW_OK);
	CHECK(json_array_size(m.args) == 1);
	cw_sig_owned_clear(&own);

	/* routing: options.queue wins; no task_id -> the new one */
	json_t *opts = json_object_get(sig, "options");
	json_object_set_new(opts, "queue", json_string("pdf"));
	json_object_del(opts, "task_id");
	CHECK(cw_proto_sig_to_msg(sig, NULL, &ap, &m, &own, &err) == CW_OK);
	CHECK(!strcmp(m.queue, "pdf") && !strcmp(m.routing_key, "pdf") && !strcmp(m.id, "new-id"));
	cw_sig_owned_clear(&own);

	/* canvas types and junk are refused with a reason */
	json_object_set_new(sig, "subtask_type", json_string("chord"));
	CHECK(cw_proto_sig_to_msg(sig, NULL, &ap, &m, &own, &err) == CW_EINVALTASK);
	CHECK(strstr(err.msg, "chord") != NULL);
	json_t *junk = json_pack("{s:i}", "task", 5);
	CHECK(cw_proto_sig_to_msg(junk, NULL, &ap, &m, &own, &err) == CW_EINVALTASK);
	CHECK(cw_proto_sig_to_msg(json_array_get(rest, 0), NULL, &ap, &m, &own, &err) == CW_OK);
	cw_sig_owned_clear(&own);
	json_t *badargs = json_pack("{s:s,s:i}", "task", "x", "args", 3);
	CHECK(cw_proto_sig_to_msg(badargs, NULL, &ap, &m, &own, &err) == CW_EINVALTASK);
	json_decref(badargs);
	json_decref(junk);
	json_decref(sig);
	json_decref(prepend);
	json_decref(rest);
}

/* What the master packs, the child unpacks the same; a cut or bad buffer is refused. */
static void test_request_pack(void)
{
	const char *files[] = {"data/v2_eta_priority.json", "data/v1_eta.json",
			       "data/v2_unicode.json"};
	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		struct cw_envelope env;
		struct cw_request a, b;
		struct cw_error err = {0};
		size_t len = 0;
		int pri = -1;
		CHECK(decode_file(files[f], &env, &a, &err) == CW_OK);
		char *buf = cw_request_pack(&a, env.priority, env.body, env.body_len, &len);
		CHECK(buf != NULL);
		CHECK(cw_request_unpack(buf, len, &lim, &b, &pri, &err) == CW_OK);
		CHECK(pri == env.priority && b.proto == a.proto && b.retries == a.retries &&
		      b.group_index == a.group_index && b.time_limit == a.time_limit &&
		      b.soft_time_limit == a.soft_time_limit && b.ignore_result == a.ignore_result &&
		      b.utc == a.utc);
		CHECK(same_str(a.id, b.id) && same_str(a.task, b.task) && same_str(a.root_id, b.root_id) &&
		      same_str(a.parent_id, b.parent_id) && same_str(a.group, b.group) &&
		      same_str(a.shadow, b.shadow) && same_str(a.origin, b.origin) &&
		      same_str(a.eta, b.eta) && same_str(a.expires, b.expires) &&
		      same_str(a.argsrepr, b.argsrepr) && same_str(a.kwargsrepr, b.kwargsrepr) &&
		      same_str(a.reply_to, b.reply_to) &&
		      same_str(a.correlation_id, b.correlation_id));
		CHECK(json_equal(a.args, b.args) && json_equal(a.kwargs, b.kwargs) &&
		      json_equal(a.embed, b.embed));
		cw_request_clear(&b);
		/* every shorter buffer is malformed (no read past it: ASan), and so is a longer one */
		for (size_t n = 0; n < len; n++) {
			char *cut = malloc(n ? n : 1);
			memcpy(cut, buf, n);
			CHECK(cw_request_unpack(cut, n, &lim, &b, &pri, &err) == CW_EFORMAT);
			CHECK(b.id == NULL && b.args == NULL);
			free(cut);
		}
		char *longer = malloc(len + 1);
		memcpy(longer, buf, len);
		longer[len] = ' ';
		CHECK(cw_request_unpack(longer, len + 1, &lim, &b, &pri, &err) == CW_EFORMAT);
		free(longer);
		free(buf);
		cw_request_clear(&a);
		cw_envelope_clear(&env);
	}
}

/*
 * cw_proto_adopt_envelope (the AMQP transport's path: no text parsed) reads
 * exactly as the same envelope encoded and decoded; a non-object or a
 * missing body is refused and nothing leaks.
 */
/* A Celery 5.2 send_task('cworker.noop') envelope as it sits on the Redis list; %s: a header. */
static const char celery_envelope[] =
	"{\"body\": \"W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsLCAiZXJyYmFja3MiOiBudWxsLCAiY2hhaW4iOiBud"
	"WxsLCAiY2hvcmQiOiBudWxsfV0=\", \"content-encoding\": \"utf-8\", \"content-type\": "
	"\"application/json\", \"headers\": {\"lang\": \"py\", \"task\": \"cworker.noop\", \"id\": "
	"\"e9586ac6-6e31-4672-97a2-dbd523168ee1\", \"shadow\": null, \"eta\": null, \"expires\": "
	"null, \"group\": null, \"group_index\": null, \"retries\": 0, \"timelimit\": [null, null], "
	"\"root_id\": \"e9586ac6-6e31-4672-97a2-dbd523168ee1\", \"parent_id\": null, \"argsrepr\": "
	"\"()\", \"kwargsrepr\": \"{}\", \"origin\": \"gen1670@vm\", \"ignore_result\": false%s}, "
	"\"properties\": {\"correlation_id\": \"e9586ac6-6e31-4672-97a2-dbd523168ee1\", "
	"\"reply_to\": \"a2a85067-070b-3188-88fe-5566835a7f7f\", \"delivery_mode\": 2, "
	"\"delivery_info\": {\"exchange\": \"\", \"routing_key\": \"celery\"}, \"priority\": 0, "
	"\"body_encoding\": \"base64\", \"delivery_tag\": "
	"\"64181e74-fe92-4dae-9c60-396581880401\"}}";

/* Read both ways: CHECK they agree, and that the scanner took it iff want_scanned. */
static void both_ways(const char *text, size_t len, bool want_scanned, const char *what)
{
	bool scanned = false;
	const char *why = envelope_readings_differ(text, len, &lim, &scanned);
	if (why || scanned != want_scanned)
		fprintf(stderr, "  %s: %s (scanned %d)\n", what, why ? why : "scanner", scanned);
	CHECK(!why && scanned == want_scanned);
}

static void with_header(const char *extra, bool want_scanned)
{
	char *text = NULL;
	CHECK(asprintf(&text, celery_envelope, extra) > 0);
	both_ways(text, strlen(text), want_scanned, extra);
	free(text);
}

/* One edit of the Celery envelope: its first `from` becomes `to`. */
struct change {
	const char *from, *to;
};

/* The envelope with its first `from` replaced by `to`. */
static void with_change(const char *from, const char *to, bool want_scanned)
{
	char *text = NULL, *out = NULL;
	CHECK(asprintf(&text, celery_envelope, "") > 0);
	char *at = strstr(text, from);
	CHECK(at != NULL);
	if (at && asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)) > 0)
		both_ways(out, strlen(out), want_scanned, to);
	free(out);
	free(text);
}

/*
 * cw_proto_decode_task_envelope reads the plain envelopes Celery sends in one
 * pass, and everything else exactly as the tree reader does.
 */
static void test_scanned_envelope(void)
{
	struct cw_envelope env;
	struct cw_request req;
	struct cw_error err = {0};
	char *text = NULL;

	CHECK(asprintf(&text, celery_envelope, "") > 0);
	CHECK(cw_proto_decode_task_envelope(text, strlen(text), &lim, &env, &err) == CW_OK);
	CHECK(env.task && !env.root && !env.headers && !env.properties);
	CHECK(env.task && !strcmp(env.task->task, "cworker.noop") &&
	      !strcmp(env.routing_key, "celery") &&
	      !strcmp(env.delivery_tag, "64181e74-fe92-4dae-9c60-396581880401") &&
	      !strcmp(env.content_type, "application/json") && env.priority == 0 &&
	      !env.redelivered && env.task->group_index == -1 && !env.task->eta);
	CHECK(cw_proto_decode_request(&env, &lim, &req, &err) == CW_OK);
	CHECK(!strcmp(req.origin, "gen1670@vm") && json_array_size(req.args) == 0 &&
	      !strcmp(req.reply_to, "a2a85067-070b-3188-88fe-5566835a7f7f"));
	cw_request_clear(&req);
	cw_envelope_clear(&env);
	both_ways(text, strlen(text), true, "celery envelope");

	/* the captured Celery messages: protocol 2 with ETA and priority is scanned; escapes
	 * (unicode) and protocol 1 are not; all read alike */
	static const struct {
		const char *file;
		bool scanned;
	} files[] = {{"data/v2_eta_priority.json", true}, {"data/v2_unicode.json", false},
		     {"data/v1_eta.json", false}, {"data/v2_pickle.json", true}};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		size_t n;
		char *raw = slurp(files[i].file, &n);
		both_ways(raw, n, files[i].scanned, files[i].file);
		free(raw);
	}

	/* fields the scanner reads, with values */
	static const struct change read[] = {
		{"\"retries\": 0", "\"retries\": 3, \"x\": [{}]"},
		{"\"group_index\": null", "\"group_index\": 2"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [30, 12.5e0]"},
		{"\"timelimit\": [null, null]", "\"timelimit\": null"},
		{"\"shadow\": null", "\"shadow\": \"s\""},
		{"\"eta\": null", "\"eta\": \"2026-12-07T10:00:00+00:00\""},
		{"\"eta\": null", "\"eta\": \"not a time\""}, /* refused alike */
		{"\"ignore_result\": false", "\"ignore_result\": true"},
		{"\"priority\": 0", "\"priority\": 7"},
		{"\"priority\": 0", "\"priority\": 7.5"},
		{"\"priority\": 0", "\"priority\": \"7\""},
		{"\"delivery_tag\": \"", "\"x\": 1, \"delivery_tag\": \""},
		{"\"routing_key\": \"celery\"", "\"routing_key\": \"celery\", \"redelivered\": true"},
		{"\"body_encoding\": \"base64\"", "\"body_encoding\": \"base65\""},
		{"\"body\": \"W1td", "\"body\": \"W1sx"},   /* body not JSON: refused alike */
		{"\"application/json\"", "\"application/x-python-serialize\""},
	};
	for (size_t i = 0; i < sizeof(read) / sizeof(read[0]); i++)
		with_change(read[i].from, read[i].to, true);
	with_change("W1td", "W1t!", false); /* bad base64: refused alike, after the scan */
	/* left to the tree: repeats, odd types, escapes, non-ASCII, big or odd numbers */
	static const struct change tree[] = {
		{"\"retries\": 0", "\"retries\": 1.0"},
		{"\"retries\": 0", "\"retries\": 99999999999999999999"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [-1, null]"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [1]"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [\"1\", null]"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [1e999, null]"},
		{"\"timelimit\": [null, null]", "\"timelimit\": [99999999999999999999, 1]"},
		{"\"argsrepr\": \"()\"", "\"argsrepr\": \"(\\\"a\\\",)\""},
		{"\"kwargsrepr\": \"{}\"", "\"kwargsrepr\": \"{'k': '\xc3\xa9'}\""},
		{"\"id\": \"e9", "\"id\": 7, \"x\": \"e9"},
		{"\"task\": \"cworker.noop\"", "\"task\": null"},
		{"\"lang\"", "\"task\": \"other\", \"lang\""},
		{"\"headers\": {", "\"headers\": null, \"x\": {"},
		{"\"properties\": {", "\"properties\": 1, \"x\": {"},
		{"\"delivery_info\": {", "\"delivery_info\": [], \"x\": {"},
		{"\"content-type\": \"application/json\"", "\"content-type\": 5"},
		{"\"delivery_tag\": \"", "\"delivery_tag\": 99999999999999999999, \"x\": \""},
		{"\"body\": \"W1td", "\"body\": 5, \"x\": \"W1td"},
		{"\"body\"", "\"b\\u006fdy\""},
		{"{\"body\"", "[{\"body\""},
	};
	for (size_t i = 0; i < sizeof(tree) / sizeof(tree[0]); i++)
		with_change(tree[i].from, tree[i].to, false);
	/* read by the scanner, whatever they hold: fields it skips */
	static const char *const skipped[] = {
		", \"x\": 99999999999999999999", ", \"x\": -0.5e-3", ", \"x\": [[[]], {\"a\": {}}]",
		", \"x\": true, \"y\": false, \"z\": null", ", \"lang\": 1",
	};
	for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
		with_header(skipped[i], true);
	/* trailing text, nesting at the limit: refused alike */
	with_change("}}", "}} x", false);
	static const struct cw_proto_limits shallow = {1u << 20, 3};
	bool deep;
	CHECK(!envelope_readings_differ(text, strlen(text), &shallow, &deep) && !deep);
	free(text);

	/* every prefix, and every byte replaced by each of a few JSON-significant ones */
	CHECK(asprintf(&text, celery_envelope, "") > 0);
	size_t len = strlen(text);
	long scanned = 0, differ = 0;
	static const char subst[] = "\"\\{}[],:0-.eEtn \x01\x80";
	for (size_t i = 0; i <= len; i++) {
		bool sc;
		if (envelope_readings_differ(text, i, &lim, &sc))
			differ++;
		scanned += sc;
		for (size_t k = 0; k < sizeof(subst) - 1 && i < len; k++) {
			char keep = text[i];
			text[i] = subst[k];
			if (envelope_readings_differ(text, len, &lim, &sc)) {
				if (!differ)
					fprintf(stderr, "  differ at %zu ('%c')\n", i, subst[k]);
				differ++;
			}
			scanned += sc;
			text[i] = keep;
		}
	}
	CHECK(differ == 0);
	CHECK(scanned > 1000); /* the scanner read many of them */
	free(text);
}

static void test_adopt_envelope(void)
{
	struct cw_error err = {0};
	static const char payload[] = "[[2, 3], {\"k\": 1}, {}]";
	json_t *root = json_pack(
		"{s:s,s:s,s:{s:s,s:s,s:b},s:{s:s,s:s,s:s,s:i,s:{s:s,s:s,s:b},s:s}}",
		"content-type", "application/json", "content-encoding", "utf-8",
		"headers", "task", "cworker.add", "id", "abc", "redelivered", 0,
		"properties", "correlation_id", "abc", "reply_to", "r1", "delivery_tag", "7:42",
		"priority", 3, "delivery_info", "exchange", "", "routing_key", "celery",
		"redelivered", 1, "body_encoding", "base64");
	size_t blen = 0, tlen = 0;
	char *b64 = cw_base64_encode((const unsigned char *)payload, strlen(payload), &blen);
	json_object_set_new(root, "body", json_stringn(b64, blen));
	free(b64);
	char *text = cw_json_dumps(root, &tlen);
	struct cw_envelope dec, ad;
	CHECK(cw_proto_decode_envelope(text, tlen, &lim, &dec, &err) == CW_OK);
	unsigned char *body = malloc(sizeof(payload));
	memcpy(body, payload, sizeof(payload) - 1);
	CHECK(cw_proto_adopt_envelope(root, body, sizeof(payload) - 1, &ad, &err) == CW_OK);
	CHECK(!strcmp(ad.content_type, dec.content_type));
	CHECK(!strcmp(ad.content_encoding, dec.content_encoding));
	CHECK(json_equal(ad.headers, dec.headers) && json_equal(ad.properties, dec.properties));
	CHECK(!strcmp(ad.delivery_tag, dec.delivery_tag) && !strcmp(ad.delivery_tag, "7:42"));
	CHECK(!strcmp(ad.correlation_id, dec.correlation_id) && !strcmp(ad.reply_to, dec.reply_to));
	CHECK(ad.priority == 3 && dec.priority == 3);
	CHECK(!strcmp(ad.exchange, dec.exchange) && !strcmp(ad.routing_key, "celery") &&
	      !strcmp(dec.routing_key, "celery"));
	CHECK(ad.redelivered && dec.redelivered);
	CHECK(ad.body_len == dec.body_len && !memcmp(ad.body, dec.body, dec.body_len) &&
	      ad.body[ad.body_len] == '\0');
	struct cw_request ra, rd;
	CHECK(cw_proto_decode_request(&ad, &lim, &ra, &err) == CW_OK);
	CHECK(cw_proto_decode_request(&dec, &lim, &rd, &err) == CW_OK);
	CHECK(!strcmp(ra.task, rd.task) && !strcmp(ra.id, "abc") && json_equal(ra.args, rd.args));
	cw_request_clear(&ra);
	cw_request_clear(&rd);
	cw_envelope_clear(&ad);
	cw_envelope_clear(&dec);
	free(text);

	/* absent headers and properties become empty objects, as in a decode */
	CHECK(cw_proto_adopt_envelope(json_object(), calloc(1, 1), 0, &ad, &err) == CW_OK);
	CHECK(json_is_object(ad.headers) && json_is_object(ad.properties) && ad.body_len == 0);
	cw_envelope_clear(&ad);
	/* refused: not an object, headers not a mapping, no body; each takes what it was given */
	CHECK(cw_proto_adopt_envelope(json_array(), calloc(1, 1), 0, &ad, &err) == CW_EFORMAT);
	CHECK(cw_proto_adopt_envelope(json_pack("{s:[i]}", "headers", 1), calloc(1, 1), 0, &ad,
				      &err) == CW_EFORMAT);
	CHECK(cw_proto_adopt_envelope(json_object(), NULL, 0, &ad, &err) == CW_EFORMAT);
}

int main(void)
{
	test_pyrepr();
	test_signature_message();
	test_control();
	test_v2_capture();
	test_v1_capture();
	test_pickle_refused();
	test_request_pack();
	test_bad_messages();
	test_json();
	test_base64();
	test_adopt_envelope();
	test_scanned_envelope();
	test_iso8601();
	test_result_meta();
	return check_summary();
}
