/*
 * The executor's part of the public task API: declared parameters bound as
 * CPython binds a call (with its TypeError texts), cw_task_arg, and
 * update_state/progress reaching the master as task-* events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "envelope.h"
#include "protocol/protocol.h"
#include "tasks/canvas.h"
#include "tasks/exec.h"
#include "tasks/registry.h"

static json_t *seen_args[4];

static enum cw_task_status t_bound(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				   json_t **result)
{
	(void)args;
	(void)kwargs;
	for (int i = 0; i < 4; i++)
		seen_args[i] = json_incref(cw_task_arg(ctx, i));
	cw_task_progress(ctx, 1, 3);
	cw_task_progress(ctx, 2, 3);   /* within the interval: skipped */
	cw_task_progress(ctx, 3, 3);   /* completes: always sent */
	cw_task_update_state(ctx, "Custom", json_pack("{s:i}", "x", 1));
	*result = json_string("ok");
	return CW_TASK_SUCCESS;
}

/* def f(a, b=None, *, c, d=None) */
static const struct cw_param params[] = {{"a", 0},
					 {"b", CW_PARAM_OPTIONAL},
					 {"c", CW_PARAM_KWONLY},
					 {"d", CW_PARAM_KWONLY | CW_PARAM_OPTIONAL},
					 {NULL, 0}};
static const struct cw_task_def def = {CW_ABI_VERSION, "t.f", t_bound, "", false, params};
static const struct cw_param two[] = {{"a", 0}, {"b", 0}, {"c", 0}, {NULL, 0}};
static const struct cw_task_def def2 = {CW_ABI_VERSION, "m.g", t_bound, "", false, two};

static char events[8][160];
static int nevents;

static void emit(void *arg, const char *type, const char *fields, size_t len)
{
	(void)arg;
	if (nevents < 8)
		snprintf(events[nevents++], sizeof(events[0]), "%s %.*s", type, (int)len, fields);
}

static struct cw_registry *reg;
static bool packed_mode; /* run() hands the request over packed, as the prefork master does */

/* Run task with args/kwargs; *out gets the outcome. */
static void run(const char *task, const char *args, const char *kwargs, struct cw_outcome *out)
{
	struct cw_exec_env env = {.reg = reg, .hostname = "h", .limits = CW_PROTO_LIMITS_DEFAULT,
				  .default_queue = "celery", .emit = emit};
	struct cw_outbox ob = {0};
	char *raw = test_envelope(task, args, kwargs);
	for (int i = 0; i < 4; i++) {
		json_decref(seen_args[i]);
		seen_args[i] = NULL;
	}
	nevents = 0;
	if (packed_mode) {
		/* as the prefork master hands it over: the request decoded once, packed */
		struct cw_envelope e;
		struct cw_request req;
		struct cw_error err = {0};
		size_t plen = 0;
		CHECK(cw_proto_decode_envelope(raw, strlen(raw), &env.limits, &e, &err) == CW_OK);
		CHECK(cw_proto_decode_request(&e, &env.limits, &req, &err) == CW_OK);
		char *packed = cw_request_pack(&req, e.priority, e.body, e.body_len, &plen);
		CHECK(packed != NULL);
		cw_exec_message(&env, raw, strlen(raw), packed, plen, "celery", out, &ob);
		free(packed);
		cw_request_clear(&req);
		cw_envelope_clear(&e);
	} else {
		cw_exec_message(&env, raw, strlen(raw), NULL, 0, "celery", out, &ob);
	}
	cw_outbox_free(&ob);
	free(raw);
}

static void type_error(const char *task, const char *args, const char *kwargs, const char *msg)
{
	struct cw_outcome o;
	run(task, args, kwargs, &o);
	CHECK(o.state == CW_STATE_FAILURE && !strcmp(o.exc_type, "TypeError"));
	if (strcmp(o.exc_message, msg))
		fprintf(stderr, "  got:  %s\n  want: %s\n", o.exc_message, msg);
	CHECK(!strcmp(o.exc_message, msg));
}

static void exec_checks(void)
{
	struct cw_outcome o;

	/* positional, keyword-only and defaults land in declaration order */
	run("t.f", "[1]", "{\"c\": 3}", &o);
	CHECK(o.state == CW_STATE_SUCCESS);
	CHECK(json_integer_value(seen_args[0]) == 1 && seen_args[1] == NULL &&
	      json_integer_value(seen_args[2]) == 3 && seen_args[3] == NULL);
	run("t.f", "[1, null]", "{\"c\": 3, \"d\": 4}", &o);
	CHECK(o.state == CW_STATE_SUCCESS && json_is_null(seen_args[1]) &&
	      json_integer_value(seen_args[3]) == 4);
	run("t.f", "[]", "{\"a\": 1, \"b\": 2, \"c\": 3}", &o);
	CHECK(o.state == CW_STATE_SUCCESS && json_integer_value(seen_args[1]) == 2);

	/* progress: the first and the completing step are stored, the one between skipped */
	CHECK(nevents == 3);
	CHECK(!strncmp(events[0], "task-progress ", 14) && strstr(events[0], "\"current\":1"));
	CHECK(!strncmp(events[1], "task-progress ", 14) && strstr(events[1], "\"current\":3"));
	CHECK(!strncmp(events[2], "task-custom ", 12) && strstr(events[2], "\"x\":1"));

	/* CPython's texts (3.11), keywords looked at before the positional count */
	type_error("t.f", "[1, 2, 3]", "{}",
		   "f() takes from 1 to 2 positional arguments but 3 were given");
	type_error("m.g", "[1, 2, 3, 4]", "{}", "g() takes 3 positional arguments but 4 were given");
	type_error("t.f", "[1, 2, 3]", "{\"c\": 1}",
		   "f() takes from 1 to 2 positional arguments but 3 positional arguments (and 1 "
		   "keyword-only argument) were given");
	type_error("t.f", "[1, 2, 3]", "{\"zz\": 1}", "f() got an unexpected keyword argument 'zz'");
	type_error("t.f", "[1]", "{\"a\": 1, \"c\": 2}", "f() got multiple values for argument 'a'");
	type_error("t.f", "[]", "{\"c\": 1}", "f() missing 1 required positional argument: 'a'");
	type_error("t.f", "[1]", "{}", "f() missing 1 required keyword-only argument: 'c'");
	type_error("m.g", "[]", "{}",
		   "g() missing 3 required positional arguments: 'a', 'b', and 'c'");
	type_error("m.g", "[1]", "{}", "g() missing 2 required positional arguments: 'b' and 'c'");
}

int main(void)
{
	reg = cw_registry_new();
	CHECK(cw_registry_add(reg, &def) == CW_OK);
	CHECK(cw_registry_add_from(reg, &def2, "m") == CW_OK);
	CHECK(cw_registry_add_from(reg, &def2, "other") == CW_EEXIST);
	CHECK(!strcmp(cw_registry_module(reg, "m.g"), "m"));

	exec_checks();       /* the envelope decoded where the task runs (solo) */
	packed_mode = true;
	exec_checks();       /* the request packed by the master (prefork) */

	for (int i = 0; i < 4; i++)
		json_decref(seen_args[i]);
	cw_registry_free(reg);
	return check_summary();
}
