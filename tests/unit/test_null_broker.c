/*
 * Unit tests: the null:// transport on a real cw_loop — credit-driven
 * deliveries from the loop only, ack/reject/restore bookkeeping, and the
 * broker table (lookup, --broker URL checks, transport names, stats info).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/null.h"
#include "loop/loop.h"
#include "protocol/protocol.h"

#include "check.h"

#define MAXD 16

struct seen {
	struct cw_broker *b;
	struct cw_delivery *d[MAXD];
	int n;
	int ups;
	bool in_credit;         /* inside set_credit: a delivery now would be a bug */
	int during_credit;
};

static void on_delivery(void *arg, struct cw_delivery *d)
{
	struct seen *s = arg;
	if (s->in_credit)
		s->during_credit++;
	if (s->n < MAXD)
		s->d[s->n++] = d;
	else
		cw_delivery_free(d);
}

static void on_state(void *arg, bool up)
{
	struct seen *s = arg;
	s->ups += up;
}

static void stop(struct cw_loop *loop, void *arg)
{
	(void)arg;
	cw_loop_stop(loop);
}

/* Run the loop until every zero-delay timer has fired (and a little more). */
static void step(struct cw_loop *loop)
{
	cw_loop_timer(loop, 0.01, stop, NULL);
	cw_loop_run(loop);
}

static void credit(struct seen *s, int n)
{
	s->in_credit = true;
	s->b->ops->set_credit(s->b, n);
	s->in_credit = false;
}

/* A kombu envelope for task t with id i (body: [[n], {}, {}]). */
static char *envelope(int n)
{
	char body[64], *b64, *out = malloc(1024);
	snprintf(body, sizeof(body), "[[%d], {}, {}]", n);
	b64 = cw_base64_encode((const unsigned char *)body, strlen(body), NULL);
	snprintf(out, 1024,
		 "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": "
		 "\"application/json\", \"headers\": {\"task\": \"t\", \"id\": \"id-%d\"}, "
		 "\"properties\": {\"delivery_tag\": \"tag-%d\", \"body_encoding\": \"base64\", "
		 "\"delivery_info\": {\"exchange\": \"\", \"routing_key\": \"q\"}}}",
		 b64, n, n);
	free(b64);
	return out;
}

static const char *task_id(const struct cw_delivery *d)
{
	return d->env.task ? d->env.task->id
			   : json_string_value(json_object_get(d->env.headers, "id"));
}

static void test_deliveries(void)
{
	struct cw_loop *loop = cw_loop_new();
	struct seen s = {0};
	struct cw_error err = {0};
	char *queues[] = {"q"};
	struct cw_broker_opts o = {.url = "null://", .queues = queues, .nqueues = 1,
				   .limits = CW_PROTO_LIMITS_DEFAULT};
	struct cw_broker_handler h = {.on_delivery = on_delivery, .on_state = on_state, .arg = &s};
	struct cw_null_counts c;

	s.b = cw_broker_open(loop, &o, &h, &err);
	CHECK(s.b != NULL);
	if (!s.b)
		return;
	CHECK(!strcmp(cw_broker_transport(s.b), "null"));
	CHECK(!s.b->ops->connected(s.b) && s.ups == 0); /* up is told from the loop */
	for (int i = 1; i <= 5; i++) {
		char *raw = envelope(i);
		CHECK(cw_null_broker_push(s.b, "q", raw, strlen(raw)) == CW_OK);
		free(raw);
	}
	CHECK(cw_null_broker_queue_len(s.b, "q") == 5);
	step(loop);
	CHECK(s.ups == 1 && s.b->ops->connected(s.b));
	CHECK(s.n == 0); /* no credit yet */

	credit(&s, 2);
	CHECK(s.n == 0 && s.during_credit == 0);
	step(loop);
	CHECK(s.n == 2 && s.during_credit == 0);
	CHECK(cw_null_broker_queue_len(s.b, "q") == 3);
	CHECK(s.n == 2 && !strcmp(task_id(s.d[0]), "id-1") && !strcmp(task_id(s.d[1]), "id-2"));
	CHECK(s.d[0]->deliveries == 1 && !strcmp(s.d[0]->queue, "q"));
	CHECK(strcmp(s.d[0]->tag, s.d[1]->tag) != 0);
	step(loop);
	CHECK(s.n == 2); /* credit spent */

	/* ack one, restore the other: it comes back first, counted as redelivered */
	s.b->ops->ack(s.b, s.d[0]);
	s.b->ops->restore(s.b, s.d[1]);
	CHECK(cw_null_broker_queue_len(s.b, "q") == 4);
	cw_delivery_free(s.d[0]);
	cw_delivery_free(s.d[1]);
	s.n = 0;
	step(loop);
	CHECK(s.n == 0); /* a restore grants nothing */
	credit(&s, 1);
	step(loop);
	CHECK(s.n == 1 && !strcmp(task_id(s.d[0]), "id-2") && s.d[0]->deliveries == 2);

	/* reject with requeue: to the tail; without: dropped */
	s.b->ops->reject(s.b, s.d[0], true);
	cw_delivery_free(s.d[0]);
	s.n = 0;
	credit(&s, 3);
	step(loop);
	CHECK(s.n == 3 && !strcmp(task_id(s.d[0]), "id-3") && !strcmp(task_id(s.d[2]), "id-5"));
	for (int i = 0; i < s.n; i++) {
		s.b->ops->reject(s.b, s.d[i], false);
		cw_delivery_free(s.d[i]);
	}
	s.n = 0;
	CHECK(cw_null_broker_queue_len(s.b, "q") == 1);

	/* publish appends; credit 0 stops deliveries */
	char *raw = envelope(6);
	s.b->ops->publish(s.b, "q", 0, "p1", raw, strlen(raw));
	free(raw);
	credit(&s, 0);
	step(loop);
	CHECK(s.n == 0 && cw_null_broker_queue_len(s.b, "q") == 2);
	credit(&s, 5);
	step(loop);
	CHECK(s.n == 2 && !strcmp(task_id(s.d[0]), "id-2") && !strcmp(task_id(s.d[1]), "id-6"));
	for (int i = 0; i < s.n; i++) {
		s.b->ops->ack(s.b, s.d[i]);
		cw_delivery_free(s.d[i]);
	}
	s.n = 0;

	/* queues not consumed keep their messages until add_queue */
	raw = envelope(7);
	CHECK(cw_null_broker_push(s.b, "other", raw, strlen(raw)) == CW_OK);
	free(raw);
	step(loop);
	CHECK(s.n == 0 && cw_null_broker_queue_len(s.b, "other") == 1);
	CHECK(s.b->ops->add_queue(s.b, "other") == CW_OK);
	CHECK(s.b->ops->add_queue(s.b, "other") == CW_EINVAL);
	const char *const *qs;
	CHECK(s.b->ops->queues(s.b, &qs) == 2 && !strcmp(qs[1], "other"));
	step(loop);
	CHECK(s.n == 1 && !strcmp(s.d[0]->queue, "other"));
	s.b->ops->ack(s.b, s.d[0]);
	cw_delivery_free(s.d[0]);
	s.n = 0;
	CHECK(s.b->ops->cancel_queue(s.b, "other") == CW_OK);
	CHECK(s.b->ops->cancel_queue(s.b, "other") == CW_ENOTFOUND);

	/* undecodable messages are dropped, not delivered */
	CHECK(cw_null_broker_push(s.b, "q", "garbage", 7) == CW_OK);
	step(loop);
	CHECK(s.n == 0 && cw_null_broker_queue_len(s.b, "q") == 0);

	cw_null_broker_counts(s.b, &c);
	CHECK(c.acks == 4 && c.restores == 1 && c.requeues == 1 && c.rejects == 3);
	CHECK(c.publishes == 1 && c.delivered == 9);
	json_t *info = cw_broker_info(s.b);
	CHECK(!strcmp(json_string_value(json_object_get(info, "transport")), "null"));
	json_decref(info);
	s.b->ops->close(s.b);
	cw_loop_free(loop);
}

