/*
 * Running one task message: decode, look up, call, store the result.
 * Shared by prefork children and the solo pool.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "tasks/registry.h"
#include "util/log.h"

struct cw_task_ctx {
	const struct cw_request *req;
	volatile sig_atomic_t *cancel;
	char *exc_type, *exc_module, *exc_message;
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

const char *cw_task_id(const struct cw_task_ctx *ctx) { return ctx->req->id; }
const char *cw_task_name(const struct cw_task_ctx *ctx) { return ctx->req->task; }
int64_t cw_task_retries(const struct cw_task_ctx *ctx) { return ctx->req->retries; }
bool cw_task_cancelled(const struct cw_task_ctx *ctx) { return ctx->cancel && *ctx->cancel; }
bool cw_task_is_bigint(const json_t *v) { return cw_json_is_bigint(v); }

void cw_exec_store(const struct cw_exec_env *env, const struct cw_request *req, const char *queue,
		   struct cw_result_meta *m)
{
	struct cw_error err = {0};

	if (!env->backend || (req && req->ignore_result))
		return;
	m->date_done = cw_wall();
	if (req) {
		m->task_id = req->id;
		m->group_id = req->group;
		m->parent_id = req->parent_id;
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
	if (cw_backend_store(env->backend, m, &err) != CW_OK)
		cw_log(CW_LOG_ERROR, "backend", "Task %s[%s]: %s not stored: %s",
		       req ? req->task : "?", m->task_id, cw_state_name(m->state), err.msg);
}

static void outcome_fail(struct cw_outcome *out, const char *type, const char *msg)
{
	out->state = CW_STATE_FAILURE;
	snprintf(out->exc_type, sizeof(out->exc_type), "%s", type);
	snprintf(out->exc_message, sizeof(out->exc_message), "%s", msg ? msg : "");
}

void cw_exec_message(const struct cw_exec_env *env, const char *raw, size_t len,
		     const char *queue, struct cw_outcome *out)
{
	struct cw_envelope e = {0};
	struct cw_request req = {0};
	struct cw_error err = {0};
	struct cw_task_ctx ctx = {0};
	double t0 = cw_now();

	memset(out, 0, sizeof(*out));
	if (cw_proto_decode_envelope(raw, len, &env->limits, &e, &err) != CW_OK ||
	    cw_proto_decode_request(&e, &env->limits, &req, &err) != CW_OK) {
		/* the master decoded it already; reaching here means memory trouble */
		outcome_fail(out, "DecodeError", err.msg);
		goto out;
	}
	const struct cw_task_def *def = cw_registry_find(env->reg, req.task);
	if (!def) {
		struct cw_result_meta m = {.state = CW_STATE_FAILURE, .exc_type = "NotRegistered",
					   .exc_module = "celery.exceptions", .exc_message = req.task};
		outcome_fail(out, "NotRegistered", req.task);
		cw_exec_store(env, &req, queue, &m);
		goto out;
	}
	ctx.req = &req;
	ctx.cancel = env->cancel;
	json_t *result = NULL;
	enum cw_task_status st = def->fn(&ctx, req.args, req.kwargs, &result);
	out->runtime = cw_now() - t0;

	struct cw_result_meta m = {0};
	char tb[1024];
	if (st == CW_TASK_SUCCESS) {
		out->state = CW_STATE_SUCCESS;
		m.state = CW_STATE_SUCCESS;
		m.result = result;
		char *txt = cw_json_dumps(result ? result : json_null(), NULL);
		snprintf(out->result_repr, sizeof(out->result_repr), "%s", txt ? txt : "?");
		free(txt);
		cw_exec_store(env, &req, queue, &m);
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
	}
	json_decref(result);
out:
	if (out->runtime == 0)
		out->runtime = cw_now() - t0;
	free(ctx.exc_type);
	free(ctx.exc_module);
	free(ctx.exc_message);
	cw_request_clear(&req);
	cw_envelope_clear(&e);
}
