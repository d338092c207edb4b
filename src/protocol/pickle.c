/*
 * Python pickles of JSON values, for Celery's database result backend
 * (SQLAlchemy PickleType: pickle.dumps(value, pickle.HIGHEST_PROTOCOL)).
 *
 * The writer emits protocol 4 without FRAME or memo, opcode for opcode what
 * Python's Pickler writes otherwise.  The reader is a small unpickling
 * machine for the data-only subset of opcodes: nothing that names a global,
 * calls or builds an object is accepted.  It unpickles into an arena of
 * nodes (containers hold node indices, so memo sharing costs nothing and a
 * self-referencing list is just a cycle of indices).  At STOP one
 * memoized pass measures the expanded value, so that cycles, nesting and
 * "billion laughs" memo sharing are refused before any jansson value is
 * allocated, and the result is then converted to jansson.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

#define MAX_DUMP_DEPTH 512
#define MAX_MEMO (1u << 20)
/* Python's default sys.int_info.default_max_str_digits */
#define MAX_INT_DIGITS 4300
/* ceil(4300 / log10(256)) + a sign byte: longer LONG1/LONG4 data is over 4300 digits */
#define MAX_LONG_BYTES 1787

/* ---- writer --------------------------------------------------------------- */

struct wbuf {
	unsigned char *p;
	size_t len, cap;
	bool oom;
};

static void put(struct wbuf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return;
			}
			cap *= 2;
		}
		unsigned char *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void put1(struct wbuf *b, unsigned char c)
{
	put(b, &c, 1);
}

static void put_le(struct wbuf *b, uint64_t v, size_t n)
{
	unsigned char t[8];

	for (size_t i = 0; i < n; i++)
		t[i] = (unsigned char)(v >> (8 * i));
	put(b, t, n);
}

/*
 * LONG1/LONG4 of the integer whose magnitude is mag[0..m) (little-endian,
 * may have zero high bytes), negated when neg: minimal two's complement,
 * as Python's encode_long.  mag must have room for m + 1 bytes.
 */
static void put_long(struct wbuf *b, unsigned char *mag, size_t m, bool neg)
{
	size_t n = m + 1;

	mag[m] = 0;
	if (neg) {
		unsigned carry = 1;
		for (size_t i = 0; i < n; i++) {
			unsigned v = (unsigned char)~mag[i] + carry;
			mag[i] = (unsigned char)v;
			carry = v >> 8;
		}
		while (n > 1 && mag[n - 1] == 0xff && (mag[n - 2] & 0x80))
			n--;
	} else {
		while (n > 1 && mag[n - 1] == 0 && !(mag[n - 2] & 0x80))
			n--;
		if (n == 1 && mag[0] == 0)
			n = 0;
	}
	if (n < 256) {
		put1(b, 0x8a); /* LONG1 */
		put1(b, (unsigned char)n);
	} else {
		put1(b, 0x8b); /* LONG4 */
		put_le(b, n, 4);
	}
	put(b, mag, n);
}

static void put_int(struct wbuf *b, int64_t v)
{
	if (v >= 0 && v <= 0xff) {
		put1(b, 'K'); /* BININT1 */
		put1(b, (unsigned char)v);
	} else if (v >= 0 && v <= 0xffff) {
		put1(b, 'M'); /* BININT2 */
		put_le(b, (uint64_t)v, 2);
	} else if (v >= INT32_MIN && v <= INT32_MAX) {
		put1(b, 'J'); /* BININT */
		put_le(b, (uint64_t)v, 4);
	} else {
		uint64_t mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
		unsigned char t[9];
		for (size_t i = 0; i < 8; i++)
			t[i] = (unsigned char)(mag >> (8 * i));
		put_long(b, t, 8, v < 0);
	}
}

/*
 * A bigint from its decimal digits (optional '-').  Returns false when the
 * text is not -?[0-9]+ (then it is written as the str it is).
 */
