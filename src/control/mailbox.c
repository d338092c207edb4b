/*
 * Remote control and inspection: the commands of celery/worker/control.py
 * answered with the same reply shapes, so `celery inspect`, `celery
 * control`, `celery status` and Flower work against cworker unchanged.
 * Replies go to the client's reply exchange (reply.celery.pidbox) as
 * {hostname: reply}, with the request's ticket and our clock in the
 * headers, as kombu's Mailbox._publish_reply sends them.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "broker/broker.h"
#include "consumer/revoked.h"
#include "consumer/worker.h"
#include "control/mailbox.h"
#include "events/events.h"
#include "pool/pool.h"
#include "protocol/control.h"
#include "tasks/registry.h"
#include "cw_build.h"
#include "loop/loop.h"
#include "util/log.h"
#include "util/url.h"

#define MAX_PROCS 1024

static json_t *okv(const char *key, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static json_t *okv(const char *key, const char *fmt, va_list ap)
{
	char *msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		return NULL;
	json_t *r = json_pack("{s:s}", key, msg);
	free(msg);
	return r;
}

static json_t *ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *ok(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *r = okv("ok", fmt, ap);
	va_end(ap);
	return r;
}

static json_t *nok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *nok(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *r = okv("error", fmt, ap);
	va_end(ap);
	return r;
}

static const char *arg_str(json_t *args, const char *key)
{
	return json_string_value(json_object_get(args, key));
}

/* An int argument (Celery's CLI sends numbers as numbers; be lenient with strings). */
static bool arg_int(json_t *args, const char *key, long *out)
{
	json_t *v = json_object_get(args, key);
	if (json_is_integer(v)) {
		*out = (long)json_integer_value(v);
		return true;
	}
	if (json_is_real(v)) {
		*out = (long)json_real_value(v);
		return true;
	}
	if (json_is_string(v)) {
		char *end;
		long n = strtol(json_string_value(v), &end, 10);
		if (end != json_string_value(v) && !*end) {
			*out = n;
			return true;
		}
	}
	return false;
}

