/*
 * Running one task message: decode, look up, call, store the result.
 * Shared by prefork children and the solo pool.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "tasks/canvas.h"
#include "tasks/exec_cancel.h"
#include "loop/loop.h"
#include "tasks/exec.h"
#include "tasks/registry.h"
#include "util/log.h"
#include "util/uuid.h"

/* Parameters a task may declare (struct cw_param), at most. */
#define MAX_PARAMS 64

struct cw_task_ctx {
	const struct cw_request *req;
	const struct cw_exec_env *env;
	const char *queue;
	volatile sig_atomic_t *cancel;
	json_t *bound[MAX_PARAMS];   /* declared parameters' values (borrowed; NULL = left out) */
	int nbound;
	double progress_at;          /* monotonic time of the last stored progress */
	char *exc_type, *exc_module, *exc_message;
	double retry_countdown;
	int ncounters;
	struct cw_counter counters[CW_OUTCOME_COUNTERS];
	bool counter_dropped;      /* logged once per run */
};

/* Python's builtin exception names: raised as themselves by AsyncResult.get(). */
static const char *const builtin_excs[] = {
	"ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError",
	"EOFError", "Exception", "FileExistsError", "FileNotFoundError", "FloatingPointError",
	"ImportError", "IndexError", "InterruptedError", "IsADirectoryError", "KeyError",
	"LookupError", "MemoryError", "ModuleNotFoundError", "NameError", "NotADirectoryError",
	"NotImplementedError", "OSError", "OverflowError", "PermissionError", "RecursionError",
	"ReferenceError", "RuntimeError", "StopIteration", "SyntaxError", "SystemError",
	"TimeoutError", "TypeError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
	"ValueError", "ZeroDivisionError", "ConnectionError", "BrokenPipeError",
	"ConnectionAbortedError", "ConnectionRefusedError", "ConnectionResetError",
	"ChildProcessError", "ProcessLookupError", "BlockingIOError", "IOError", "EnvironmentError",
};

static const char *default_module(const char *exc_type)
{
	for (size_t i = 0; i < sizeof(builtin_excs) / sizeof(builtin_excs[0]); i++)
		if (!strcmp(builtin_excs[i], exc_type))
			return "builtins";
	return "cworker.exceptions";
}

enum cw_task_status cw_task_fail(struct cw_task_ctx *ctx, const char *exc_type,
				 const char *exc_module, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	free(ctx->exc_type);
	free(ctx->exc_module);
	free(ctx->exc_message);
	if (!exc_type || !*exc_type)
		exc_type = "Exception";
	ctx->exc_type = strdup(exc_type);
	ctx->exc_module = strdup(exc_module ? exc_module : default_module(exc_type));
	ctx->exc_message = msg;
	return CW_TASK_FAILURE;
}

enum cw_task_status cw_task_retry(struct cw_task_ctx *ctx, double countdown, int max_retries,
				  const char *exc_type, const char *fmt, ...)
{
	char *msg = NULL;

	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		if (vasprintf(&msg, fmt, ap) < 0)
			msg = NULL;
		va_end(ap);
	}
	if (max_retries >= 0 && ctx->req->retries >= max_retries) {
		enum cw_task_status st;
		if (exc_type)
			st = cw_task_fail(ctx, exc_type, NULL, "%s", msg ? msg : "");
		else
			st = cw_task_fail(ctx, "MaxRetriesExceededError", "celery.exceptions",
					  "Can't retry %s[%s] args:%s kwargs:%s", ctx->req->task,
					  ctx->req->id, ctx->req->argsrepr ? ctx->req->argsrepr : "()",
					  ctx->req->kwargsrepr ? ctx->req->kwargsrepr : "{}");
		free(msg);
		return st;
	}
	/* the stored RETRY result is the reason: the exception given, else Retry */
	cw_task_fail(ctx, exc_type ? exc_type : "Retry", exc_type ? NULL : "celery.exceptions", "%s",
		     msg ? msg : "");
	if (!exc_type) {
		free(ctx->exc_message);
		if (asprintf(&ctx->exc_message, "Retry in %gs%s%s", countdown, msg ? ": " : "",
			     msg ? msg : "") < 0)
			ctx->exc_message = NULL;
	}
	free(msg);
	ctx->retry_countdown = countdown > 0 ? countdown : 0;
	return CW_TASK_RETRY;
}