static bool put_bigint(struct wbuf *b, const char *s, size_t n)
{
	bool neg = n && s[0] == '-';
	size_t k = neg;

	if (n <= k)
		return false;
	for (size_t i = k; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	/* base 1e9 chunks into little-endian 32-bit limbs */
	size_t digits = n - k, cap = digits / 9 + 2, used = 0;
	uint32_t *limb = calloc(cap, sizeof(*limb));
	if (!limb) {
		b->oom = true;
		return true;
	}
	size_t first = digits % 9 ? digits % 9 : 9;
	for (size_t i = k; i < n;) {
		size_t width = i == k ? first : 9;
		uint32_t chunk = 0, mul = 1;
		for (size_t j = 0; j < width; j++, i++) {
			chunk = chunk * 10 + (uint32_t)(s[i] - '0');
			mul *= 10;
		}
		uint64_t carry = chunk;
		for (size_t j = 0; j < used; j++) {
			uint64_t t = (uint64_t)limb[j] * mul + carry;
			limb[j] = (uint32_t)t;
			carry = t >> 32;
		}
		if (carry)
			limb[used++] = (uint32_t)carry;
	}
	while (used && !limb[used - 1])
		used--;
	if (used <= 2) {
		uint64_t mag = used ? limb[0] | (used > 1 ? (uint64_t)limb[1] << 32 : 0) : 0;
		if (mag <= (uint64_t)INT64_MAX || (neg && mag == (uint64_t)INT64_MAX + 1)) {
			free(limb);
			put_int(b, neg ? (int64_t)(0 - mag) : (int64_t)mag);
			return true;
		}
	}
	unsigned char *mag = malloc(used * 4 + 1);
	if (!mag) {
		free(limb);
		b->oom = true;
		return true;
	}
	for (size_t i = 0; i < used * 4; i++)
		mag[i] = (unsigned char)(limb[i / 4] >> (8 * (i % 4)));
	free(limb);
	put_long(b, mag, used * 4, neg);
	free(mag);
	return true;
}

static void put_str(struct wbuf *b, const char *s, size_t n)
{
	if (n < 256) {
		put1(b, 0x8c); /* SHORT_BINUNICODE */
		put1(b, (unsigned char)n);
	} else if (n <= 0xffffffffu) {
		put1(b, 'X'); /* BINUNICODE */
		put_le(b, n, 4);
	} else {
		put1(b, 0x8d); /* BINUNICODE8 */
		put_le(b, n, 8);
	}
	put(b, s, n);
}

/* Python's _batch_appends/_batch_setitems: MARK ... APPENDS per 1000, a lone one APPEND. */
#define BATCH 1000

static bool dump(struct wbuf *b, const json_t *v, size_t depth)
{
	switch (json_typeof(v)) {
	case JSON_NULL:
		put1(b, 'N');
		break;
	case JSON_TRUE:
		put1(b, 0x88);
		break;
	case JSON_FALSE:
		put1(b, 0x89);
		break;
	case JSON_INTEGER:
		put_int(b, json_integer_value(v));
		break;
	case JSON_REAL: {
		union {
			double d;
			uint64_t bits;
		} f = {.d = json_real_value(v)};
		unsigned char t[8];
		for (size_t i = 0; i < 8; i++)
			t[i] = (unsigned char)(f.bits >> (56 - 8 * i));
		put1(b, 'G'); /* BINFLOAT */
		put(b, t, 8);
		break;
	}
	case JSON_STRING: {
		if (cw_json_is_bigint(v)) {
			/* the digits as cw_json_dumps writes them; a malformed one stays a str */
			size_t dn;
			char *d = cw_json_dumps(v, &dn);
			if (!d) {
				b->oom = true;
				break;
			}
			bool done = put_bigint(b, d, dn);
			free(d);
			if (done)
				break;
		}
		put_str(b, json_string_value(v), json_string_length(v));
		break;
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		if (++depth > MAX_DUMP_DEPTH)
			return false;
		put1(b, ']');
		for (size_t i = 0; i < n; i += BATCH) {
			size_t end = n - i > BATCH ? i + BATCH : n;
			if (end - i > 1)
				put1(b, '(');
			for (size_t j = i; j < end; j++)
				if (!dump(b, json_array_get(v, j), depth))
					return false;
			put1(b, end - i > 1 ? 'e' : 'a');
		}
		break;
	}
	case JSON_OBJECT: {
		size_t n = json_object_size(v), i = 0, batch = 0;
		const char *key;
		size_t klen;
		json_t *val;
		if (++depth > MAX_DUMP_DEPTH)
			return false;
		put1(b, '}');
		json_object_keylen_foreach((json_t *)v, key, klen, val) {
			if (batch == 0 && n - i > 1)
				put1(b, '(');
			put_str(b, key, klen);
			if (!dump(b, val, depth))
				return false;
			i++;
			batch++;
			if (batch == BATCH || i == n) {
				put1(b, batch > 1 ? 'u' : 's');
				batch = 0;
			}
		}
		break;
	}
	}
	return !b->oom;
}

unsigned char *cw_pickle_dumps(const json_t *v, size_t *len)
{
	struct wbuf b = {0};

	if (!v)
		return NULL;
	put1(&b, 0x80); /* PROTO 4 */
	put1(&b, 4);
	if (!dump(&b, v, 0) || (put1(&b, '.'), b.oom)) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}

unsigned char *cw_pickle_dumps_exception(const char *type, const json_t *args,
					 const char *module, size_t *len)
{
	struct wbuf b = {0};
	size_t i;
	json_t *a;

	if (!type || !module || !json_is_array(args))
		return NULL;
	put1(&b, 0x80); /* PROTO 4 */
	put1(&b, 4);
	put1(&b, '}');  /* EMPTY_DICT, MARK, 3 items, SETITEMS */
	put1(&b, '(');
	put_str(&b, "exc_type", 8);
	put_str(&b, type, strlen(type));
	put_str(&b, "exc_message", 11);
	put1(&b, '(');  /* MARK ... TUPLE: the exception's args */
	json_array_foreach(args, i, a)
		if (!dump(&b, a, 1)) {
			free(b.p);
			return NULL;
		}
	put1(&b, 't');
	put_str(&b, "exc_module", 10);
	put_str(&b, module, strlen(module));
	put1(&b, 'u');
	put1(&b, '.');
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}

/* ---- reader ------------------------------------------------------------------ */

enum ntype { N_NONE, N_TRUE, N_FALSE, N_INT, N_BIG, N_FLOAT, N_STR, N_LIST, N_TUPLE, N_DICT };

enum mstate { M_NEW, M_BUSY, M_DONE };

struct node {
	unsigned char type;
	unsigned char state;    /* enum mstate, for measure() */
	bool owned;             /* str.s is malloc'd (else it points into the pickle) */
	uint32_t height;        /* nesting of the expanded value (0 for scalars) */
	size_t out;             /* expanded size: its compact JSON text, before escapes */
	union {
		int64_t i;
		double d;
		struct {
			const char *s;  /* N_STR: UTF-8; N_BIG: decimal digits */
			size_t len;
		} str;
		struct {
			uint32_t *v;    /* node indices; N_DICT: key, value, key, value... */
			size_t n, cap;
		} kids;
	};
};

/* Stack entries are node indices; MARK positions live on their own stack. */
struct vec {
	uint32_t *v;
	size_t n, cap;
};

struct um {
	const unsigned char *p, *end, *op; /* op: the opcode being run */
	const unsigned char *start;
	struct node *nodes;
	size_t nnodes, cap;
	struct vec stack, marks;
	uint32_t *memo;         /* by index: node + 1, 0 = unset (indices < MAX_MEMO) */
	size_t memo_n, memo_cap;
	const struct cw_proto_limits *lim;
	struct cw_error *err;
};

#define NODE_NONE 0u
#define NODE_TRUE 1u
#define NODE_FALSE 2u

static int fail(struct um *u, int code, const char *what)
{
	cw_error_set(u->err, code, "%s at pickle offset %zu", what, (size_t)(u->op - u->start));
	return code;
}

static int bad_key(struct um *u, const struct node *k)
{
	static const char *const ntype_name[] = {"None", "bool", "bool", "int", "int", "float",
						 "str", "list", "tuple", "dict"};

	cw_error_set(u->err, CW_EDECODE, "pickle dict key is a %s, not a str, at pickle offset %zu",
		     ntype_name[k->type], (size_t)(u->op - u->start));
	return CW_EDECODE;
}

static int oom(struct um *u)
{
	cw_error_set(u->err, CW_ENOMEM, "out of memory");
	return CW_ENOMEM;
}

static int vec_push(struct um *u, struct vec *s, uint32_t x)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint32_t *q = realloc(s->v, cap * sizeof(*q));
		if (!q)
			return oom(u);
		s->v = q;
		s->cap = cap;
	}
	s->v[s->n++] = x;
	return CW_OK;
}

