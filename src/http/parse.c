/* HTTP/1.x request heads: strict, bounded, allocation-free. */
#include <string.h>

#include "http/http.h"

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The line starting at pos ends at the returned index ('\n'), or len if unterminated. */
static size_t line_end(const char *buf, size_t len, size_t pos)
{
	const char *nl = memchr(buf + pos, '\n', len - pos);
	return nl ? (size_t)(nl - buf) : len;
}

/* A request line "METHOD SP TARGET SP HTTP/1.x" in buf[0..n) (no line ending). */
static int request_line(const char *buf, size_t n, struct cw_http_req *r)
{
	size_t i = 0, m = 0;
	while (i < n && buf[i] >= 'A' && buf[i] <= 'Z') {
		if (m + 1 >= sizeof(r->method))
			return 400;
		r->method[m++] = buf[i++];
	}
	r->method[m] = '\0';
	if (m == 0 || i >= n || buf[i] != ' ')
		return 400;
	size_t t0 = ++i;
	while (i < n && (unsigned char)buf[i] > 0x20 && (unsigned char)buf[i] < 0x7f)
		i++;
	size_t tlen = i - t0;
	if (tlen == 0 || i >= n || buf[i] != ' ' || buf[t0] != '/')
		return 400;
	const char *v = buf + i + 1;
	size_t vlen = n - i - 1;
	if (vlen != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
	    v[7] < '0' || v[7] > '9')
		return 400;
	if (v[5] != '1')
		return 505;
	size_t plen = strcspn(buf + t0, "?# ");
	if (plen > tlen)
		plen = tlen;
	if (plen >= sizeof(r->path))
		return 414;
	memcpy(r->path, buf + t0, plen);
	r->path[plen] = '\0';
	return 200;
}

/* Could buf[0..n) (no newline yet) still begin a valid request line? */
static bool plausible_prefix(const char *buf, size_t n)
{
	size_t i = 0;
	while (i < n && buf[i] >= 'A' && buf[i] <= 'Z')
		i++;
	if (i == n)
		return i < 16;
	if (i == 0 || buf[i] != ' ' || i >= 16)
		return false;
	if (++i < n && buf[i] != '/')
		return false;
	for (; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\r')
			return false;
	return true;
}

int cw_http_parse(const char *buf, size_t len, size_t max, struct cw_http_req *r)
{
	memset(r, 0, sizeof(*r));
	if (len > max)
		len = max;
	size_t e = line_end(buf, len, 0);
	if (e == len) {
		if (!plausible_prefix(buf, len))
			return 400;
		return len >= max ? 414 : 0;
	}
	size_t n = e;
	if (n && buf[n - 1] == '\r')
		n--;
	int rc = request_line(buf, n, r);
	if (rc != 200)
		return rc;
	size_t pos = e + 1;
	for (;;) {
		e = line_end(buf, len, pos);
		size_t ln = e - pos;
		const char *l = buf + pos;
		if (memchr(l, '\0', ln))
			return 400;
		if (e == len)
			return len >= max ? 431 : 0;
		if (ln && l[ln - 1] == '\r')
			ln--;
		if (ln == 0) {
			r->head_len = e + 1;
			return 200;
		}
		size_t k = 0;
		while (k < ln && is_tchar((unsigned char)l[k]))
			k++;
		if (k == 0 || k >= ln || l[k] != ':')
			return 400;
		for (size_t j = k + 1; j < ln; j++)
			if (((unsigned char)l[j] < 0x20 && l[j] != '\t') || l[j] == 0x7f)
				return 400;
		pos = e + 1;
	}
}