volatile int *volatile cw_exec_cancel_target;
volatile sig_atomic_t cw_exec_abandon_ok;

void cw_exec_cancel_now(void)
{
	volatile int *t = cw_exec_cancel_target;
	if (t)
		*t = 1;
}

struct cw_backend *cw_task_backend(struct cw_task_ctx *ctx)
{
	return ctx->env ? ctx->env->backend : NULL;
}

bool cw_counter_name_ok(const char *name)
{
	size_t n = 0;
	for (; name[n]; n++)
		if (!((name[n] >= 'a' && name[n] <= 'z') || (name[n] >= '0' && name[n] <= '9') ||
		      name[n] == '_'))
			return false;
	return n > 0 && n < CW_COUNTER_NAME_MAX;
}

void cw_task_count(struct cw_task_ctx *ctx, const char *counter, long n)
{
	/* the master only adds positive amounts, so nothing else needs a slot */
	if (n <= 0 || !counter || !cw_counter_name_ok(counter))
		return;
	for (int i = 0; i < ctx->ncounters; i++)
		if (!strcmp(ctx->counters[i].name, counter)) {
			ctx->counters[i].value += n;
			return;
		}
	if (ctx->ncounters == CW_OUTCOME_COUNTERS) {
		if (!ctx->counter_dropped)
			cw_log(CW_LOG_WARNING, "task", "counter %s dropped: a task reports at most %d",
			       counter, CW_OUTCOME_COUNTERS);
		ctx->counter_dropped = true;
		return;
	}
	struct cw_counter *c = &ctx->counters[ctx->ncounters++];
	snprintf(c->name, sizeof(c->name), "%s", counter);
	c->value = n;
}

volatile sig_atomic_t *cw_task_cancel_flag(struct cw_task_ctx *ctx)
{
	static volatile sig_atomic_t never;
	return ctx->cancel ? ctx->cancel : &never;
}

const char *cw_task_hostname(const struct cw_task_ctx *ctx)
{
	return ctx->env && ctx->env->hostname ? ctx->env->hostname : "";
}

json_t *cw_task_arg(const struct cw_task_ctx *ctx, int i)
{
	return i >= 0 && i < ctx->nbound ? ctx->bound[i] : NULL;
}

enum cw_task_status cw_task_raise(struct cw_task_ctx *ctx, const struct cw_exc *e)
{
	return cw_task_fail(ctx, e->type[0] ? e->type : "Exception",
			    e->module[0] ? e->module : NULL, "%s", e->message);
}

json_t *cw_task_bigint(const char *digits)
{
	return cw_json_bigint(digits);
}

void cw_task_uninterruptible_begin(struct cw_task_ctx *ctx, volatile int *abort_flag)
{
	(void)ctx;
	cw_exec_cancel_target = abort_flag;
	cw_exec_abandon_ok = 1;
}

void cw_task_uninterruptible_end(struct cw_task_ctx *ctx)
{
	(void)ctx;
	cw_exec_abandon_ok = 0;
	cw_exec_cancel_target = NULL;
}