/* New node; its index in *idx.  Pointers into u->nodes are invalidated. */
static int new_node(struct um *u, unsigned char type, uint32_t *idx)
{
	if (u->nnodes == u->cap) {
		if (u->cap >= UINT32_MAX / 2)
			return fail(u, CW_ELIMIT, "too many pickle objects");
		size_t cap = u->cap ? u->cap * 2 : 64;
		struct node *q = realloc(u->nodes, cap * sizeof(*q));
		if (!q)
			return oom(u);
		u->nodes = q;
		u->cap = cap;
	}
	memset(&u->nodes[u->nnodes], 0, sizeof(u->nodes[0]));
	u->nodes[u->nnodes].type = type;
	*idx = (uint32_t)u->nnodes++;
	return CW_OK;
}

static int push_new(struct um *u, unsigned char type, struct node **out)
{
	uint32_t idx;
	int rc = new_node(u, type, &idx);

	if (rc || (rc = vec_push(u, &u->stack, idx)))
		return rc;
	*out = &u->nodes[idx];
	return CW_OK;
}

static int push_int(struct um *u, int64_t v)
{
	struct node *n;
	int rc = push_new(u, N_INT, &n);

	if (!rc)
		n->i = v;
	return rc;
}

/* Lowest stack index usable by the current opcode (above the last MARK). */
static size_t fence(const struct um *u)
{
	return u->marks.n ? u->marks.v[u->marks.n - 1] : 0;
}

static int need(struct um *u, size_t k)
{
	if (u->stack.n - fence(u) < k)
		return fail(u, CW_EDECODE, "unpickling stack underflow");
	return CW_OK;
}

/* Items above the last MARK: [*first, stack.n); drops the mark. */
static int pop_mark(struct um *u, size_t *first)
{
	if (!u->marks.n)
		return fail(u, CW_EDECODE, "could not find MARK");
	*first = u->marks.v[--u->marks.n];
	return CW_OK;
}

static int take(struct um *u, size_t n, const unsigned char **out)
{
	if ((size_t)(u->end - u->p) < n)
		return fail(u, CW_EDECODE, "pickle data was truncated");
	*out = u->p;
	u->p += n;
	return CW_OK;
}

/* The text of a line argument, without its '\n'. */
static int take_line(struct um *u, const unsigned char **s, size_t *n)
{
	const unsigned char *nl = memchr(u->p, '\n', (size_t)(u->end - u->p));

	if (!nl)
		return fail(u, CW_EDECODE, "pickle data was truncated");
	*s = u->p;
	*n = (size_t)(nl - u->p);
	u->p = nl + 1;
	return CW_OK;
}

static uint64_t get_le(const unsigned char *s, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)s[i] << (8 * i);
	return v;
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i - 1 < k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