static int signal_number(json_t *v)
{
	static const struct {
		const char *name;
		int sig;
	} names[] = {
		{"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},   {"QUIT", SIGQUIT},
		{"HUP", SIGHUP},   {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT},
	};
	if (json_is_integer(v))
		return json_integer_value(v) > 0 && json_integer_value(v) < 65
			       ? (int)json_integer_value(v)
			       : -1;
	const char *s = json_string_value(v);
	if (!s || !*s)
		return SIGTERM; /* Celery's default */
	if (!strncasecmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(names[i].name, s))
			return names[i].sig;
	return -1;
}

static bool autoscaled(const struct cw_worker *w)
{
	struct cw_worker_counts k;
	cw_worker_counts(w, &k);
	return k.autoscale_max > 0;
}

/* ---- inspect ------------------------------------------------------------- */

static json_t *c_ping(struct cw_worker *w, json_t *args)
{
	(void)w;
	(void)args;
	return ok("pong");
}

static json_t *c_stats(struct cw_worker *w, json_t *args)
{
	struct rusage ru;
	pid_t pids[MAX_PROCS];
	struct cw_worker_counts k;
	const struct cw_config *cfg = cw_worker_config(w);
	(void)args;

	cw_worker_counts(w, &k);

	getrusage(RUSAGE_SELF, &ru);
	int n = cw_pool_processes(cw_worker_pool(w), pids, MAX_PROCS);
	json_t *procs = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(procs, json_integer(pids[i]));
	char clock[32], avg[32];
	snprintf(clock, sizeof(clock), "%llu", (unsigned long long)cw_events_clock(cw_worker_events(w)));
	int size = cw_pool_size(cw_worker_pool(w));
	snprintf(avg, sizeof(avg), "%.2f", size ? 1.0 / size : 0.0);
	long max_conc = k.autoscale_max ? k.autoscale_max
			: cfg->pool_kind == CW_POOL_SOLO ? 1 : cfg->concurrency;
	json_t *pool = json_pack(
		"{s:i,s:o,s:o,s:b,s:[f,f],s:{s:I,s:s,s:s,s:s,s:s,s:{s:i,s:i}}}", "max-concurrency",
		(int)max_conc, "processes", procs, "max-tasks-per-child",
		cfg->max_tasks_per_child ? json_integer(cfg->max_tasks_per_child)
					    : json_string("N/A"),
		"put-guarded-by-semaphore", 0, "timeouts", cfg->soft_time_limit,
		cfg->time_limit, "writes", "total", (json_int_t)k.processed, "avg", avg, "all",
		avg, "raw", "", "strategy", "fair", "inqueues", "total", size, "active",
		cw_pool_busy(cw_worker_pool(w)));
	json_t *r = json_pack(
		"{s:O,s:i,s:s,s:I,s:o,s:o,s:i,s:{s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
		"s:I,s:I,s:I,s:I}}",
		"total", cw_worker_totals(w), "pid", (int)getpid(), "clock", clock, "uptime",
		(json_int_t)llround(cw_wall() - k.started), "pool", pool, "broker", cw_broker_info(cw_worker_broker(w)),
		"prefetch_count", k.limit, "rusage", "utime",
		ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, "stime",
		ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, "maxrss", (json_int_t)ru.ru_maxrss,
		"ixrss", (json_int_t)ru.ru_ixrss, "idrss", (json_int_t)ru.ru_idrss, "isrss",
		(json_int_t)ru.ru_isrss, "minflt", (json_int_t)ru.ru_minflt, "majflt",
		(json_int_t)ru.ru_majflt, "nswap", (json_int_t)ru.ru_nswap, "inblock",
		(json_int_t)ru.ru_inblock, "oublock", (json_int_t)ru.ru_oublock, "msgsnd",
		(json_int_t)ru.ru_msgsnd, "msgrcv", (json_int_t)ru.ru_msgrcv, "nsignals",
		(json_int_t)ru.ru_nsignals, "nvcsw", (json_int_t)ru.ru_nvcsw, "nivcsw",
		(json_int_t)ru.ru_nivcsw);
	if (r && k.autoscale_max)
		json_object_set_new(r, "autoscaler",
				    json_pack("{s:i,s:i,s:i,s:i}", "max", k.autoscale_max, "min",
					      k.autoscale_min, "current", size, "qty", k.held));
	return r;
}

static json_t *c_active(struct cw_worker *w, json_t *args)
{
	return cw_worker_active(w, json_is_true(json_object_get(args, "safe")));
}

static json_t *c_reserved(struct cw_worker *w, json_t *args)
{
	(void)args;
	return cw_worker_reserved(w);
}

static json_t *c_scheduled(struct cw_worker *w, json_t *args)
{
	(void)args;
	return cw_worker_scheduled(w);
}

static bool add_id(void *arg, const char *id, double added)
{
	(void)added;
	json_array_append_new(arg, json_string(id));
	return true;
}

static bool add_id_ts(void *arg, const char *id, double added)
{
	json_object_set_new(arg, id, json_real(added));
	return true;
}

static json_t *c_revoked(struct cw_worker *w, json_t *args)
{
	json_t *out = json_array();
	(void)args;
	cw_revoked_purge(cw_worker_revoked(w), cw_wall());
	cw_revoked_each(cw_worker_revoked(w), add_id, out);
	return out;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *c_registered(struct cw_worker *w, json_t *args)
{
	size_t n = cw_registry_count(cw_worker_registry(w)), k = 0;
	const char **names = calloc(n ? n : 1, sizeof(*names));
	json_t *out = json_array();
	/* like Celery: celery.* built-ins only with builtins=True */
	bool builtins = json_is_true(json_object_get(args, "builtins"));
	if (!names)
		return out;
	for (size_t i = 0; i < n; i++) {
		const char *name = cw_registry_at(cw_worker_registry(w), i)->name;
		if (builtins || strncmp(name, "celery.", 7))
			names[k++] = name;
	}
	n = k;
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		double rate = cw_worker_rate(w, names[i]);
		if (rate > 0) {
			char *s = NULL;
			if (asprintf(&s, "%s [rate_limit=%g/s]", names[i], rate) >= 0) {
				json_array_append_new(out, json_string(s));
				free(s);
			}
		} else {
			json_array_append_new(out, json_string(names[i]));
		}
	}
	free(names);
	return out;
}

static json_t *queue_dict(const char *q)
{
	return json_pack("{s:s,s:{s:s,s:s,s:n,s:b,s:b,s:b,s:n,s:b},s:s,s:n,s:n,s:n,s:b,s:b,s:b,"
			 "s:b,s:n,s:[],s:n,s:n,s:n,s:n,s:n,s:n}",
			 "name", q, "exchange", "name", q, "type", "direct", "arguments", "durable", 1,
			 "passive", 0, "auto_delete", 0, "delivery_mode", "no_declare", 0,
			 "routing_key", q, "queue_arguments", "binding_arguments",
			 "consumer_arguments", "durable", 1, "exclusive", 0, "auto_delete", 0,
			 "no_ack", 0, "alias", "bindings", "no_declare", "expires", "message_ttl",
			 "max_length", "max_length_bytes", "max_priority");
}

static json_t *c_active_queues(struct cw_worker *w, json_t *args)
{
	const char *const *qs;
	int n = cw_worker_broker(w)->ops->queues(cw_worker_broker(w), &qs);
	json_t *out = json_array();
	(void)args;
	for (int i = 0; i < n; i++)
		json_array_append_new(out, queue_dict(qs[i]));
	return out;
}

static json_t *c_conf(struct cw_worker *w, json_t *args)
{
	const struct cw_config *c = cw_worker_config(w);
	char broker[512], backend[512];
	(void)args;
	cw_url_redact(c->broker_url, broker, sizeof(broker));
	cw_url_redact(c->result_backend ? c->result_backend : "", backend, sizeof(backend));
	return json_pack("{s:s,s:o,s:[s],s:s,s:s,s:i,s:i,s:b,s:b,s:f,s:f,s:i,s:b,s:f,s:o,s:s}",
			 "broker_url", broker, "result_backend",
			 backend[0] ? json_string(backend) : json_null(), "accept_content", "json",
			 "task_serializer", "json", "result_serializer", "json",
			 "worker_concurrency", (int)c->concurrency, "worker_prefetch_multiplier",
			 (int)c->prefetch_multiplier, "task_acks_late", c->acks_late,
			 "task_reject_on_worker_lost", c->reject_on_worker_lost, "task_time_limit",
			 c->time_limit, "task_soft_time_limit", c->soft_time_limit,
			 "worker_max_tasks_per_child", (int)c->max_tasks_per_child,
			 "worker_send_task_events", cw_events_task_enabled(cw_worker_events(w)),
			 "result_expires", c->result_expires, "worker_state_db",
			 c->statedb ? json_string(c->statedb) : json_null(), "worker_pool", c->pool);
}

static json_t *c_query_task(struct cw_worker *w, json_t *args)
{
	json_t *ids = json_object_get(args, "ids"), *one = NULL, *v;
	json_t *out = json_object();
	size_t i;
	if (json_is_string(ids))
		ids = one = json_pack("[O]", ids);
	json_array_foreach(ids, i, v) {
		json_t *st = json_is_string(v) ? cw_worker_query_task(w, json_string_value(v)) : NULL;
		if (st)
			json_object_set_new(out, json_string_value(v), st);
	}
	json_decref(one);
	return out;
}

static json_t *c_report(struct cw_worker *w, json_t *args)
{
	struct utsname u;
	char broker[512], backend[512];
	(void)args;
	if (uname(&u) < 0)
		memset(&u, 0, sizeof(u));
	cw_url_redact(cw_worker_config(w)->broker_url, broker, sizeof(broker));
	cw_url_redact(cw_worker_config(w)->result_backend ? cw_worker_config(w)->result_backend : "disabled", backend,
		      sizeof(backend));
	return ok("\nsoftware -> cworker:%s (native C worker, Celery message protocol 2)\n"
		  "platform -> system:%s arch:%s kernel version:%s\n"
		  "settings -> transport:%s results:%s\n\nbroker_url: '%s'\npool: %s (%ld)\n",
		  CW_VERSION, u.sysname, u.machine, u.release,
		  cw_broker_transport(cw_worker_broker(w)), backend, broker,
		  cw_worker_config(w)->pool,
		  (long)cw_pool_size(cw_worker_pool(w)));
}

static json_t *c_clock(struct cw_worker *w, json_t *args)
{
	(void)args;
	return json_pack("{s:I}", "clock", (json_int_t)cw_events_clock(cw_worker_events(w)));
}

static json_t *c_hello(struct cw_worker *w, json_t *args)
{
	const char *from = arg_str(args, "from_node");
	json_t *rv = json_object_get(args, "revoked"), *v;
	const char *k;
	size_t i;

	if (from && !strcmp(from, cw_worker_config(w)->hostname))
		return json_null();
	cw_log(CW_LOG_INFO, "control", "sync with %s", from ? from : "?");
	if (json_is_object(rv))
		json_object_foreach(rv, k, v)
			(void)!cw_revoked_add(cw_worker_revoked(w), k, json_is_number(v) ? json_number_value(v)
									     : cw_wall());
	else if (json_is_array(rv))
		json_array_foreach(rv, i, v)
			if (json_is_string(v))
				(void)!cw_revoked_add(cw_worker_revoked(w), json_string_value(v), cw_wall());
	cw_revoked_purge(cw_worker_revoked(w), cw_wall());
	json_t *mine = json_object();
	cw_revoked_each(cw_worker_revoked(w), add_id_ts, mine);
	return json_pack("{s:o,s:I}", "revoked", mine, "clock",
			 (json_int_t)cw_events_forward(cw_worker_events(w)));
}

/* ---- control ------------------------------------------------------------- */

static json_t *revoke_ids(struct cw_worker *w, json_t *ids, bool terminate, json_t *signame)
{
	json_t *one = NULL, *v;
	size_t i;
	int sig = signal_number(signame);

	if (json_is_string(ids))
		ids = one = json_pack("[O]", ids);
	if (!json_is_array(ids))
		return nok("no task ids");
	if (terminate && sig < 0) {
		json_decref(one);
		return nok("ValueError('unknown signal')");
	}
	size_t len = 0;
	char *list = NULL, *terminated = NULL;
	json_array_foreach(ids, i, v) {
		const char *id = json_string_value(v);
		if (!id)
			continue;
		bool running = cw_worker_revoke(w, id, terminate, sig);
		char **dst = terminate ? &terminated : &list;
		if (terminate && !running)
			continue;
		char *next = NULL;
		if (asprintf(&next, "%s%s%s", *dst ? *dst : "", *dst ? ", " : "", id) >= 0) {
			free(*dst);
			*dst = next;
		}
		len++;
	}
	json_decref(one);
	cw_worker_save_state(w);
	json_t *r;
	if (terminate)
		r = terminated ? ok("terminate: %s", terminated) : ok("terminate: tasks unknown");
	else
		r = ok("tasks %s flagged as revoked", list ? list : "");
	free(list);
	free(terminated);
	(void)len;
	return r;
}

static json_t *c_revoke(struct cw_worker *w, json_t *args)
{
	return revoke_ids(w, json_object_get(args, "task_id"),
			  json_is_true(json_object_get(args, "terminate")),
			  json_object_get(args, "signal"));
}

static json_t *c_terminate(struct cw_worker *w, json_t *args)
{
	return revoke_ids(w, json_object_get(args, "task_id"), true,
			  json_object_get(args, "signal"));
}

static json_t *c_pool_grow(struct cw_worker *w, json_t *args)
{
	long n = 1;
	if (autoscaled(w))
		return nok("pool_grow is not supported with autoscale. Adjust autoscale range "
			   "instead.");
	if (json_object_get(args, "n") && !arg_int(args, "n", &n))
		return nok("TypeError('n must be an integer')");
	if (n < 1 || n > MAX_PROCS - cw_pool_size(cw_worker_pool(w)))
		return nok("ValueError('cannot grow the pool by %ld')", n);
	if (cw_worker_resize(w, (int)n) != CW_OK)
		return nok("ValueError('cannot grow a solo pool')");
	cw_log(CW_LOG_INFO, "control", "pool grows by %ld to %d", n, cw_pool_size(cw_worker_pool(w)));
	return ok("pool will grow");
}

static json_t *c_pool_shrink(struct cw_worker *w, json_t *args)
{
	long n = 1;
	if (autoscaled(w))
		return nok("pool_shrink is not supported with autoscale. Adjust autoscale range "
			   "instead.");
	if (json_object_get(args, "n") && !arg_int(args, "n", &n))
		return nok("TypeError('n must be an integer')");
	if (n < 1)
		return nok("ValueError('cannot shrink the pool by %ld')", n);
	int rc = cw_worker_resize(w, (int)-n);
	if (rc == CW_EAGAIN)
		return nok("ValueError(\"Can't shrink pool. All processes busy!\")");
	if (rc != CW_OK)
		return nok("ValueError('cannot shrink a solo pool')");
	return ok("pool will shrink");
}

static json_t *c_autoscale(struct cw_worker *w, json_t *args)
{
	long mx, mn;
	bool has_max = arg_int(args, "max", &mx), has_min = arg_int(args, "min", &mn);
	struct cw_worker_counts k;

	if (!autoscaled(w))
		return nok("ValueError('Autoscale not enabled')");
	if ((has_max && (mx < 1 || mx > MAX_PROCS)) || (has_min && mn < 0))
		return nok("ValueError('bad autoscale range')");
	(void)cw_worker_autoscale(w, has_max, (int)(has_max ? mx : 0), has_min,
				  (int)(has_min ? mn : 0));
	cw_worker_counts(w, &k);
	return ok("autoscale now max=%d min=%d", k.autoscale_max, k.autoscale_min);
}

static json_t *c_shutdown(struct cw_worker *w, json_t *args)
{
	const char *msg = arg_str(args, "msg");
	cw_log(CW_LOG_WARNING, "control", "%s", msg ? msg : "Got shutdown from remote");
	cw_worker_shutdown(w);
	return NULL; /* like a Python worker: it leaves without replying */
}

static json_t *c_add_consumer(struct cw_worker *w, json_t *args)
{
	const char *q = arg_str(args, "queue");
	if (!q || !*q)
		return nok("TypeError(\"add_consumer() missing required argument: 'queue'\")");
	int rc = cw_worker_broker(w)->ops->add_queue(cw_worker_broker(w), q);
	if (rc == CW_OK)
		cw_log(CW_LOG_INFO, "control", "Started consuming from %s", q);
	else if (rc != CW_EINVAL)
		return nok("MemoryError()");
	return ok("add consumer %s", q);
}

static json_t *c_cancel_consumer(struct cw_worker *w, json_t *args)
{
	const char *q = arg_str(args, "queue");
	if (!q || !*q)
		return nok("TypeError(\"cancel_consumer() missing required argument: 'queue'\")");
	if (cw_worker_broker(w)->ops->cancel_queue(cw_worker_broker(w), q) == CW_OK)
		cw_log(CW_LOG_INFO, "control", "Canceling queue %s", q);
	return ok("no longer consuming from %s", q);
}

static json_t *c_rate_limit(struct cw_worker *w, json_t *args)
{
	const char *name = arg_str(args, "task_name");
	json_t *rv = json_object_get(args, "rate_limit");
	char num[64];
	const char *text = json_string_value(rv);
	double rate;

	if (json_is_number(rv)) {
		snprintf(num, sizeof(num), "%g", json_number_value(rv));
		text = num;
	}
	if (!text && !json_is_null(rv))
		return nok("Invalid rate limit string: ValueError('not a rate')");
	if (cw_config_parse_rate(text ? text : "", &rate) != CW_OK)
		return nok("Invalid rate limit string: ValueError(%s)", text);
	if (!name || !cw_registry_find(cw_worker_registry(w), name)) {
		cw_log(CW_LOG_ERROR, "control", "Rate limit attempt for unknown task %s",
		       name ? name : "?");
		return nok("unknown task");
	}
	if (cw_worker_set_rate(w, name, rate) != CW_OK)
		return nok("MemoryError()");
	if (rate == 0) {
		cw_log(CW_LOG_INFO, "control", "Rate limits disabled for tasks of type %s", name);
		return ok("rate limit disabled successfully");
	}
	cw_log(CW_LOG_INFO, "control", "New rate limit for tasks of type %s: %s.", name, text);
	return ok("new rate limit set successfully");
}

static json_t *c_time_limit(struct cw_worker *w, json_t *args)
{
	const char *name = arg_str(args, "task_name");
	json_t *soft = json_object_get(args, "soft"), *hard = json_object_get(args, "hard");

	if (!name || !cw_registry_find(cw_worker_registry(w), name)) {
		cw_log(CW_LOG_ERROR, "control", "Change time limit attempt for unknown task %s",
		       name ? name : "?");
		return nok("unknown task");
	}
	cw_worker_set_time_limit(w, name, soft, hard);
	cw_log(CW_LOG_INFO, "control", "New time limits for tasks of type %s: soft=%g hard=%g",
	       name, json_is_number(soft) ? json_number_value(soft) : 0,
	       json_is_number(hard) ? json_number_value(hard) : 0);
	return ok("time limits set successfully");
}

static json_t *c_enable_events(struct cw_worker *w, json_t *args)
{
	(void)args;
	if (!cw_events_set_task_enabled(cw_worker_events(w), true)) {
		cw_log(CW_LOG_INFO, "control", "Events of group {task} enabled by remote.");
		return ok("task events enabled");
	}
	return ok("task events already enabled");
}

static json_t *c_disable_events(struct cw_worker *w, json_t *args)
{
	(void)args;
	if (cw_events_set_task_enabled(cw_worker_events(w), false)) {
		cw_log(CW_LOG_INFO, "control", "Events of group {task} disabled by remote.");
		return ok("task events disabled");
	}
	return ok("task events already disabled");
}

static json_t *c_heartbeat(struct cw_worker *w, json_t *args)
{
	(void)args;
	cw_worker_heartbeat(w, "worker-heartbeat", 5);
	return json_null();
}

static json_t *c_election(struct cw_worker *w, json_t *args)
{
	(void)w;
	(void)args;
	/* no gossip: nothing to elect; the reply is None, as kombu replies for any handler */
	return json_null();
}

static json_t *c_pool_restart(struct cw_worker *w, json_t *args)
{
	(void)w;
	(void)args;
	return nok("ValueError('Pool restarts not enabled')");
}

static const struct {
	const char *name;
	json_t *(*fn)(struct cw_worker *w, json_t *args);
} commands[] = {
	{"ping", c_ping},
	{"stats", c_stats},
	{"active", c_active},
	{"dump_active", c_active},
	{"reserved", c_reserved},
	{"dump_reserved", c_reserved},
	{"scheduled", c_scheduled},
	{"dump_schedule", c_scheduled},
	{"revoked", c_revoked},
	{"dump_revoked", c_revoked},
	{"registered", c_registered},
	{"dump_tasks", c_registered},
	{"active_queues", c_active_queues},
	{"conf", c_conf},
	{"dump_conf", c_conf},
	{"query_task", c_query_task},
	{"report", c_report},
	{"clock", c_clock},
	{"hello", c_hello},
	{"revoke", c_revoke},
	{"terminate", c_terminate},
	{"shutdown", c_shutdown},
	{"pool_grow", c_pool_grow},
	{"pool_shrink", c_pool_shrink},
	{"pool_restart", c_pool_restart},
	{"autoscale", c_autoscale},
	{"add_consumer", c_add_consumer},
	{"cancel_consumer", c_cancel_consumer},
	{"rate_limit", c_rate_limit},
	{"time_limit", c_time_limit},
	{"enable_events", c_enable_events},
	{"disable_events", c_disable_events},
	{"heartbeat", c_heartbeat},
	{"election", c_election},
};

static void reply(struct cw_worker *w, const struct cw_control *c, json_t *value)
{
	size_t len;
	json_t *body = json_object();
	json_t *headers = json_pack("{s:s,s:I}", "ticket", c->ticket ? c->ticket : "", "clock",
				    (json_int_t)cw_events_forward(cw_worker_events(w)));
	char *env = NULL;

	if (body && headers) {
		json_object_set(body, cw_worker_config(w)->hostname, value ? value : json_null());
		env = cw_events_envelope(body, headers, c->reply_exchange, c->reply_routing_key, 1,
					 &len);
	}
	if (env && cw_worker_broker(w)->ops->publish_direct)
		cw_worker_broker(w)->ops->publish_direct(cw_worker_broker(w), c->reply_exchange, c->reply_routing_key, env, len,
					300);
	else
		cw_log(CW_LOG_ERROR, "control", "reply to %s not sent", c->method);
	free(env);
	json_decref(body);
	json_decref(headers);
}

void cw_mailbox_handle(struct cw_worker *w, const struct cw_control *c)
{
	json_t *r = NULL;
	bool found = false;

	cw_log(CW_LOG_DEBUG, "control", "pidbox received method %s", c->method);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, c->method)) {
			found = true;
			r = commands[i].fn(w, c->arguments);
			if (!r && commands[i].fn != c_shutdown && commands[i].fn != c_election)
				r = nok("MemoryError()");
			break;
		}
	if (!found) {
		char *repr = NULL;
		json_t *k = json_pack("[s]", c->method);
		char *inner = k ? cw_proto_pyrepr(json_array_get(k, 0), false, 200) : NULL;
		if (inner && asprintf(&repr, "KeyError(%s)", inner) < 0)
			repr = NULL;
		cw_log(CW_LOG_ERROR, "control", "pidbox command error: KeyError(%s)",
		       inner ? inner : "?");
		r = json_pack("{s:s}", "error", repr ? repr : "KeyError");
		free(repr);
		free(inner);
		json_decref(k);
	}
	if (c->reply_exchange && c->reply_routing_key && r)
		reply(w, c, r);
	json_decref(r);
}
