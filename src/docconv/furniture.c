/*
 * Page furniture: running headers and footers, page numbers and repeated
 * logos.  A line in the top or bottom margin band whose text, with its digits
 * (and a lone roman numeral) made generic, comes back at the same height on
 * enough of the document's pages is furniture; so is an image of the same
 * size at the same place.  Furniture is marked, never removed: the writers
 * leave it out unless the task keeps it, and json says which it is.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAND 0.15f       /* top and bottom share of the page where furniture lives */
#define SAME_Y 4.0f      /* the same place: within this many points */
#define MIN_PAGES 3      /* fewer pages cannot tell furniture from coincidence */
#define SHARE 0.4f       /* "most pages": odd and even pages may have their own headers */

struct cand {
	char *key;
	float y;
	int page;
	struct tline *line;    /* NULL for an image */
	struct tblock *block;
};

/* A line consisting of one roman numeral: a page number in front matter. */
static bool roman(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 8)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("ivxlcdmIVXLCDM", s[i]))
			return false;
	return true;
}

/* The line's text with runs of digits as '#', spaces collapsed, letters lower-cased. */
static char *normalise(const char *s)
{
	char *k = malloc(strlen(s) + 2);
	size_t n = 0;
	if (!k)
		return NULL;
	if (roman(s)) {
		strcpy(k, "#");
		return k;
	}
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isdigit(c)) {
			if (!n || k[n - 1] != '#')
				k[n++] = '#';
		} else if (isspace(c)) {
			if (n && k[n - 1] != ' ')
				k[n++] = ' ';
		} else {
			k[n++] = (char)tolower(c);
		}
	}
	k[n] = '\0';
	return k;
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	return x->y < y->y ? -1 : x->y > y->y;
}

static bool push(struct cand **v, int *n, int *cap, struct cand c)
{
	if (!c.key)
		return false;
	if (*n == *cap) {
		int nc = *cap ? *cap * 2 : 64;
		struct cand *q = realloc(*v, (size_t)nc * sizeof(*q));
		if (!q) {
			free(c.key);
			return false;
		}
		*v = q;
		*cap = nc;
	}
	(*v)[(*n)++] = c;
	return true;
}

static bool in_band(const struct tpage *p, fz_rect r)
{
	float mid = (r.y0 + r.y1) / 2;
	return mid < p->h * BAND || mid > p->h * (1 - BAND);
}

/* The candidates: lines and images in the margin bands of the text pages. */
static int candidates(struct tpage *pages, int n, struct cand **out, int *ntext)
{
	struct cand *v = NULL;
	int nv = 0, cap = 0;
	*ntext = 0;
	for (int p = 0; p < n; p++) {
		if (pages[p].ocr)
			continue;
		(*ntext)++;
		for (int b = 0; b < pages[p].n; b++) {
			struct tblock *blk = &pages[p].blocks[b];
			if (blk->kind == TB_FIGURE && in_band(&pages[p], blk->bbox)) {
				char key[48];
				snprintf(key, sizeof(key), "\x01image %.0fx%.0f",
					 blk->bbox.x1 - blk->bbox.x0, blk->bbox.y1 - blk->bbox.y0);
				push(&v, &nv, &cap, (struct cand){strdup(key), blk->bbox.y0, p,
								  NULL, blk});
			}
			for (int l = 0; blk->kind == TB_TEXT && l < blk->n; l++) {
				struct tline *t = &blk->lines[l];
				if (in_band(&pages[p], t->bbox))
					push(&v, &nv, &cap, (struct cand){normalise(t->text),
									  t->baseline, p, t, blk});
			}
		}
	}
	*out = v;
	return nv;
}

static void mark(struct cand *c)
{
	if (c->line)
		c->line->furniture = true;
	else
		c->block->furniture = true;
}

void cw_doc_mark_furniture(struct tpage *pages, int n)
{
	struct cand *v;
	int ntext, nv = candidates(pages, n, &v, &ntext);
	int need = (int)ceilf(SHARE * (float)ntext);
	if (need < MIN_PAGES)
		need = MIN_PAGES;
	if (nv > 1)
		qsort(v, (size_t)nv, sizeof(*v), cmp_cand);
	for (int i = 0; i < nv;) {
		int j = i + 1, pages_seen = 1, last = v[i].page;
		while (j < nv && !strcmp(v[j].key, v[i].key) && v[j].y - v[i].y <= SAME_Y) {
			/* candidates of one key and place are sorted by y, not page: count
			 * pages roughly, a page repeating a line twice counts twice at most */
			if (v[j].page != last)
				pages_seen++;
			last = v[j].page;
			j++;
		}
		if (pages_seen >= need && ntext >= MIN_PAGES)
			for (int k = i; k < j; k++)
				mark(&v[k]);
		i = j;
	}
	for (int i = 0; i < nv; i++)
		free(v[i].key);
	free(v);
	for (int p = 0; p < n; p++)
		for (int b = 0; b < pages[p].n; b++) {
			struct tblock *blk = &pages[p].blocks[b];
			if (blk->kind != TB_TEXT || !blk->n)
				continue;
			bool all = true;
			for (int l = 0; l < blk->n && all; l++)
				all = blk->lines[l].furniture;
			blk->furniture = all;
		}
}