static int push_str_ref(struct um *u, const unsigned char *s, size_t n)
{
	struct node *nd;
	int rc;

	if (!utf8_ok(s, n))
		return fail(u, CW_EDECODE, "pickle string is not UTF-8 (or holds surrogates)");
	if ((rc = push_new(u, N_STR, &nd)))
		return rc;
	nd->str.s = (const char *)s;
	nd->str.len = n;
	return CW_OK;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* UNICODE: the line is raw-unicode-escape (latin-1 plus \uXXXX and \UXXXXXXXX). */
static int push_raw_unicode(struct um *u, const unsigned char *s, size_t n)
{
	char *o = malloc(2 * n + 1);
	size_t len = 0;
	struct node *nd;
	int rc;

	if (!o)
		return oom(u);
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i++];
		if (c != '\\' || i == n || (s[i] != 'u' && s[i] != 'U')) {
			len += put_utf8(o + len, c);
			if (c == '\\' && i < n)
				len += put_utf8(o + len, s[i++]);
			continue;
		}
		size_t count = s[i++] == 'u' ? 4 : 8;
		uint32_t cp = 0;
		if (n - i < count) {
			free(o);
			return fail(u, CW_EDECODE, "truncated \\uXXXX escape in pickle string");
		}
		for (size_t j = 0; j < count; j++) {
			int h = hexval(s[i++]);
			if (h < 0) {
				free(o);
				return fail(u, CW_EDECODE, "bad \\uXXXX escape in pickle string");
			}
			cp = cp << 4 | (uint32_t)h;
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
			free(o);
			return fail(u, CW_EDECODE, "pickle string holds a surrogate or is too big");
		}
		len += put_utf8(o + len, cp);
	}
	if ((rc = push_new(u, N_STR, &nd))) {
		free(o);
		return rc;
	}
	nd->str.s = o;
	nd->str.len = len;
	nd->owned = true;
	return CW_OK;
}

