/*
 * The worker's query/command API (worker.h) for remote control and the
 * HTTP monitor: answers are built from the parts' own state, and commands
 * go to the part that owns what they change.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/worker_int.h"
#include "cw_build.h"
#include "loop/loop.h"
#include "util/log.h"

const struct cw_config *cw_worker_config(const struct cw_worker *w) { return w->cfg; }
struct cw_loop *cw_worker_loop(const struct cw_worker *w) { return w->loop; }
struct cw_broker *cw_worker_broker(const struct cw_worker *w) { return w->broker; }
struct cw_pool *cw_worker_pool(const struct cw_worker *w) { return w->pool; }
struct cw_events *cw_worker_events(const struct cw_worker *w) { return w->events; }
struct cw_revoked *cw_worker_revoked(const struct cw_worker *w) { return w->revoked; }
const struct cw_registry *cw_worker_registry(const struct cw_worker *w) { return w->reg; }
struct cw_metrics *cw_worker_metrics(const struct cw_worker *w) { return w->metrics; }

void cw_worker_counts(const struct cw_worker *w, struct cw_worker_counts *c)
{
	*c = (struct cw_worker_counts){
		.processed = w->processed, .started = w->started,
		.limit = cw_reserve_limit(w->reserve),
		.held = cw_reserve_tasks(w->reserve),
		.reserved = (long)(cw_reserve_nready(w->reserve) + cw_ratelimit_waiting(w->ratelimit)),
		.scheduled = (long)cw_reserve_neta(w->reserve),
		.autoscale_max = cw_autoscale_max(w->autoscale),
		.autoscale_min = cw_autoscale_min(w->autoscale), .running = cw_consumer_running(w)};
}

json_t *cw_worker_totals(const struct cw_worker *w)
{
	return w->totals;
}

bool cw_worker_slot_busy(const struct cw_worker *w, int slot)
{
	return cw_reserve_running(w->reserve, slot) != NULL;
}

/* A request's info dict as Celery's Request.info(safe) builds it. */
static json_t *request_info(const struct cw_worker *w, const struct held *h, bool safe)
{
	json_t *args = safe ? json_string(h->req.argsrepr ? h->req.argsrepr : "")
			    : json_incref(h->req.args);
	json_t *kwargs = safe ? json_string(h->req.kwargsrepr ? h->req.kwargsrepr : "")
			      : json_incref(h->req.kwargs);
	bool running = h->time_start > 0;
	pid_t pid = running ? cw_pool_pid(w->pool, h->slot) : 0;
	return json_pack("{s:s,s:s,s:o,s:o,s:s,s:s,s:o,s:b,s:{s:s,s:s,s:i,s:b},s:o}", "id",
			 h->req.id, "name", h->req.task, "args", args, "kwargs", kwargs, "type",
			 h->req.task, "hostname", w->cfg->hostname, "time_start",
			 running ? json_real(h->time_start) : json_null(), "acknowledged",
			 running && !h->acks_late, "delivery_info", "exchange",
			 h->d->env.exchange ? h->d->env.exchange : "", "routing_key",
			 h->d->env.routing_key && *h->d->env.routing_key ? h->d->env.routing_key
									 : h->d->queue,
			 "priority", h->d->env.priority, "redelivered", h->d->env.redelivered,
			 "worker_pid", pid > 0 ? json_integer(pid) : json_null());
}

struct collect {
	const struct cw_worker *w;
	json_t *out;
	bool safe;
};

static void add_info(void *arg, struct held *h, enum cw_held_where where)
{
	struct collect *c = arg;
	(void)where;
	json_array_append_new(c->out, request_info(c->w, h, c->safe));
}

static void add_scheduled(void *arg, struct held *h, enum cw_held_where where)
{
	struct collect *c = arg;
	(void)where;
	json_array_append_new(c->out, json_pack("{s:o,s:i,s:o}", "eta",
						h->req.eta ? json_string(h->req.eta) : json_null(),
						"priority", 6, "request",
						request_info(c->w, h, false)));
}

json_t *cw_worker_active(const struct cw_worker *w, bool safe)
{
	struct collect c = {w, json_array(), safe};
	cw_reserve_each(w->reserve, 1u << CW_HELD_RUNNING, add_info, &c);
	return c.out;
}

json_t *cw_worker_reserved(const struct cw_worker *w)
{
	struct collect c = {w, json_array(), false};
	cw_reserve_each(w->reserve, 1u << CW_HELD_READY, add_info, &c);
	cw_ratelimit_each(w->ratelimit, add_info, &c);
	return c.out;
}

json_t *cw_worker_scheduled(const struct cw_worker *w)
{
	struct collect c = {w, json_array(), false};
	cw_reserve_each(w->reserve, 1u << CW_HELD_ETA, add_scheduled, &c);
	return c.out;
}

