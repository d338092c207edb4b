/*
 * JSON with integers of any size.
 *
 * jansson keeps integers in int64 (json_int_t); Python producers send
 * integers of any size.  Before parsing, a small JSON-aware scanner rewrites
 * every integer literal outside int64 as a string value that starts with
 * BIG_TAG; cw_json_dumps writes those back as bare digits.  The same scan
 * enforces the nesting limit before jansson sees the text.
 */
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

/* "\u0001cwbig:<fixed tag>:" — a control character no producer sends unescaped */
#define BIG_TAG "\x01" "cwbig:5f0c2a9e7d413b86:"
#define BIG_TAG_LEN (sizeof(BIG_TAG) - 1)
#define BIG_TAG_DUMPED "\"\\u0001cwbig:5f0c2a9e7d413b86:"
#define BIG_TAG_DUMPED_LEN (sizeof(BIG_TAG_DUMPED) - 1)

struct out {
	char *p;
	size_t len, cap;
};

static int out_put(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 256;
		while (cap < o->len + n + 1)
			cap *= 2;
		char *q = realloc(o->p, cap);
		if (!q)
			return -1;
		o->p = q;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
	return 0;
}

/* Does the decimal integer s[0..n) (optional '-') fit in int64? */
static bool fits_int64(const char *s, size_t n)
{
	static const char max[] = "9223372036854775807";
	static const char min[] = "9223372036854775808";
	bool neg = n && s[0] == '-';
	if (neg) {
		s++;
		n--;
	}
	if (n < 19)
		return true;
	if (n > 19)
		return false;
	return memcmp(s, neg ? min : max, 19) <= 0;
}

/*
 * Scan text: check depth, find big integer literals.  When `o` is non-NULL
 * the rewritten text is produced.  Returns the number of big integers,
 * -1 on a depth violation, -2 on ENOMEM.  Malformed JSON is left for
 * jansson to report.
 */
static long scan(const char *s, size_t len, size_t max_depth, struct out *o)
{
	size_t depth = 0, i = 0, copied = 0;
	long bigs = 0;

	while (i < len) {
		char c = s[i];
		if (c == '"') {
			i++;
			while (i < len && s[i] != '"') {
				if (s[i] == '\\' && i + 1 < len)
					i++;
				i++;
			}
			i++;
			continue;
		}
		if (c == '[' || c == '{') {
			if (++depth > max_depth)
				return -1;
		} else if (c == ']' || c == '}') {
			if (depth)
				depth--;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			size_t st = i;
			bool integral = true;
			i++;
			while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' ||
					   s[i] == 'E' || s[i] == '+' || s[i] == '-')) {
				if (s[i] == '.' || s[i] == 'e' || s[i] == 'E')
					integral = false;
				i++;
			}
			size_t n = i - st;
			bool digits_only = n > (s[st] == '-' ? 1u : 0u);
			for (size_t k = (s[st] == '-'); k < n; k++)
				digits_only &= s[st + k] >= '0' && s[st + k] <= '9';
			if (integral && digits_only && !fits_int64(s + st, n)) {
				bigs++;
				if (o && (out_put(o, s + copied, st - copied) || out_put(o, "\"", 1) ||
					  out_put(o, "\\u0001cwbig:5f0c2a9e7d413b86:", BIG_TAG_DUMPED_LEN - 1) ||
					  out_put(o, s + st, n) || out_put(o, "\"", 1)))
					return -2;
				copied = i;
			}
			continue;
		}
		i++;
	}
	if (o && bigs && out_put(o, s + copied, len - copied))
		return -2;
	return bigs;
}

json_t *cw_json_loads(const char *buf, size_t len, const struct cw_proto_limits *lim,
		      struct cw_error *err)
{
	struct cw_proto_limits def = CW_PROTO_LIMITS_DEFAULT;
	struct out o = {0};
	json_error_t je;
	json_t *v;

	if (!lim)
		lim = &def;
	if (len > lim->max_message) {
		cw_error_set(err, CW_ELIMIT, "JSON text of %zu bytes is over the %zu byte limit", len,
			     lim->max_message);
		return NULL;
	}
	long bigs = scan(buf, len, lim->max_depth, NULL);
	if (bigs == -1) {
		cw_error_set(err, CW_ELIMIT, "JSON nested deeper than %zu levels", lim->max_depth);
		return NULL;
	}
	if (bigs > 0) {
		if (scan(buf, len, lim->max_depth, &o) < 0) {
			free(o.p);
			cw_error_set(err, CW_ENOMEM, "out of memory");
			return NULL;
		}
		buf = o.p;
		len = o.len;
	}
	v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	free(o.p);
	if (!v)
		cw_error_set(err, CW_EDECODE, "invalid JSON at offset %d: %s", je.position, je.text);
	return v;
}

bool cw_json_is_bigint(const json_t *v)
{
	return json_is_string(v) && json_string_length(v) > BIG_TAG_LEN &&
	       memcmp(json_string_value(v), BIG_TAG, BIG_TAG_LEN) == 0;
}

json_t *cw_json_bigint(const char *digits)
{
	size_t n = strlen(digits), k = digits[0] == '-';
	if (n <= k)
		return NULL;
	for (size_t i = k; i < n; i++)
		if (digits[i] < '0' || digits[i] > '9')
			return NULL;
	if (fits_int64(digits, n))
		return json_integer(strtoll(digits, NULL, 10));
	char *s = malloc(BIG_TAG_LEN + n + 1);
	if (!s)
		return NULL;
	memcpy(s, BIG_TAG, BIG_TAG_LEN);
	memcpy(s + BIG_TAG_LEN, digits, n + 1);
	json_t *v = json_string(s);
	free(s);
	return v;
}

char *cw_json_dumps(const json_t *v, size_t *lenp)
{
	char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!txt)
		return NULL;
	size_t len = strlen(txt);
	if (!strstr(txt, BIG_TAG_DUMPED)) {
		if (lenp)
			*lenp = len;
		return txt;
	}
	/* replace each "\u0001cwbig:TAG:<digits>" with <digits> (shrinks, so in place) */
	char *r = txt, *w = txt;
	while (*r) {
		if (!strncmp(r, BIG_TAG_DUMPED, BIG_TAG_DUMPED_LEN)) {
			const char *d = r + BIG_TAG_DUMPED_LEN;
			const char *e = d;
			while (*e == '-' || (*e >= '0' && *e <= '9'))
				e++;
			if (*e == '"' && e > d) {
				memmove(w, d, (size_t)(e - d));
				w += e - d;
				r = (char *)e + 1;
				continue;
			}
		}
		*w++ = *r++;
	}
	*w = '\0';
	if (lenp)
		*lenp = (size_t)(w - txt);
	return txt;
}
