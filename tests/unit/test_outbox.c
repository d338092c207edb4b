/*
 * Unit tests: the canvas outbox (src/tasks/canvas.c), the serialised list of
 * messages a pool child hands back to the master: [u32 len, bytes] x 4
 * (queue, tag, priority, envelope) per message.  cw_outbox_next reads bytes
 * that crossed a process boundary, so every malformed shape must end in
 * false without reading past the end; inputs sit in exact-size heap blocks
 * so a sanitizer build catches any overread.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasks/canvas.h"

#include "check.h"

struct msg {
	const char *queue, *tag;
	int priority;
	const char *env;
	size_t env_len;
};

static const struct msg msgs[] = {
	{"celery", "tag-1", 0, "{\"task\": \"add\"}", 15},
	{"", "", -1, "", 0},
	{"q.with.dots", "t", INT_MAX, "bin\0ary\0", 8},
	{"x", "callback", INT_MIN, "{}", 2},
	{"celery", "chord", 255, "[1, 2, 3]", 9},
};
#define NMSGS (sizeof(msgs) / sizeof(msgs[0]))

static char *copy_exact(const char *p, size_t n)
{
	char *c = malloc(n ? n : 1);

	if (!c)
		abort();
	if (n)
		memcpy(c, p, n);
	return c;
}

static bool inside(const char *buf, size_t len, const char *p, size_t n)
{
	return p >= buf && (size_t)(p - buf) <= len && n <= len - (size_t)(p - buf);
}

static bool same(const struct cw_outmsg *m, const struct msg *want)
{
	return m->queue_len == strlen(want->queue) &&
	       memcmp(m->queue, want->queue, m->queue_len) == 0 &&
	       m->tag_len == strlen(want->tag) && memcmp(m->tag, want->tag, m->tag_len) == 0 &&
	       m->priority == want->priority && m->env_len == want->env_len &&
	       memcmp(m->env, want->env, m->env_len) == 0;
}

/* Reads buf to the end or the first false; counts messages, checks each stays inside. */
static size_t walk(const char *buf, size_t len, bool *in_bounds)
{
	struct cw_outmsg m;
	size_t off = 0, n = 0;

	*in_bounds = true;
	while (cw_outbox_next(buf, len, &off, &m)) {
		if (!inside(buf, len, m.queue, m.queue_len) ||
		    !inside(buf, len, m.tag, m.tag_len) || !inside(buf, len, m.env, m.env_len) ||
		    off > len)
			*in_bounds = false;
		n++;
	}
	return n;
}

static void build(struct cw_outbox *o, size_t ends[NMSGS])
{
	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < NMSGS; i++) {
		CHECK(cw_outbox_add(o, msgs[i].queue, msgs[i].tag, msgs[i].priority, msgs[i].env,
				    msgs[i].env_len) == CW_OK);
		ends[i] = o->len;
	}
	CHECK(!o->lost);
}

static void test_roundtrip(void)
{
	struct cw_outbox o;
	struct cw_outmsg m;
	size_t ends[NMSGS], off = 0;

	build(&o, ends);
	char *buf = copy_exact(o.buf, o.len);
	for (size_t i = 0; i < NMSGS; i++) {
		CHECK(cw_outbox_next(buf, o.len, &off, &m));
		CHECK(same(&m, &msgs[i]));
		CHECK(off == ends[i]);
	}
	CHECK(!cw_outbox_next(buf, o.len, &off, &m));
	CHECK(off == o.len);
	/* an offset past the end, and the largest one */
	off = o.len + 1;
	CHECK(!cw_outbox_next(buf, o.len, &off, &m));
	off = SIZE_MAX;
	CHECK(!cw_outbox_next(buf, o.len, &off, &m));
	free(buf);
	cw_outbox_free(&o);
	CHECK(o.buf == NULL && o.len == 0);
}

static void test_empty(void)
{
	struct cw_outbox o = {0};
	struct cw_outmsg m;
	size_t off = 0;

	CHECK(!cw_outbox_next(o.buf, o.len, &off, &m));
	CHECK(!cw_outbox_next(NULL, 100, &off, &m));
	char *one = copy_exact("", 0);
	CHECK(!cw_outbox_next(one, 0, &off, &m));
	free(one);
	cw_outbox_free(&o);

	/* a message of four empty fields is valid */
	CHECK(cw_outbox_add(&o, "", "", 0, "", 0) == CW_OK);
	CHECK(o.len == 17);	/* priority 0 is the one byte "0" */
	off = 0;
	CHECK(cw_outbox_next(o.buf, o.len, &off, &m));
	CHECK(m.queue_len == 0 && m.tag_len == 0 && m.env_len == 0 && m.priority == 0);
	CHECK(!cw_outbox_next(o.buf, o.len, &off, &m));
	cw_outbox_free(&o);
}

