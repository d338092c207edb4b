/*
 * Fuzz target: arbitrary bytes as a serialised canvas outbox (what a pool
 * child hands the master) go through cw_outbox_next until it says false.
 * Every message it returns must lie inside the bytes and move the offset
 * forward; re-adding it to a fresh outbox must read back the same fields.
 * The input is copied into an exact-size block so ASan sees any overread.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tasks/canvas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const char *buf, size_t len, const char *p, size_t n)
{
	return p >= buf && (size_t)(p - buf) <= len && n <= len - (size_t)(p - buf);
}

/* A field as a C string, or NULL when it holds a NUL (cw_outbox_add takes C strings). */
static char *cstr(const char *p, size_t n)
{
	if (memchr(p, '\0', n))
		return NULL;
	char *s = malloc(n + 1);
	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void roundtrip(const struct cw_outmsg *m)
{
	char *q = cstr(m->queue, m->queue_len), *t = cstr(m->tag, m->tag_len);
	struct cw_outbox o = {0};
	struct cw_outmsg back;
	size_t off = 0;

	if (q && t && cw_outbox_add(&o, q, t, m->priority, m->env, m->env_len) == CW_OK) {
		if (!cw_outbox_next(o.buf, o.len, &off, &back) || off != o.len ||
		    back.priority != m->priority || back.queue_len != m->queue_len ||
		    back.tag_len != m->tag_len || back.env_len != m->env_len ||
		    memcmp(back.queue, q, back.queue_len) != 0 ||
		    memcmp(back.tag, t, back.tag_len) != 0 ||
		    (m->env_len && memcmp(back.env, m->env, m->env_len) != 0))
			abort();
		if (cw_outbox_next(o.buf, o.len, &off, &back))
			abort();
	}
	cw_outbox_free(&o);
	free(q);
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	struct cw_outmsg m;
	size_t off = 0, prev = 0;

	if (!buf)
		return 0;
	if (size)
		memcpy(buf, data, size);
	while (cw_outbox_next(buf, size, &off, &m)) {
		/* four length fields at least, all inside */
		if (off < prev + 16 || off > size || !inside(buf, size, m.queue, m.queue_len) ||
		    !inside(buf, size, m.tag, m.tag_len) || !inside(buf, size, m.env, m.env_len))
			abort();
		roundtrip(&m);
		prev = off;
	}
	free(buf);
	return 0;
}