/* A decimal integer text (INT, LONG: [+-]digits): an int node or a bigint node. */
static int push_decimal(struct um *u, const unsigned char *s, size_t n)
{
	size_t k = n && (s[0] == '-' || s[0] == '+');
	bool neg = n && s[0] == '-';
	struct node *nd;
	int rc;

	if (n <= k)
		return fail(u, CW_EDECODE, "bad integer in pickle");
	for (size_t i = k; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return fail(u, CW_EDECODE, "bad integer in pickle");
	/* Python reads "010" as octal (INT) or not at all (LONG): only zeros may lead */
	if (s[k] == '0') {
		for (size_t i = k; i < n; i++)
			if (s[i] != '0')
				return fail(u, CW_EDECODE, "pickle integer with leading zeros");
		k = n - 1;
	}
	if (n - k > MAX_INT_DIGITS)
		return fail(u, CW_ELIMIT, "pickle integer has over 4300 digits");
	/* int64? */
	if (n - k <= 19) {
		uint64_t m = 0;
		for (size_t i = k; i < n; i++)
			m = m * 10 + (uint64_t)(s[i] - '0');
		if (m <= (uint64_t)INT64_MAX)
			return push_int(u, neg ? -(int64_t)m : (int64_t)m);
		if (neg && m == (uint64_t)INT64_MAX + 1)
			return push_int(u, INT64_MIN);
	}
	char *d = malloc(n - k + 2);
	if (!d)
		return oom(u);
	size_t len = 0;
	if (neg)
		d[len++] = '-';
	memcpy(d + len, s + k, n - k);
	len += n - k;
	d[len] = '\0';
	if ((rc = push_new(u, N_BIG, &nd))) {
		free(d);
		return rc;
	}
	nd->str.s = d;
	nd->str.len = len;
	nd->owned = true;
	return CW_OK;
}

/* LONG1/LONG4: little-endian two's complement. */
static int push_long_bytes(struct um *u, const unsigned char *s, size_t n)
{
	bool neg = n && (s[n - 1] & 0x80);
	struct node *nd;
	int rc;

	if (n <= 8) {
		uint64_t v = get_le(s, n);
		if (neg && n < 8)
			v |= ~(uint64_t)0 << (8 * n);
		return push_int(u, (int64_t)v);
	}
	if (n > MAX_LONG_BYTES)
		return fail(u, CW_ELIMIT, "pickle integer has over 4300 digits");
	/* magnitude as little-endian 32-bit limbs */
	size_t nl = (n + 3) / 4;
	uint32_t *limb = calloc(nl, sizeof(*limb));
	char *d = malloc(nl * 10 + 2);
	if (!limb || !d) {
		free(limb);
		free(d);
		return oom(u);
	}
	unsigned carry = 1;
	for (size_t i = 0; i < n; i++) {
		unsigned b = s[i];
		if (neg) {
			b = (unsigned char)~b + carry;
			carry = b >> 8;
			b &= 0xff;
		}
		limb[i / 4] |= (uint32_t)b << (8 * (i % 4));
	}
	/* base 1e9 digits, least significant chunk first, written backwards */
	size_t len = nl * 10 + 1, used = nl;
	d[len] = '\0';
	while (used && !limb[used - 1])
		used--;
	do {
		uint64_t rem = 0;
		for (size_t j = used; j-- > 0;) {
			uint64_t t = rem << 32 | limb[j];
			limb[j] = (uint32_t)(t / 1000000000u);
			rem = t % 1000000000u;
		}
		while (used && !limb[used - 1])
			used--;
		for (int j = 0; j < 9; j++) {
			d[--len] = (char)('0' + rem % 10);
			rem /= 10;
			if (!used && !rem)
				break;
		}
	} while (used);
	if (neg)
		d[--len] = '-';
	free(limb);
	size_t dl = nl * 10 + 1 - len;
	if (dl - neg > MAX_INT_DIGITS) {
		free(d);
		return fail(u, CW_ELIMIT, "pickle integer has over 4300 digits");
	}
	memmove(d, d + len, dl + 1);
	if ((rc = push_new(u, N_BIG, &nd))) {
		free(d);
		return rc;
	}
	nd->str.s = d;
	nd->str.len = dl;
	nd->owned = true;
	return CW_OK;
}

static int push_float(struct um *u, double d)
{
	struct node *nd;
	int rc;

	if (!isfinite(d))
		return fail(u, CW_EDECODE, "pickle float is not finite (JSON cannot hold it)");
	if ((rc = push_new(u, N_FLOAT, &nd)))
		return rc;
	nd->d = d;
	return CW_OK;
}

/* FLOAT: repr() text; only plain decimal syntax is taken. */
static int push_float_text(struct um *u, const unsigned char *s, size_t n)
{
	char t[64], *end;
	size_t i = 0, digits = 0;

	if (n && (s[0] == '-' || s[0] == '+'))
		i++;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		digits++;
	if (i < n && s[i] == '.')
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
	if (digits && i < n && (s[i] == 'e' || s[i] == 'E')) {
		size_t e = 0;
		i++;
		if (i < n && (s[i] == '-' || s[i] == '+'))
			i++;
		for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			e++;
		if (!e)
			digits = 0;
	}
	size_t sg = n && (s[0] == '-' || s[0] == '+');
	if (n - sg == 3 && (!memcmp(s + sg, "nan", 3) || !memcmp(s + sg, "inf", 3)))
		return fail(u, CW_EDECODE, "pickle float is not finite (JSON cannot hold it)");
	if (!digits || i != n || n >= sizeof(t))
		return fail(u, CW_EDECODE, "bad float in pickle");
	memcpy(t, s, n);
	t[n] = '\0';
	double d = strtod(t, &end);
	if (end != t + n)
		return fail(u, CW_EDECODE, "bad float in pickle");
	return push_float(u, d);
}

/*
 * Python's memo is a dict, but every Pickler numbers its entries 0, 1, 2...
 * so a dense table serves; an index at or over MAX_MEMO is over the limit.
 */
static int memo_put(struct um *u, uint64_t key)
{
	int rc = need(u, 1);

	if (rc)
		return rc;
	if (key >= MAX_MEMO)
		return fail(u, CW_ELIMIT, "pickle memo over 1048576 entries");
	if (key >= u->memo_cap) {
		size_t cap = u->memo_cap ? u->memo_cap : 64;
		while (cap <= key)
			cap *= 2;
		uint32_t *m = realloc(u->memo, cap * sizeof(*m));
		if (!m)
			return oom(u);
		memset(m + u->memo_cap, 0, (cap - u->memo_cap) * sizeof(*m));
		u->memo = m;
		u->memo_cap = cap;
	}
	if (!u->memo[key])
		u->memo_n++;
	u->memo[key] = u->stack.v[u->stack.n - 1] + 1;
	return CW_OK;
}

static int memo_get(struct um *u, uint64_t key)
{
	if (key >= u->memo_cap || !u->memo[key])
		return fail(u, CW_EDECODE, "pickle memo value not found");
	return vec_push(u, &u->stack, u->memo[key] - 1);
}

/* PUT/GET decimal argument. */
static int line_index(struct um *u, uint64_t *key)
{
	const unsigned char *s;
	size_t n;
	int rc = take_line(u, &s, &n);

	if (rc)
		return rc;
	if (!n || n > 19)
		return fail(u, CW_EDECODE, "bad memo index in pickle");
	*key = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return fail(u, CW_EDECODE, "bad memo index in pickle");
		*key = *key * 10 + (uint64_t)(s[i] - '0');
	}
	return CW_OK;
}

static int kids_add(struct um *u, struct node *c, const uint32_t *v, size_t n)
{
	if (n == 0)
		return CW_OK;
	if (n > c->kids.cap - c->kids.n) {
		size_t cap = c->kids.cap ? c->kids.cap : 8;
		while (cap - c->kids.n < n)
			cap *= 2;
		uint32_t *q = realloc(c->kids.v, cap * sizeof(*q));
		if (!q)
			return oom(u);
		c->kids.v = q;
		c->kids.cap = cap;
	}
	memcpy(c->kids.v + c->kids.n, v, n * sizeof(*v));
	c->kids.n += n;
	return CW_OK;
}

/* New list/tuple/dict from stack[first..] (replacing them). */
static int collect(struct um *u, unsigned char type, size_t first)
{
	size_t n = u->stack.n - first;
	uint32_t idx;
	int rc;

	if (type == N_DICT && n % 2)
		return fail(u, CW_EDECODE, "odd number of items for DICT");
	if (type == N_DICT) {
		for (size_t i = first; i < u->stack.n; i += 2) {
			const struct node *k = &u->nodes[u->stack.v[i]];
			if (k->type != N_STR)
				return bad_key(u, k);
		}
	}
	if ((rc = new_node(u, type, &idx)))
		return rc;
	if (n && (rc = kids_add(u, &u->nodes[idx], u->stack.v + first, n)))
		return rc;
	u->stack.n = first;
	return vec_push(u, &u->stack, idx);
}

