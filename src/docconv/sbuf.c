/* The growable string the text model and the writers build (see docconv_int.h). */
#include "docconv_int.h"

#include <stdlib.h>
#include <string.h>

void cw_sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void cw_sb_str(struct sbuf *b, const char *s)
{
	cw_sb_put(b, s, strlen(s));
}

void cw_sb_rune(struct sbuf *b, int c)
{
	char u[8];
	int n = fz_runetochar(u, c);
	cw_sb_put(b, u, (size_t)n);
}