json_t *cw_worker_query_task(const struct cw_worker *w, const char *id)
{
	enum cw_held_where where = CW_HELD_READY;
	struct held *h = cw_reserve_find(w->reserve, id, &where);
	if (!h)
		h = cw_ratelimit_find(w->ratelimit, id);
	if (!h)
		return NULL;
	return json_pack("[s,o]", where == CW_HELD_RUNNING ? "active" : "reserved",
			 request_info(w, h, false));
}

double cw_worker_rate(const struct cw_worker *w, const char *task)
{
	return cw_ratelimit_rate(w->ratelimit, task);
}

bool cw_worker_revoke(struct cw_worker *w, const char *id, bool terminate, int sig)
{
	enum cw_held_where where = CW_HELD_READY;
	struct held *h = cw_reserve_find(w->reserve, id, &where);
	bool running = h && where == CW_HELD_RUNNING;

	if (cw_revoked_add(w->revoked, id, cw_wall()) != CW_OK) {
		cw_log(CW_LOG_ERROR, "control", "revoke: bad task id ignored");
		return running;
	}
	cw_log(CW_LOG_INFO, "control", "Tasks flagged as revoked: %s", id);
	if (!terminate)
		return running;
	/* every slot running that id (a redelivered duplicate may run twice) */
	for (int s = 0; s < cw_reserve_slots(w->reserve); s++) {
		h = cw_reserve_running(w->reserve, s);
		if (!h || strcmp(h->req.id, id))
			continue;
		cw_log(CW_LOG_INFO, "control", "Terminating %s (%s)", id, strsignal(sig));
		h->terminated = true;
		if (cw_pool_signal(w->pool, s, sig) != CW_OK)
			cw_log(CW_LOG_WARNING, "control", "cannot terminate %s in this pool", id);
	}
	return running;
}

void cw_worker_save_state(struct cw_worker *w)
{
	struct cw_error err = {0};
	if (w->cfg->statedb && *w->cfg->statedb &&
	    cw_revoked_save(w->revoked, w->cfg->statedb, cw_wall(), &err) != CW_OK)
		cw_log(CW_LOG_ERROR, "worker", "cannot save the state db: %s", err.msg);
}

int cw_worker_set_rate(struct cw_worker *w, const char *task, double rate)
{
	return cw_ratelimit_set(w->ratelimit, task, rate);
}

void cw_worker_set_time_limit(struct cw_worker *w, const char *task, json_t *soft, json_t *hard)
{
	json_object_set_new(w->task_limits, task,
			    json_pack("[o,o]", json_is_number(soft) ? json_incref(soft) : json_null(),
				      json_is_number(hard) ? json_incref(hard) : json_null()));
}

/* The budget follows the processes: concurrency (or the autoscaler's max) x multiplier. */
static void set_limit(struct cw_worker *w)
{
	int max = cw_autoscale_max(w->autoscale);
	int procs = max ? max : cw_pool_size(w->pool);
	cw_reserve_set_limit(w->reserve, procs * (int)w->cfg->prefetch_multiplier);
	cw_consumer_update_credit(w);
}

int cw_worker_resize(struct cw_worker *w, int n)
{
	if (n > 0) {
		if (cw_reserve_grow(w->reserve, cw_pool_slots(w->pool) + n) != CW_OK)
			return CW_ENOMEM;
		int rc = cw_pool_grow(w->pool, n);
		if (cw_reserve_grow(w->reserve, cw_pool_slots(w->pool)) != CW_OK)
			rc = CW_ENOMEM;
		set_limit(w);
		cw_consumer_dispatch(w);
		return rc;
	}
	int rc = cw_pool_shrink(w->pool, -n);
	set_limit(w);
	return rc;
}

int cw_worker_autoscale(struct cw_worker *w, bool has_max, int max, bool has_min, int min)
{
	if (!w->autoscale)
		return CW_EINVAL;
	cw_autoscale_set(w->autoscale, has_max, max, has_min, min);
	return CW_OK;
}

void cw_worker_shutdown(struct cw_worker *w)
{
	cw_shutdown_request(w->shutdown, false);
}

static double round2(double v)
{
	return round(v * 100) / 100;
}

void cw_worker_heartbeat(struct cw_worker *w, const char *type, double freq)
{
	double la[3] = {0, 0, 0};
	if (getloadavg(la, 3) < 0)
		la[0] = la[1] = la[2] = 0;
	cw_events_send(w->events, type,
		       json_pack("{s:f,s:i,s:I,s:[f,f,f],s:s,s:s,s:s}", "freq", freq, "active",
				 cw_reserve_active(w->reserve), "processed", (json_int_t)w->processed,
				 "loadavg", round2(la[0]), round2(la[1]), round2(la[2]), "sw_ident",
				 "cworker", "sw_ver", CW_VERSION, "sw_sys", "Linux"));
}