/* APPEND(S)/SETITEM(S): stack[first..] into the container at stack[first - 1]. */
static int extend(struct um *u, unsigned char type, size_t first)
{
	size_t n = u->stack.n - first;

	if (first == 0 || first - 1 < fence(u))
		return fail(u, CW_EDECODE, "unpickling stack underflow");
	struct node *c = &u->nodes[u->stack.v[first - 1]];
	if (c->type != type)
		return fail(u, CW_EDECODE, type == N_LIST ? "pickle APPEND to a non-list" :
			    "pickle SETITEM on a non-dict");
	if (type == N_DICT) {
		if (n % 2)
			return fail(u, CW_EDECODE, "odd number of items for SETITEMS");
		for (size_t i = first; i < u->stack.n; i += 2)
			if (u->nodes[u->stack.v[i]].type != N_STR)
				return bad_key(u, &u->nodes[u->stack.v[i]]);
	}
	int rc = kids_add(u, c, u->stack.v + first, n);
	u->stack.n = first;
	return rc;
}

static const char *opname(unsigned char op)
{
	switch (op) {
	case 'P': return "PERSID";
	case 'Q': return "BINPERSID";
	case 'R': return "REDUCE";
	case 'S': return "STRING";
	case 'T': return "BINSTRING";
	case 'U': return "SHORT_BINSTRING";
	case 'b': return "BUILD";
	case 'c': return "GLOBAL";
	case 'i': return "INST";
	case 'o': return "OBJ";
	case 0x81: return "NEWOBJ";
	case 0x82: return "EXT1";
	case 0x83: return "EXT2";
	case 0x84: return "EXT4";
	case 0x8e: return "BINBYTES8";
	case 0x8f: return "EMPTY_SET";
	case 0x90: return "ADDITEMS";
	case 0x91: return "FROZENSET";
	case 0x92: return "NEWOBJ_EX";
	case 0x93: return "STACK_GLOBAL";
	case 0x96: return "BYTEARRAY8";
	case 0x97: return "NEXT_BUFFER";
	case 0x98: return "READONLY_BUFFER";
	}
	return "unknown";
}

