/*
 * A task envelope read in one pass, without a tree.
 *
 * jansson builds a hash table per object and a value per field: for the
 * ~900-byte envelope of a Celery task that is most of the master's work per
 * message.  The consumer needs a dozen fields of it.  This reader walks the
 * text once, checks that it is JSON, and keeps the fields as spans, copied
 * at the end into one block.
 *
 * It only ever says "read" or "not for me", never "invalid": whatever it does
 * not fully understand (an escape or a byte outside printable ASCII in any
 * string, a number jansson would refuse or turn into a big integer where a
 * field is read, a field of an unexpected type, a repeated field, deep
 * nesting, a protocol-1 message) goes to cw_proto_decode_envelope, whose
 * errors are the only ones.  So a message reads the same either way; the fuzz
 * target (tests/fuzz/fuzz_message.c) compares the two on every input.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/envelope_int.h"
#include "protocol/protocol.h"

enum kind { K_NULL, K_TRUE, K_FALSE, K_STR, K_INT, K_REAL, K_BIG, K_OBJ, K_ARR };

struct span {
	const char *p; /* NULL: absent (or null, for the header strings) */
	size_t n;
};

struct val {
	enum kind k;
	struct span s; /* K_STR */
	int64_t i;     /* K_INT */
	double d;      /* K_INT, K_REAL */
};

#define NHSTR CW_TH_NSTR /* the header strings (cw_task_header_strs) */

enum { P_DELIVERY_TAG, P_CORRELATION_ID, P_REPLY_TO, P_BODY_ENCODING, P_EXCHANGE,
       P_ROUTING_KEY, P_CONTENT_TYPE, P_CONTENT_ENCODING, NPSTR };

struct rd {
	const char *p, *end;
	size_t depth, max_depth;
	/* what was read */
	struct span body, hs[NHSTR], ps[NPSTR];
	int64_t retries, group_index;
	double tl[2];
	int priority;
	bool ignore_result, redelivered, have_body, have_headers, have_props;
};

#define GIVE_UP (-1)

static void ws(struct rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
		r->p++;
}

/* A string of printable ASCII without escapes; r->p is at its opening quote. */
static int str(struct rd *r, struct span *s)
{
	const char *q = ++r->p;
	while (q < r->end) {
		unsigned char c = (unsigned char)*q;
		if (c == '"') {
			s->p = r->p;
			s->n = (size_t)(q - r->p);
			r->p = q + 1;
			return 0;
		}
		if (c < 0x20 || c >= 0x80 || c == '\\')
			return GIVE_UP;
		q++;
	}
	return GIVE_UP;
}