/* Send task-<state in lower case> with fields (a JSON object) to the master. */
static void emit_state_event(struct cw_task_ctx *ctx, const char *state, json_t *fields)
{
	char type[80];
	size_t n = (size_t)snprintf(type, sizeof(type), "task-%s", state);
	if (!ctx->env->emit || n >= sizeof(type))
		return;
	for (char *p = type + 5; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	size_t len = 0;
	char *txt = cw_json_dumps(fields, &len);
	if (txt)
		ctx->env->emit(ctx->env->emit_arg, type, txt, len);
	free(txt);
}

int cw_task_update_state(struct cw_task_ctx *ctx, const char *state, json_t *meta)
{
	if (!meta)
		meta = json_object();
	if (!state || !*state || !meta) {
		json_decref(meta);
		return -1;
	}
	struct cw_result_meta m = {.state = CW_STATE_STARTED, .custom_state = state, .result = meta};
	int rc = cw_exec_store(ctx->env, ctx->req, ctx->queue, &m);
	json_t *fields = json_is_object(meta) ? json_deep_copy(meta)
					      : json_pack("{s:O}", "meta", meta);
	if (fields)
		emit_state_event(ctx, state, fields);
	json_decref(fields);
	json_decref(meta);
	return rc == CW_OK ? 0 : -1;
}

/* Progress is stored at most this often (seconds), except the step that completes it. */
#define PROGRESS_INTERVAL 0.25

void cw_task_progress(struct cw_task_ctx *ctx, long current, long total)
{
	double now = cw_now();
	if (current < total && ctx->progress_at > 0 && now - ctx->progress_at < PROGRESS_INTERVAL)
		return;
	ctx->progress_at = now;
	(void)cw_task_update_state(ctx, "PROGRESS", json_pack("{s:I,s:I}", "current",
							      (json_int_t)current, "total",
							      (json_int_t)total));
}

/* "'a'", "'a' and 'b'", "'a', 'b', and 'c'" — Python's list of missing names. */
static void name_list(char *out, size_t outsz, const char *const *names, int n)
{
	size_t w = 0;
	out[0] = '\0';
	for (int i = 0; i < n && w < outsz; i++) {
		const char *sep = i == 0 ? "" : n == 2 ? " and " : i == n - 1 ? ", and " : ", ";
		int r = snprintf(out + w, outsz - w, "%s'%s'", sep, names[i]);
		if (r < 0)
			break;
		w += (size_t)r;
	}
}

/* The function name Python would print: the task name after its last dot. */
static const char *fn_name(const char *task)
{
	const char *dot = strrchr(task, '.');
	return dot ? dot + 1 : task;
}

/*
 * Bind a call to the declared parameters as CPython does (keywords first,
 * then the positional count, then missing arguments), with its TypeError
 * texts.  false: the task failed with the TypeError.
 */
static bool bind(struct cw_task_ctx *ctx, const struct cw_task_def *def, json_t *args,
		 json_t *kwargs)
{
	const struct cw_param *params = def->params;
	const char *fn = fn_name(def->name);
	int n = 0, npos = 0, nreq = 0;
	while (n < MAX_PARAMS && params[n].name) {
		if (!(params[n].flags & CW_PARAM_KWONLY)) {
			npos++;
			nreq += !(params[n].flags & CW_PARAM_OPTIONAL);
		}
		n++;
	}
	size_t given = json_array_size(args);
	ctx->nbound = n;
	for (int i = 0; i < n; i++)
		ctx->bound[i] = i < npos && (size_t)i < given ? json_array_get(args, (size_t)i) : NULL;
	const char *key;
	json_t *v;
	json_object_foreach(kwargs, key, v) {
		int i;
		for (i = 0; i < n && strcmp(params[i].name, key); i++)
			;
		if (i == n) {
			cw_task_fail(ctx, "TypeError", NULL,
				     "%s() got an unexpected keyword argument '%s'", fn, key);
			return false;
		}
		if (ctx->bound[i]) {
			cw_task_fail(ctx, "TypeError", NULL, "%s() got multiple values for argument '%s'",
				     fn, key);
			return false;
		}
		ctx->bound[i] = v;
	}
	if (given > (size_t)npos) {
		/* CPython's too_many_positional(), keyword-only arguments given included */
		int kwonly_given = 0;
		for (int i = 0; i < n; i++)
			kwonly_given += (params[i].flags & CW_PARAM_KWONLY) && ctx->bound[i];
		char sig[48], kw[80] = "";
		bool plural = nreq != npos || npos != 1;
		if (nreq != npos)
			snprintf(sig, sizeof(sig), "from %d to %d", nreq, npos);
		else
			snprintf(sig, sizeof(sig), "%d", npos);
		if (kwonly_given)
			snprintf(kw, sizeof(kw), " positional argument%s (and %d keyword-only argument%s)",
				 given != 1 ? "s" : "", kwonly_given, kwonly_given != 1 ? "s" : "");
		cw_task_fail(ctx, "TypeError", NULL, "%s() takes %s positional argument%s but %zu%s %s given",
			     fn, sig, plural ? "s" : "", given, kw,
			     given == 1 && !kwonly_given ? "was" : "were");
		return false;
	}
	for (int kwonly = 0; kwonly < 2; kwonly++) {
		const char *missing[MAX_PARAMS];
		int nm = 0;
		for (int i = 0; i < n; i++)
			if (!ctx->bound[i] && !(params[i].flags & CW_PARAM_OPTIONAL) &&
			    !!(params[i].flags & CW_PARAM_KWONLY) == kwonly)
				missing[nm++] = params[i].name;
		if (nm) {
			char list[512];
			name_list(list, sizeof(list), missing, nm);
			cw_task_fail(ctx, "TypeError", NULL, "%s() missing %d required %s argument%s: %s",
				     fn, nm, kwonly ? "keyword-only" : "positional", nm == 1 ? "" : "s",
				     list);
			return false;
		}
	}
	return true;
}

enum cw_task_status cw_exec_call(struct cw_task_ctx *ctx, const struct cw_task_def *def,
				 json_t *args, json_t *kwargs, json_t **result)
{
	if (def->params && !bind(ctx, def, args, kwargs))
		return CW_TASK_FAILURE;
	return def->fn(ctx, args, kwargs, result);
}

const char *cw_task_id(const struct cw_task_ctx *ctx) { return ctx->req->id; }
const char *cw_task_group(const struct cw_task_ctx *ctx) { return ctx->req->group; }
const char *cw_task_name(const struct cw_task_ctx *ctx) { return ctx->req->task; }
int64_t cw_task_retries(const struct cw_task_ctx *ctx) { return ctx->req->retries; }
bool cw_task_cancelled(const struct cw_task_ctx *ctx) { return ctx->cancel && *ctx->cancel; }
bool cw_task_is_bigint(const json_t *v) { return cw_json_is_bigint(v); }

int cw_exec_store(const struct cw_exec_env *env, const struct cw_request *req, const char *queue,
		  struct cw_result_meta *m)
{
	struct cw_error err = {0};

	if (!env->backend || (req && req->ignore_result))
		return CW_OK;
	m->date_done = cw_wall();
	if (req) {
		m->task_id = req->id;
		m->group_id = req->group;
		m->parent_id = req->parent_id;
		m->reply_to = req->reply_to;
		m->correlation_id = req->correlation_id;
		if (env->result_extended) {
			m->extended = true;
			m->name = req->task;
			m->args = req->args;
			m->kwargs = req->kwargs;
			m->worker = env->hostname;
			m->retries = req->retries;
			m->queue = queue;
		}
	}
	int rc = cw_backend_store(env->backend, m, &err);
	if (rc != CW_OK)
		cw_log(CW_LOG_ERROR, "backend", "Task %s[%s]: %s not stored: %s",
		       req ? req->task : "?", m->task_id, cw_result_status(m), err.msg);
	return rc;
}

/* Set retries + 1 and eta in a v2 headers dict or a v1 body dict. */
static void bump(json_t *obj, const char *eta)
{
	json_t *r = json_object_get(obj, "retries");
	json_int_t n = json_is_integer(r) ? json_integer_value(r) : 0;
	json_object_set_new(obj, "retries", json_integer(n + 1));
	json_object_set_new(obj, "eta", json_string(eta));
}

char *cw_exec_retry_envelope(const char *raw, size_t len, const struct cw_proto_limits *lim,
			     double eta, const char *tag, size_t *out_len)
{
	struct cw_error err = {0};
	json_t *root = cw_json_loads(raw, len, lim, &err);
	json_t *headers = json_object_get(root, "headers");
	json_t *props = json_object_get(root, "properties");
	char when[40], *out = NULL;

	if (!json_is_object(root) || !json_is_object(props))
		goto out;
	cw_proto_format_iso8601(eta, when);
	strcat(when, "+00:00");
	if (json_is_object(headers) && json_object_get(headers, "task")) {
		bump(headers, when);
		json_object_del(headers, "redelivered");
	} else { /* protocol v1: retries and eta live in the body */
		json_t *body = json_object_get(root, "body");
		bool b64 = !strcmp(json_string_value(json_object_get(props, "body_encoding")) ?: "", "base64");
		const char *bs = json_string_value(body);
		size_t blen = json_string_length(body);
		if (!bs)
			goto out;
		unsigned char *plain = malloc(blen / 4 * 3 + 1);
		size_t plen = blen;
		if (!plain)
			goto out;
		if (b64 && cw_base64_decode(bs, blen, plain, &plen) != CW_OK) {
			free(plain);
			goto out;
		}
		json_t *dict = cw_json_loads(b64 ? (const char *)plain : bs, b64 ? plen : blen, lim, &err);
		free(plain);
		if (!json_is_object(dict)) {
			json_decref(dict);
			goto out;
		}
		bump(dict, when);
		size_t dlen;
		char *txt = cw_json_dumps(dict, &dlen);
		json_decref(dict);
		if (!txt)
			goto out;
		char *enc = b64 ? cw_base64_encode((const unsigned char *)txt, dlen, NULL) : txt;
		json_object_set_new(root, "body", json_string(enc ? enc : ""));
		if (enc != txt)
			free(enc);
		free(txt);
	}
	json_object_set_new(props, "delivery_tag", json_string(tag));
	json_object_del(json_object_get(props, "delivery_info"), "redelivered");
	out = cw_json_dumps(root, out_len);
out:
	json_decref(root);
	return out;
}

static void outcome_fail(struct cw_outcome *out, const char *type, const char *msg)
{
	out->state = CW_STATE_FAILURE;
	snprintf(out->exc_type, sizeof(out->exc_type), "%s", type);
	snprintf(out->exc_message, sizeof(out->exc_message), "%s", msg ? msg : "");
}

void cw_exec_message(const struct cw_exec_env *env, const char *raw, size_t len,
		     const char *packed, size_t packed_len, const char *queue,
		     struct cw_outcome *out, struct cw_outbox *ob)
{
	struct cw_envelope e = {0};
	struct cw_request req = {0};
	struct cw_error err = {0};
	struct cw_task_ctx ctx = {0};
	double t0 = cw_now();
	int priority = 0;

	memset(out, 0, sizeof(*out));
	if (packed ? cw_request_unpack(packed, packed_len, &env->limits, &req, &priority, &err) != CW_OK
		   : (cw_proto_decode_envelope(raw, len, &env->limits, &e, &err) != CW_OK ||
		      cw_proto_decode_request(&e, &env->limits, &req, &err) != CW_OK)) {
		/* the master decoded it already; reaching here means memory trouble */
		outcome_fail(out, "DecodeError", err.msg);
		goto out;
	}
	if (!packed)
		priority = e.priority;
	cw_log_set_task(req.task, req.id);
	const struct cw_task_def *def = cw_registry_find(env->reg, req.task);
	if (!def) {
		struct cw_result_meta m = {.state = CW_STATE_FAILURE, .exc_type = "NotRegistered",
					   .exc_module = "celery.exceptions", .exc_message = req.task};
		outcome_fail(out, "NotRegistered", req.task);
		cw_exec_store(env, &req, queue, &m);
		cw_canvas_after(env, &req, &m, NULL, ob);
		goto out;
	}
	ctx.req = &req;
	ctx.env = env;
	ctx.queue = queue;
	ctx.cancel = env->cancel;
	if (env->track_started && env->track_started(env->track_arg, req.task)) {
		/* Celery's task_track_started: STARTED with the executing pid and host */
		json_t *who = json_pack("{s:i,s:s}", "pid", (int)getpid(), "hostname",
					env->hostname ? env->hostname : "");
		struct cw_result_meta sm = {.state = CW_STATE_STARTED, .result = who};
		(void)cw_exec_store(env, &req, queue, &sm);
		json_decref(who);
	}
	json_t *result = NULL;
	enum cw_task_status st = cw_exec_call(&ctx, def, req.args, req.kwargs, &result);
	out->runtime = cw_now() - t0;
	if (env->returned)
		env->returned(env->returned_arg);

	struct cw_result_meta m = {0};
	char tb[1024];
	if (st == CW_TASK_SUCCESS) {
		out->state = CW_STATE_SUCCESS;
		/* counters describe work done: a failed or retried run reports none */
		out->ncounters = ctx.ncounters;
		memcpy(out->counters, ctx.counters, sizeof(out->counters));
		m.state = CW_STATE_SUCCESS;
		m.result = result;
		/* saferepr(), as Celery logs it and puts it in task-succeeded */
		char *txt = cw_proto_pyrepr(result ? result : json_null(), false,
					    sizeof(out->result_repr) - 1);
		snprintf(out->result_repr, sizeof(out->result_repr), "%s", txt ? txt : "?");
		free(txt);
		cw_exec_store(env, &req, queue, &m);
		cw_canvas_after(env, &req, &m, result, ob);
	} else if (st == CW_TASK_RETRY) {
		char tag[37];
		size_t rlen = 0;
		cw_uuid4(tag);
		char *retry = cw_exec_retry_envelope(raw, len, &env->limits,
						     cw_wall() + ctx.retry_countdown, tag, &rlen);
		if (retry && cw_outbox_add(ob, queue, tag, priority, retry, rlen) != CW_OK) {
			free(retry);
			retry = NULL;
		}
		if (!retry) {
			outcome_fail(out, "MemoryError", "could not build the retry message");
			m.state = CW_STATE_FAILURE;
			m.exc_type = "MemoryError";
			m.exc_module = "builtins";
			m.exc_message = "could not build the retry message";
		} else {
			out->state = CW_STATE_RETRY;
			out->retry_in = ctx.retry_countdown;
			snprintf(out->exc_type, sizeof(out->exc_type), "%s", ctx.exc_type);
			snprintf(out->exc_message, sizeof(out->exc_message), "%s",
				 ctx.exc_message ? ctx.exc_message : "");
			m.state = CW_STATE_RETRY;
			m.exc_type = ctx.exc_type;
			m.exc_module = ctx.exc_module;
			m.exc_message = ctx.exc_message ? ctx.exc_message : "";
		}
		free(retry);
		cw_exec_store(env, &req, queue, &m);
		cw_canvas_after(env, &req, &m, NULL, ob);
	} else {
		if (!ctx.exc_type)
			cw_task_fail(&ctx, "TaskError", NULL, "task returned failure without a reason");
		outcome_fail(out, ctx.exc_type, ctx.exc_message);
		snprintf(tb, sizeof(tb),
			 "Traceback (most recent call last):\n  File \"cworker\", task %s, in %s\n%s: %s\n",
			 req.task, req.id, ctx.exc_type, ctx.exc_message ? ctx.exc_message : "");
		m.state = CW_STATE_FAILURE;
		m.exc_type = ctx.exc_type;
		m.exc_module = ctx.exc_module;
		m.exc_message = ctx.exc_message ? ctx.exc_message : "";
		m.traceback = tb;
		cw_exec_store(env, &req, queue, &m);
		cw_canvas_after(env, &req, &m, NULL, ob);
	}
	json_decref(result);
out:
	cw_log_set_task(NULL, NULL);
	if (out->runtime == 0)
		out->runtime = cw_now() - t0;
	free(ctx.exc_type);
	free(ctx.exc_module);
	free(ctx.exc_message);
	cw_request_clear(&req);
	cw_envelope_clear(&e);
}