static int step(struct um *u, bool *stop)
{
	const unsigned char *a;
	unsigned char op = *u->p++;
	size_t first, n;
	uint64_t key;
	int rc;

	switch (op) {
	case 0x80: /* PROTO */
		if ((rc = take(u, 1, &a)))
			return rc;
		if (a[0] > 5)
			return fail(u, CW_EDECODE, "unsupported pickle protocol");
		return CW_OK;
	case 0x95: /* FRAME: the frame must be there; its contents are read as usual */
		if ((rc = take(u, 8, &a)))
			return rc;
		if (get_le(a, 8) > (uint64_t)(u->end - u->p))
			return fail(u, CW_EDECODE, "pickle data was truncated");
		return CW_OK;
	case '.': /* STOP */
		if ((rc = need(u, 1)))
			return rc;
		*stop = true;
		return CW_OK;
	case 'N':
		return vec_push(u, &u->stack, NODE_NONE);
	case 0x88: /* NEWTRUE */
		return vec_push(u, &u->stack, NODE_TRUE);
	case 0x89: /* NEWFALSE */
		return vec_push(u, &u->stack, NODE_FALSE);
	case 'I': /* INT */
		if ((rc = take_line(u, &a, &n)))
			return rc;
		/* like _pickle.c: two characters that read as 0 or 1 are a bool ("00", "01") */
		if (n == 2 && (a[0] == '0' || a[0] == '+' || a[0] == '-') &&
		    (a[1] == '0' || (a[1] == '1' && a[0] != '-')))
			return vec_push(u, &u->stack, a[1] == '1' ? NODE_TRUE : NODE_FALSE);
		return push_decimal(u, a, n);
	case 'J': /* BININT */
		if ((rc = take(u, 4, &a)))
			return rc;
		return push_int(u, (int32_t)(uint32_t)get_le(a, 4));
	case 'K': /* BININT1 */
		if ((rc = take(u, 1, &a)))
			return rc;
		return push_int(u, a[0]);
	case 'M': /* BININT2 */
		if ((rc = take(u, 2, &a)))
			return rc;
		return push_int(u, (int64_t)get_le(a, 2));
	case 'L': /* LONG */
		if ((rc = take_line(u, &a, &n)))
			return rc;
		if (n && a[n - 1] == 'L')
			n--;
		return push_decimal(u, a, n);
	case 0x8a: /* LONG1 */
		if ((rc = take(u, 1, &a)))
			return rc;
		n = a[0];
		if ((rc = take(u, n, &a)))
			return rc;
		return push_long_bytes(u, a, n);
	case 0x8b: /* LONG4 */
		if ((rc = take(u, 4, &a)))
			return rc;
		if (a[3] & 0x80)
			return fail(u, CW_EDECODE, "LONG pickle has negative byte count");
		n = (size_t)get_le(a, 4);
		if ((rc = take(u, n, &a)))
			return rc;
		return push_long_bytes(u, a, n);
	case 'F': /* FLOAT */
		if ((rc = take_line(u, &a, &n)))
			return rc;
		return push_float_text(u, a, n);
	case 'G': { /* BINFLOAT */
		union {
			double d;
			uint64_t bits;
		} f = {.bits = 0};
		if ((rc = take(u, 8, &a)))
			return rc;
		for (size_t i = 0; i < 8; i++)
			f.bits = f.bits << 8 | a[i];
		return push_float(u, f.d);
	}
	case 'V': /* UNICODE */
		if ((rc = take_line(u, &a, &n)))
			return rc;
		return push_raw_unicode(u, a, n);
	case 'X': /* BINUNICODE */
	case 'B': /* BINBYTES */
		if ((rc = take(u, 4, &a)))
			return rc;
		n = (size_t)get_le(a, 4);
		goto counted;
	case 0x8c: /* SHORT_BINUNICODE */
	case 'C': /* SHORT_BINBYTES */
		if ((rc = take(u, 1, &a)))
			return rc;
		n = a[0];
		goto counted;
	case 0x8d: /* BINUNICODE8 */
		if ((rc = take(u, 8, &a)))
			return rc;
		if (get_le(a, 8) > (uint64_t)(u->end - u->p))
			return fail(u, CW_EDECODE, "pickle data was truncated");
		n = (size_t)get_le(a, 8);
counted:
		if ((rc = take(u, n, &a)))
			return rc;
		return push_str_ref(u, a, n);
	case ']': /* EMPTY_LIST */
		return collect(u, N_LIST, u->stack.n);
	case ')': /* EMPTY_TUPLE */
		return collect(u, N_TUPLE, u->stack.n);
	case '}': /* EMPTY_DICT */
		return collect(u, N_DICT, u->stack.n);
	case 'l': /* LIST */
		if ((rc = pop_mark(u, &first)))
			return rc;
		return collect(u, N_LIST, first);
	case 't': /* TUPLE */
		if ((rc = pop_mark(u, &first)))
			return rc;
		return collect(u, N_TUPLE, first);
	case 'd': /* DICT */
		if ((rc = pop_mark(u, &first)))
			return rc;
		return collect(u, N_DICT, first);
	case 0x85: /* TUPLE1 */
	case 0x86: /* TUPLE2 */
	case 0x87: /* TUPLE3 */
		n = (size_t)(op - 0x84);
		if ((rc = need(u, n)))
			return rc;
		return collect(u, N_TUPLE, u->stack.n - n);
	case 'a': /* APPEND */
		if ((rc = need(u, 2)))
			return rc;
		return extend(u, N_LIST, u->stack.n - 1);
	case 's': /* SETITEM */
		if ((rc = need(u, 3)))
			return rc;
		return extend(u, N_DICT, u->stack.n - 2);
	case 'e': /* APPENDS */
		if ((rc = pop_mark(u, &first)))
			return rc;
		return extend(u, N_LIST, first);
	case 'u': /* SETITEMS */
		if ((rc = pop_mark(u, &first)))
			return rc;
		return extend(u, N_DICT, first);
	case '(': /* MARK */
		return vec_push(u, &u->marks, (uint32_t)u->stack.n);
	case '0': /* POP: the top item, or the MARK right on top */
		if (u->marks.n && u->marks.v[u->marks.n - 1] == u->stack.n) {
			u->marks.n--;
			return CW_OK;
		}
		if ((rc = need(u, 1)))
			return rc;
		u->stack.n--;
		return CW_OK;
	case '1': /* POP_MARK */
		if ((rc = pop_mark(u, &first)))
			return rc;
		u->stack.n = first;
		return CW_OK;
	case '2': /* DUP */
		if ((rc = need(u, 1)))
			return rc;
		return vec_push(u, &u->stack, u->stack.v[u->stack.n - 1]);
	case 'p': /* PUT */
		if ((rc = line_index(u, &key)))
			return rc;
		return memo_put(u, key);
	case 'q': /* BINPUT */
		if ((rc = take(u, 1, &a)))
			return rc;
		return memo_put(u, a[0]);
	case 'r': /* LONG_BINPUT */
		if ((rc = take(u, 4, &a)))
			return rc;
		return memo_put(u, get_le(a, 4));
	case 0x94: /* MEMOIZE */
		return memo_put(u, u->memo_n);
	case 'g': /* GET */
		if ((rc = line_index(u, &key)))
			return rc;
		return memo_get(u, key);
	case 'h': /* BINGET */
		if ((rc = take(u, 1, &a)))
			return rc;
		return memo_get(u, a[0]);
	case 'j': /* LONG_BINGET */
		if ((rc = take(u, 4, &a)))
			return rc;
		return memo_get(u, get_le(a, 4));
	}
	char shown[8];

	if (op >= 0x20 && op < 0x7f)
		snprintf(shown, sizeof(shown), "'%c'", op);
	else
		snprintf(shown, sizeof(shown), "0x%02x", op);
	cw_error_set(u->err, CW_EDECODE, "pickle opcode %s (%s) is not allowed at offset %zu",
		     shown, opname(op), (size_t)(u->op - u->start));
	return CW_EDECODE;
}