/* Cut the serialised outbox at every byte: only the messages wholly before the cut come out. */
static void test_truncated(void)
{
	struct cw_outbox o;
	size_t ends[NMSGS];
	bool counts_ok = true, bounds_ok = true;

	build(&o, ends);
	for (size_t cut = 0; cut < o.len; cut++) {
		char *buf = copy_exact(o.buf, cut);
		bool in;
		size_t want = 0;
		while (want < NMSGS && ends[want] <= cut)
			want++;
		if (walk(buf, cut, &in) != want)
			counts_ok = false;
		bounds_ok = bounds_ok && in;
		free(buf);
	}
	CHECK(counts_ok);
	CHECK(bounds_ok);
	cw_outbox_free(&o);
}

/* One message with raw field lengths (NULL bytes for a field: its length only, no body). */
static size_t put_raw(char *p, uint32_t len, const char *body)
{
	memcpy(p, &len, 4);
	if (body)
		memcpy(p + 4, body, len);
	return 4 + (body ? len : 0);
}

static bool next_of(const char *raw, size_t len, struct cw_outmsg *m)
{
	char *buf = copy_exact(raw, len);
	size_t off = 0;
	bool ok = cw_outbox_next(buf, len, &off, m);

	CHECK(!ok || (inside(buf, len, m->queue, m->queue_len) &&
		      inside(buf, len, m->tag, m->tag_len) &&
		      inside(buf, len, m->env, m->env_len) && off <= len));
	free(buf);
	return ok;
}

static void test_bad_lengths(void)
{
	static const uint32_t huge[] = {UINT32_MAX, UINT32_MAX - 3, UINT32_MAX - 4, 0x80000000u,
					 1u << 20};
	struct cw_outmsg m;
	char raw[256];
	size_t n;

	/* each of the four fields in turn claims more than is left */
	for (int field = 0; field < 4; field++) {
		for (size_t h = 0; h < sizeof(huge) / sizeof(huge[0]); h++) {
			n = 0;
			for (int f = 0; f < field; f++)
				n += put_raw(raw + n, 1, f == 2 ? "5" : "q");
			n += put_raw(raw + n, huge[h], NULL);
			memcpy(raw + n, "abcdefgh", 8);
			n += 8;
			CHECK(!next_of(raw, n, &m));
		}
		/* the field's body is one byte short */
		n = 0;
		for (int f = 0; f < field; f++)
			n += put_raw(raw + n, 1, f == 2 ? "5" : "q");
		n += put_raw(raw + n, 3, "abc");
		CHECK(!next_of(raw, n - 1, &m));
	}

	/* exactly fitting lengths pass */
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 2, "-7");
	n += put_raw(raw + n, 3, "env");
	CHECK(next_of(raw, n, &m) && m.priority == -7 && m.env_len == 3);
	/* a length field cut short */
	CHECK(!next_of(raw, n - 3 - 4 + 2, &m));
}

static void test_bad_priority(void)
{
	struct cw_outmsg m;
	char raw[256];
	size_t n;

	/* longer than any int: refused, whatever the digits */
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 12, "123456789012");
	n += put_raw(raw + n, 2, "{}");
	CHECK(!next_of(raw, n, &m));
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 200, "999999999999999999999999999999999999999999999999999999999999"
				   "999999999999999999999999999999999999999999999999999999999999"
				   "999999999999999999999999999999999999999999999999999999999999"
				   "99999999999999999999");
	n += put_raw(raw + n, 2, "{}");
	CHECK(!next_of(raw, n, &m));

	/* the longest that fits, and an empty one (atoi of "" is 0) */
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 11, "-2147483648");
	n += put_raw(raw + n, 2, "{}");
	CHECK(next_of(raw, n, &m) && m.priority == INT_MIN);
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 0, "");
	n += put_raw(raw + n, 2, "{}");
	CHECK(next_of(raw, n, &m) && m.priority == 0);

	/* digits followed directly by the next length field, no NUL between */
	n = put_raw(raw, 1, "q");
	n += put_raw(raw + n, 1, "t");
	n += put_raw(raw + n, 3, "123");
	n += put_raw(raw + n, 1, "9");
	CHECK(next_of(raw, n, &m) && m.priority == 123);
}

/* A valid message followed by junk: the first comes out, then false. */
static void test_trailing_junk(void)
{
	struct cw_outbox o = {0};
	struct cw_outmsg m;
	size_t off = 0;

	CHECK(cw_outbox_add(&o, "celery", "t", 3, "{}", 2) == CW_OK);
	size_t len = o.len;
	char *buf = malloc(len + 3);
	CHECK(buf != NULL);
	if (!buf)
		return;
	memcpy(buf, o.buf, len);
	memcpy(buf + len, "\xff\xff\xff", 3);
	CHECK(cw_outbox_next(buf, len + 3, &off, &m) && m.priority == 3);
	CHECK(!cw_outbox_next(buf, len + 3, &off, &m));
	free(buf);
	cw_outbox_free(&o);
}

int main(void)
{
	test_roundtrip();
	test_empty();
	test_truncated();
	test_bad_lengths();
	test_bad_priority();
	test_trailing_junk();
	return check_summary();
}