static bool digit(const struct rd *r)
{
	return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

/* A number as JSON writes it: K_INT in int64, K_BIG beyond, K_REAL when finite. */
static int num(struct rd *r, struct val *v)
{
	const char *st = r->p;
	bool integral = true;
	if (*r->p == '-')
		r->p++;
	if (!digit(r))
		return GIVE_UP;
	if (*r->p++ != '0')
		while (digit(r))
			r->p++;
	if (r->p < r->end && *r->p == '.') {
		integral = false;
		r->p++;
		if (!digit(r))
			return GIVE_UP;
		while (digit(r))
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		integral = false;
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (!digit(r))
			return GIVE_UP;
		while (digit(r))
			r->p++;
	}
	char tmp[64];
	size_t n = (size_t)(r->p - st);
	if (n >= sizeof(tmp))
		return GIVE_UP; /* long literals: leave them to jansson */
	memcpy(tmp, st, n);
	tmp[n] = '\0';
	errno = 0;
	if (integral) {
		long long i = strtoll(tmp, NULL, 10);
		if (errno == ERANGE) {
			v->k = K_BIG;
			return 0;
		}
		v->k = K_INT;
		v->i = i;
		v->d = (double)i;
		return 0;
	}
	v->d = strtod(tmp, NULL);
	if (errno == ERANGE || !isfinite(v->d))
		return GIVE_UP;
	v->k = K_REAL;
	return 0;
}

static int lit(struct rd *r, const char *word, size_t n)
{
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return GIVE_UP;
	r->p += n;
	return 0;
}

typedef int (*member_fn)(struct rd *r, struct span key, unsigned *seen);

static int object(struct rd *r, member_fn member);
static int value(struct rd *r, struct val *v);

static int skip_member(struct rd *r, struct span key, unsigned *seen)
{
	(void)key;
	(void)seen;
	struct val v;
	return value(r, &v);
}

/* At '[' or '{': 1 when the container is empty (closed already), 0 when an element follows. */
static int open_container(struct rd *r, char close)
{
	if (++r->depth >= r->max_depth)
		return GIVE_UP;
	r->p++;
	ws(r);
	if (r->p < r->end && *r->p == close) {
		r->p++;
		r->depth--;
		return 1;
	}
	return 0;
}

/* After an element: 1 when `close` ends the container, 0 after a comma. */
static int after_element(struct rd *r, char close)
{
	ws(r);
	if (r->p >= r->end)
		return GIVE_UP;
	if (*r->p == close) {
		r->p++;
		r->depth--;
		return 1;
	}
	if (*r->p++ != ',')
		return GIVE_UP;
	ws(r);
	return 0;
}

static int array(struct rd *r)
{
	struct val v;
	int rc = open_container(r, ']');
	while (rc == 0) {
		if (value(r, &v))
			return GIVE_UP;
		rc = after_element(r, ']');
	}
	return rc < 0 ? GIVE_UP : 0;
}

/* Any value; containers are checked and skipped. */
static int value(struct rd *r, struct val *v)
{
	if (r->p >= r->end)
		return GIVE_UP;
	switch (*r->p) {
	case '"':
		v->k = K_STR;
		return str(r, &v->s);
	case '{':
		v->k = K_OBJ;
		return object(r, skip_member);
	case '[':
		v->k = K_ARR;
		return array(r);
	case 't':
		v->k = K_TRUE;
		return lit(r, "true", 4);
	case 'f':
		v->k = K_FALSE;
		return lit(r, "false", 5);
	case 'n':
		v->k = K_NULL;
		return lit(r, "null", 4);
	default:
		return num(r, v);
	}
}

/* An object; member() reads each value (r->p at it, after the colon and blanks). */
static int object(struct rd *r, member_fn member)
{
	unsigned seen = 0;
	int rc = open_container(r, '}');
	while (rc == 0) {
		struct span key;
		if (r->p >= r->end || *r->p != '"' || str(r, &key))
			return GIVE_UP;
		ws(r);
		if (r->p >= r->end || *r->p++ != ':')
			return GIVE_UP;
		ws(r);
		if (member(r, key, &seen))
			return GIVE_UP;
		rc = after_element(r, '}');
	}
	return rc < 0 ? GIVE_UP : 0;
}

static bool is(struct span key, const char *name)
{
	size_t n = strlen(name);
	return key.n == n && memcmp(key.p, name, n) == 0;
}

/* A field the reader uses may appear once: with repeats, jansson's "last one wins" decides. */
static int once(unsigned *seen, unsigned bit)
{
	if (*seen & (1u << bit))
		return GIVE_UP;
	*seen |= 1u << bit;
	return 0;
}

/* properties.delivery_info: exchange, routing_key, redelivered */
static int di_member(struct rd *r, struct span key, unsigned *seen)
{
	struct val v;
	int which = is(key, "exchange") ? P_EXCHANGE : is(key, "routing_key") ? P_ROUTING_KEY : -1;
	if (which >= 0) {
		if (once(seen, (unsigned)which) || value(r, &v) || v.k == K_BIG)
			return GIVE_UP;
		r->ps[which] = v.k == K_STR ? v.s : (struct span){0};
		return 0;
	}
	if (is(key, "redelivered")) {
		if (once(seen, NPSTR) || value(r, &v))
			return GIVE_UP;
		r->redelivered |= v.k == K_TRUE;
		return 0;
	}
	return value(r, &v);
}

static int props_member(struct rd *r, struct span key, unsigned *seen)
{
	static const char *const names[] = {"delivery_tag", "correlation_id", "reply_to",
					    "body_encoding"};
	struct val v;
	for (unsigned i = 0; i < 4; i++)
		if (is(key, names[i])) {
			/* not a string: absent, as json_string_value() says (a big integer is a
			 * string in the tree) */
			if (once(seen, i) || value(r, &v) || v.k == K_BIG)
				return GIVE_UP;
			r->ps[i] = v.k == K_STR ? v.s : (struct span){0};
			return 0;
		}
	if (is(key, "priority")) {
		if (once(seen, 4) || value(r, &v) || v.k == K_BIG)
			return GIVE_UP;
		r->priority = v.k == K_INT ? (int)v.i : 0;
		return 0;
	}
	if (is(key, "delivery_info")) {
		if (once(seen, 5) || r->p >= r->end || *r->p != '{')
			return GIVE_UP;
		return object(r, di_member);
	}
	return value(r, &v);
}

/* timelimit: [hard, soft], each a number >= 0 or null */
static int timelimit(struct rd *r)
{
	struct val v;
	if (r->p >= r->end || *r->p != '[' || ++r->depth >= r->max_depth)
		return GIVE_UP;
	r->p++;
	for (int i = 0; i < 2; i++) {
		ws(r);
		if (value(r, &v))
			return GIVE_UP;
		if (v.k == K_NULL)
			r->tl[i] = 0;
		else if ((v.k == K_INT || v.k == K_REAL) && v.d >= 0)
			r->tl[i] = v.d;
		else
			return GIVE_UP;
		ws(r);
		if (r->p >= r->end || *r->p++ != (i == 0 ? ',' : ']'))
			return GIVE_UP;
	}
	r->depth--;
	return 0;
}

static int headers_member(struct rd *r, struct span key, unsigned *seen)
{
	struct val v;
	for (unsigned i = 0; i < NHSTR; i++)
		if (is(key, cw_task_header_strs[i].name)) {
			if (once(seen, i) || value(r, &v) || (v.k != K_STR && v.k != K_NULL))
				return GIVE_UP;
			r->hs[i] = v.k == K_STR ? v.s : (struct span){0};
			return 0;
		}
	bool retries = is(key, "retries");
	if (retries || is(key, "group_index")) {
		if (once(seen, retries ? NHSTR : NHSTR + 1) || value(r, &v) ||
		    (v.k != K_INT && v.k != K_NULL))
			return GIVE_UP;
		if (v.k == K_INT)
			*(retries ? &r->retries : &r->group_index) = v.i;
		return 0;
	}
	if (is(key, "timelimit")) {
		if (once(seen, NHSTR + 2))
			return GIVE_UP;
		if (r->p < r->end && *r->p == 'n')
			return value(r, &v);
		return timelimit(r);
	}
	bool ignore = is(key, "ignore_result");
	if (ignore || is(key, "redelivered")) {
		if (once(seen, ignore ? NHSTR + 3 : NHSTR + 4) || value(r, &v))
			return GIVE_UP;
		if (ignore)
			r->ignore_result = v.k == K_TRUE;
		else
			r->redelivered |= v.k == K_TRUE;
		return 0;
	}
	return value(r, &v);
}

static int top_member(struct rd *r, struct span key, unsigned *seen)
{
	struct val v;
	bool ct = is(key, "content-type");
	if (ct || is(key, "content-encoding")) {
		/* anything but a string reads as "" in the tree: rare, left to it */
		if (once(seen, ct ? 0 : 1) || value(r, &v) || v.k != K_STR)
			return GIVE_UP;
		r->ps[ct ? P_CONTENT_TYPE : P_CONTENT_ENCODING] = v.s;
		return 0;
	}
	if (is(key, "body")) {
		if (once(seen, 2) || value(r, &v) || v.k != K_STR)
			return GIVE_UP;
		r->body = v.s;
		r->have_body = true;
		return 0;
	}
	if (is(key, "headers")) {
		if (once(seen, 3) || r->p >= r->end || *r->p != '{')
			return GIVE_UP;
		r->have_headers = true;
		return object(r, headers_member);
	}
	if (is(key, "properties")) {
		if (once(seen, 4) || r->p >= r->end || *r->p != '{')
			return GIVE_UP;
		r->have_props = true;
		return object(r, props_member);
	}
	return value(r, &v);
}

static size_t span_size(struct span s)
{
	return s.p ? s.n + 1 : 0;
}

static const char *put(char **at, struct span s, const char *absent)
{
	if (!s.p)
		return absent;
	char *d = *at;
	memcpy(d, s.p, s.n);
	d[s.n] = '\0';
	*at += s.n + 1;
	return d;
}

/* 1: read into env (its block allocated), 0: not for the fast path, -1: out of memory */
static int scan(const char *buf, size_t len, const struct cw_proto_limits *lim,
		struct cw_envelope *env, const char **body, size_t *blen, bool *base64)
{
	struct rd r = {.p = buf, .end = buf + len, .max_depth = lim->max_depth, .group_index = -1};

	if (len > lim->max_message)
		return 0;
	ws(&r);
	if (r.p >= r.end || *r.p != '{' || object(&r, top_member))
		return 0;
	ws(&r);
	/* a protocol-2 task: headers with a task name (protocol 1 reads its body) */
	if (r.p != r.end || !r.have_body || !r.have_headers || !r.have_props || !r.hs[CW_TH_TASK].p)
		return 0;

	size_t size = sizeof(struct cw_task_headers);
	for (int i = 0; i < NHSTR; i++)
		size += span_size(r.hs[i]);
	for (int i = 0; i < NPSTR; i++)
		size += span_size(r.ps[i]);
	struct cw_task_headers *th = malloc(size);
	if (!th)
		return -1;
	char *at = (char *)(th + 1);
	for (int i = 0; i < NHSTR; i++)
		*cw_task_header_slot(th, i) = put(&at, r.hs[i], NULL);
	th->retries = r.retries;
	th->group_index = r.group_index;
	th->time_limit = r.tl[0];
	th->soft_time_limit = r.tl[1];
	th->ignore_result = r.ignore_result;

	env->task = th;
	env->content_type = put(&at, r.ps[P_CONTENT_TYPE], "");
	env->content_encoding = put(&at, r.ps[P_CONTENT_ENCODING], "");
	env->delivery_tag = put(&at, r.ps[P_DELIVERY_TAG], NULL);
	env->correlation_id = put(&at, r.ps[P_CORRELATION_ID], NULL);
	env->reply_to = put(&at, r.ps[P_REPLY_TO], NULL);
	env->exchange = put(&at, r.ps[P_EXCHANGE], "");
	env->routing_key = put(&at, r.ps[P_ROUTING_KEY], "");
	env->priority = r.priority;
	env->redelivered = r.redelivered;
	*base64 = is(r.ps[P_BODY_ENCODING], "base64");
	*body = r.body.p;
	*blen = r.body.n;
	return 1;
}

int cw_proto_decode_task_envelope(const char *buf, size_t len, const struct cw_proto_limits *lim,
				  struct cw_envelope *env, struct cw_error *err)
{
	struct cw_proto_limits def = CW_PROTO_LIMITS_DEFAULT;
	const char *body = NULL;
	size_t blen = 0;
	bool base64 = false;

	memset(env, 0, sizeof(*env));
	int rc = scan(buf, len, lim ? lim : &def, env, &body, &blen, &base64);
	if (rc == 0)
		return cw_proto_decode_envelope(buf, len, lim, env, err);
	if (rc < 0) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	return cw_envelope_take_body(env, body, blen, base64, err);
}