static size_t sat_add(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static int too_deep(struct um *u)
{
	cw_error_set(u->err, CW_ELIMIT, "pickle nested deeper than %zu levels", u->lim->max_depth);
	return CW_ELIMIT;
}

/* Length of compact JSON text for a scalar (strings before escaping, floats at least "0.0"). */
static size_t scalar_out(const struct node *nd)
{
	static const unsigned char fixed[] = {[N_NONE] = 4, [N_TRUE] = 4, [N_FALSE] = 5,
					      [N_FLOAT] = 3};
	uint64_t m = nd->i < 0 ? 0 - (uint64_t)nd->i : (uint64_t)nd->i;
	size_t n = 1 + (nd->i < 0);

	switch (nd->type) {
	case N_INT:
		for (; m >= 10; m /= 10)
			n++;
		return n;
	case N_BIG:
		return nd->str.len;
	case N_STR:
		return nd->str.len + 2;
	}
	return fixed[nd->type];
}

/*
 * The expanded size (a lower bound of its compact JSON text) and nesting
 * height of node idx, memoized per node: linear in the arena however much
 * memo sharing multiplies the value.  A node met again while being measured
 * is a cycle: infinitely deep.  Recursion stops at lim->max_depth.
 */
static int measure(struct um *u, uint32_t idx, size_t depth)
{
	struct node *nd = &u->nodes[idx];
	size_t out = 2, height = 0;

	if (nd->state == M_DONE)
		return CW_OK;
	if (nd->type < N_LIST) {
		nd->out = scalar_out(nd);
		nd->state = M_DONE;
		return CW_OK;
	}
	if (nd->state == M_BUSY || depth + 1 > u->lim->max_depth)
		return too_deep(u);
	nd->state = M_BUSY;
	bool dict = nd->type == N_DICT;
	for (size_t i = 0; i < nd->kids.n; i++) {
		const struct node *k = &u->nodes[nd->kids.v[i]];
		if (dict && i % 2 == 0) {
			/* ,"key": */
			out = sat_add(out, k->str.len + 3 + (i > 0));
			continue;
		}
		int rc = measure(u, nd->kids.v[i], depth + 1);
		if (rc)
			return rc;
		out = sat_add(sat_add(out, k->out), !dict && i > 0);
		if (k->height > height)
			height = k->height;
	}
	nd->out = out;
	nd->height = height + 1;
	nd->state = M_DONE;
	return CW_OK;
}

/* jansson value of node idx; measure() has checked the limits. */
static json_t *convert(struct um *u, uint32_t idx)
{
	const struct node *nd = &u->nodes[idx];
	json_t *v = NULL;

	switch (nd->type) {
	case N_NONE:
		return json_null();
	case N_TRUE:
		return json_true();
	case N_FALSE:
		return json_false();
	case N_INT:
		v = json_integer(nd->i);
		break;
	case N_FLOAT:
		v = json_real(nd->d);
		break;
	case N_BIG:
		v = cw_json_bigint(nd->str.s);
		break;
	case N_STR:
		v = json_stringn_nocheck(nd->str.s, nd->str.len);
		break;
	case N_LIST:
	case N_TUPLE:
	case N_DICT: {
		bool dict = nd->type == N_DICT;
		v = dict ? json_object() : json_array();
		for (size_t i = 0; v && i < nd->kids.n; i += 1 + dict) {
			const struct node *k = dict ? &u->nodes[nd->kids.v[i]] : NULL;
			json_t *c = convert(u, nd->kids.v[i + dict]);
			if (!c || (dict ? json_object_setn_new_nocheck(v, k->str.s, k->str.len, c) :
				   json_array_append_new(v, c))) {
				json_decref(v);
				return NULL; /* c is consumed by the *_new calls, even on failure */
			}
		}
		break;
	}
	}
	if (!v)
		oom(u);
	return v;
}

json_t *cw_pickle_loads(const unsigned char *p, size_t len, const struct cw_proto_limits *lim,
			struct cw_error *err)
{
	const struct cw_proto_limits def = CW_PROTO_LIMITS_DEFAULT;
	struct um u = {.p = p, .end = p + len, .op = p, .start = p, .lim = lim ? lim : &def,
		       .err = err};
	json_t *v = NULL;
	bool stop = false;
	int rc = CW_OK;

	if (len > u.lim->max_message) {
		cw_error_set(err, CW_ELIMIT, "pickle of %zu bytes is over the %zu byte limit", len,
			     u.lim->max_message);
		return NULL;
	}
	for (unsigned char t = N_NONE; t <= N_FALSE && !rc; t++) {
		uint32_t idx;
		rc = new_node(&u, t, &idx);
	}
	while (!rc && !stop) {
		if (u.p == u.end) {
			rc = fail(&u, CW_EDECODE, "pickle data was truncated");
			break;
		}
		u.op = u.p;
		rc = step(&u, &stop);
	}
	if (!rc) {
		uint32_t top = u.stack.v[u.stack.n - 1];
		rc = measure(&u, top, 0);
		if (!rc && u.nodes[top].height > u.lim->max_depth)
			rc = too_deep(&u);
		if (!rc && u.nodes[top].out > u.lim->max_message) {
			cw_error_set(err, CW_ELIMIT, "unpickled value is over the %zu byte limit",
				     u.lim->max_message);
			rc = CW_ELIMIT;
		}
		if (!rc)
			v = convert(&u, top);
	}
	for (size_t i = 0; i < u.nnodes; i++) {
		struct node *nd = &u.nodes[i];
		if (nd->type >= N_LIST)
			free(nd->kids.v);
		else if (nd->owned)
			free((char *)nd->str.s);
	}
	free(u.nodes);
	free(u.stack.v);
	free(u.marks.v);
	free(u.memo);
	return v;
}