/* Closing from inside on_delivery must not touch the freed broker. */
static void close_in_delivery(void *arg, struct cw_delivery *d)
{
	struct seen *s = arg;
	cw_delivery_free(d);
	s->n++;
	s->b->ops->close(s->b);
}

static void test_close_in_handler(void)
{
	struct cw_loop *loop = cw_loop_new();
	struct seen s = {0};
	struct cw_error err = {0};
	char *queues[] = {"q"};
	struct cw_broker_opts o = {.url = "null://", .queues = queues, .nqueues = 1};
	struct cw_broker_handler h = {.on_delivery = close_in_delivery, .arg = &s};

	s.b = cw_broker_open(loop, &o, &h, &err);
	CHECK(s.b != NULL);
	if (!s.b)
		return;
	for (int i = 0; i < 3; i++) {
		char *raw = envelope(i);
		CHECK(cw_null_broker_push(s.b, "q", raw, strlen(raw)) == CW_OK);
		free(raw);
	}
	credit(&s, 3);
	step(loop);
	CHECK(s.n == 1);
	cw_loop_free(loop);
}

static void test_table(void)
{
	struct cw_error err = {0};
	struct cw_loop *loop = cw_loop_new();
	struct cw_broker_opts o = {.url = "kafka://h"};
	struct cw_broker_handler h = {0};

	CHECK(cw_broker_open(loop, &o, &h, &err) == NULL && err.code == CW_EINVAL);
	CHECK(strstr(err.msg, "redis://") && strstr(err.msg, "null://"));
	CHECK(!strcmp(cw_broker_url_transport("redis://h/0"), "redis"));
	CHECK(cw_broker_url_transport("kafka://h") == NULL);
	CHECK(cw_broker_check_url("redis://h:1/2", &err) == CW_OK);
	CHECK(cw_broker_check_url("null://", &err) == CW_EINVAL); /* tests only */
	CHECK(cw_broker_check_url("kafka://u:secret@h//", &err) == CW_EINVAL);
	CHECK(strstr(err.msg, "unsupported URL") && !strstr(err.msg, "secret"));
#ifdef CW_HAVE_AMQP
	CHECK(strstr(err.msg, "(this build speaks redis://, amqp:// and amqps://)") != NULL);
	CHECK(!strcmp(cw_broker_url_transport("pyamqp://h//"), "amqp"));
	CHECK(!strcmp(cw_broker_url_transport("amqps://h//"), "amqp"));
	CHECK(cw_broker_check_url("amqps://h//", &err) == CW_OK);
#else
	CHECK(strstr(err.msg, "(this build speaks redis://)") != NULL);
#endif
	cw_loop_free(loop);
}

int main(void)
{
	test_deliveries();
	test_close_in_handler();
	test_table();
	return check_summary();
}
