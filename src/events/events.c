/* Event dispatcher: see events.h. */
#include "events/events.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker.h"
#include "loop/loop.h"
#include "protocol/protocol.h"
#include "util/log.h"
#include "util/uuid.h"

struct cw_events {
	struct cw_broker *b;
	char *hostname;
	bool task, worker;
	uint64_t clock;
	long pid;
};

struct cw_events *cw_events_new(struct cw_broker *b, const char *hostname, bool task_events,
				bool worker_events)
{
	struct cw_events *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->hostname = strdup(hostname);
	if (!ev->hostname) {
		free(ev);
		return NULL;
	}
	ev->b = b;
	ev->task = task_events;
	ev->worker = worker_events;
	ev->pid = (long)getpid();
	return ev;
}

void cw_events_free(struct cw_events *ev)
{
	if (!ev)
		return;
	free(ev->hostname);
	free(ev);
}

uint64_t cw_events_clock(const struct cw_events *ev)
{
	return ev ? ev->clock : 0;
}

uint64_t cw_events_forward(struct cw_events *ev)
{
	return ev ? ++ev->clock : 0;
}

uint64_t cw_events_adjust(struct cw_events *ev, uint64_t other)
{
	if (!ev)
		return 0;
	ev->clock = (other > ev->clock ? other : ev->clock) + 1;
	return ev->clock;
}

bool cw_events_task_enabled(const struct cw_events *ev)
{
	return ev && ev->task;
}

bool cw_events_set_task_enabled(struct cw_events *ev, bool on)
{
	bool was = ev->task;
	ev->task = on;
	return was;
}

int cw_events_utcoffset(void)
{
	time_t now = time(NULL);
	struct tm tm;
	if (!localtime_r(&now, &tm))
		return 0;
	/* Python: time.timezone // 3600, seconds *west* of UTC, floor division */
	long west = -tm.tm_gmtoff;
	return (int)(west >= 0 ? west / 3600 : -((-west + 3599) / 3600));
}

char *cw_events_envelope(const json_t *body, json_t *headers, const char *exchange,
			 const char *routing_key, int delivery_mode, size_t *len)
{
	size_t blen;
	char tag[37], *text = cw_json_dumps(body, &blen), *b64 = NULL, *out = NULL;

	if (!text)
		goto out;
	b64 = cw_base64_encode((const unsigned char *)text, blen, NULL);
	if (!b64)
		goto out;
	cw_uuid4(tag);
	json_t *env = json_pack("{s:s,s:s,s:s,s:O,s:{s:i,s:{s:s,s:s},s:i,s:s,s:s}}", "body", b64,
				"content-encoding", "utf-8", "content-type", "application/json",
				"headers", headers, "properties", "delivery_mode", delivery_mode,
				"delivery_info", "exchange", exchange, "routing_key", routing_key,
				"priority", 0, "body_encoding", "base64", "delivery_tag", tag);
	if (env)
		out = cw_json_dumps(env, len);
	json_decref(env);
out:
	free(text);
	free(b64);
	return out;
}

void cw_events_send(struct cw_events *ev, const char *type, json_t *fields)
{
	bool is_task = !strncmp(type, "task-", 5);
	char rk[64];
	size_t len;

	if (!ev || (is_task ? !ev->task : !ev->worker) || !ev->b || !ev->b->ops->publish_fanout) {
		json_decref(fields);
		return;
	}
	json_t *e = fields ? fields : json_object();
	if (!e)
		return;
	json_object_set_new(e, "hostname", json_string(ev->hostname));
	json_object_set_new(e, "utcoffset", json_integer(cw_events_utcoffset()));
	json_object_set_new(e, "pid", json_integer(ev->pid));
	json_object_set_new(e, "clock", json_integer((json_int_t)cw_events_forward(ev)));
	json_object_set_new(e, "timestamp", json_real(cw_wall()));
	json_object_set_new(e, "type", json_string(type));
	snprintf(rk, sizeof(rk), "%s", type);
	for (char *p = rk; *p; p++)
		if (*p == '-')
			*p = '.';
	json_t *headers = json_pack("{s:s}", "hostname", ev->hostname);
	char *env = headers ? cw_events_envelope(e, headers, "celeryev", rk, 1, &len) : NULL;
	if (env)
		ev->b->ops->publish_fanout(ev->b, "celeryev", rk, env, len);
	else
		cw_log(CW_LOG_WARNING, "events", "out of memory: event %s not sent", type);
	free(env);
	json_decref(headers);
	json_decref(e);
}
