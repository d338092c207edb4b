/*
 * Celery events (celery/events/dispatcher.py): JSON dicts published on the
 * `celeryev` exchange (fanout on Redis) with routing key = type with '-'
 * turned into '.', stamped with hostname, utcoffset, pid, a Lamport clock
 * and a timestamp.  Worker events (worker-*) always flow unless heartbeats
 * are off; task events (task-*) only with -E or after enable_events.
 */
#ifndef CW_EVENTS_H
#define CW_EVENTS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

struct cw_broker;
struct cw_events;

struct cw_events *cw_events_new(struct cw_broker *b, const char *hostname, bool task_events,
				bool worker_events);
void cw_events_free(struct cw_events *ev);

/* Lamport clock (kombu.clocks.LamportClock): forward = +1, adjust = max(ours, theirs) + 1. */
uint64_t cw_events_clock(const struct cw_events *ev);
uint64_t cw_events_forward(struct cw_events *ev);
uint64_t cw_events_adjust(struct cw_events *ev, uint64_t other);

bool cw_events_task_enabled(const struct cw_events *ev);
/* Returns the previous setting. */
bool cw_events_set_task_enabled(struct cw_events *ev, bool on);

/* Send event `type` with fields (a new reference is stolen; may be NULL). */
void cw_events_send(struct cw_events *ev, const char *type, json_t *fields);

/* The kombu envelope of a JSON body (base64 body, as Python's Redis transport writes it). */
char *cw_events_envelope(const json_t *body, json_t *headers, const char *exchange,
			 const char *routing_key, int delivery_mode, size_t *len);

/* Hours west of UTC, as celery.utils.time.utcoffset() reports it. */
int cw_events_utcoffset(void);

#endif
