/*
 * Flow: the order blocks are read in, and paragraphs that go on past a break.
 *
 * Reading order.  Blocks (text, tables, figures) that leave a vertical gutter
 * (nearly) free between them make columns; a block crossing a gutter (a title,
 * a wide figure) is full-width and splits the page into bands.  Band by band
 * from the top, the narrow blocks are read column by column, each column top
 * to bottom, and the full-width block follows its band.  A page without
 * columns keeps MuPDF's order, with its tables put where they stand.
 *
 * Continuation.  A text block whose last line does not end a sentence goes on
 * in the next text block when that one starts higher on the page (the next
 * column) or on the next page, in body text of the same size, and is not a
 * heading or a list item.  Furniture, tables and figures between them stop it.
 */
#include "docconv_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GUTTER 8.0f        /* the narrowest strip between columns */

static float mid_y(const struct tblock *b)
{
	return (b->bbox.y0 + b->bbox.y1) / 2;
}

static int lines_of(const struct tblock *b)
{
	return b->kind == TB_TEXT ? b->n : 3;
}

#define MAX_BINS 2048

/*
 * Columns from boxes weighted by their lines: x positions covered by a tenth or less of the
 * most covered one (a title crossing a gutter does not close it) form gutters; every column
 * must hold three lines, and with min_share its boxes must cover that share of the height.
 */
int cw_doc_columns(const fz_rect *box, const int *weight, int n, float min_share, float *bnd)
{
	fz_rect area = fz_empty_rect;
	for (int i = 0; i < n; i++)
		area = fz_union_rect(area, box[i]);
	float width = area.x1 - area.x0;
	if (n < 2 || width <= 0)
		return 0;
	int nbins = (int)(width / 2) + 1;
	if (nbins > MAX_BINS)
		nbins = MAX_BINS;
	float bw = width / (float)nbins;
	int bins[MAX_BINS] = {0}, max = 0;
	for (int i = 0; i < n; i++) {
		int a = (int)((box[i].x0 - area.x0) / bw), b = (int)((box[i].x1 - area.x0) / bw);
		for (int k = a < 0 ? 0 : a; k <= b && k < nbins; k++)
			bins[k] += weight[i];
	}
	for (int k = 0; k < nbins; k++)
		if (bins[k] > max)
			max = bins[k];
	int nb = 0;
	bool high = false;  /* a covered stretch came before: not the margin */
	for (int k = 0; k < nbins && nb < MAX_COLS - 1;) {
		if (bins[k] * 10 > max || !high) {
			high |= bins[k] * 10 > max;
			k++;
			continue;
		}
		int e = k;
		while (e < nbins && bins[e] * 10 <= max)
			e++;
		if (e < nbins && (float)(e - k) * bw >= GUTTER)
			bnd[nb++] = area.x0 + ((float)(k + e) / 2) * bw;
		k = e;
	}
	if (!nb)
		return 0;
	int lines[MAX_COLS] = {0};
	float height[MAX_COLS] = {0};
	for (int i = 0; i < n; i++) {
		int c = 0;
		while (c < nb && (box[i].x0 + box[i].x1) / 2 > bnd[c])
			c++;
		lines[c] += weight[i];
		height[c] += box[i].y1 - box[i].y0;
	}
	for (int c = 0; c <= nb; c++)
		if (lines[c] < 3 || height[c] < min_share * (area.y1 - area.y0))
			return 0;
	return nb;
}

/* Column boundaries (gutter middles) of the page's written blocks; 0: one column. */
static int find_columns(const struct tpage *p, float *bnd)
{
	fz_rect *box = malloc((size_t)p->n * sizeof(*box));
	int *w = malloc((size_t)p->n * sizeof(*w)), n = 0, nb = 0;
	if (box && w) {
		for (int i = 0; i < p->n; i++)
			if (!p->blocks[i].furniture) {
				box[n] = p->blocks[i].bbox;
				w[n++] = lines_of(&p->blocks[i]);
			}
		nb = cw_doc_columns(box, w, n, 0, bnd);
	}
	free(box);
	free(w);
	return nb;
}

static bool spans_gutter(const struct tblock *b, const float *bnd, int nb)
{
	for (int k = 0; k < nb; k++)
		if (b->bbox.x0 < bnd[k] - 2 && b->bbox.x1 > bnd[k] + 2)
			return true;
	return false;
}

/* Sort keys for a block: band, then full-width blocks after the band's columns, column, y. */
struct okey {
	int band, col;
	float y;
	int orig;
};

static int cmp_okey(const void *a, const void *b)
{
	const struct okey *x = a, *y = b;
	if (x->band != y->band)
		return x->band - y->band;
	if (x->col != y->col)
		return x->col - y->col;
	if (x->y != y->y)
		return x->y < y->y ? -1 : 1;
	return x->orig - y->orig;
}

static bool reorder(struct tpage *p, struct okey *k)
{
	struct tblock *nb = malloc((size_t)p->n * sizeof(*nb));
	if (!nb)
		return false;
	if (p->n > 1)
		qsort(k, (size_t)p->n, sizeof(*k), cmp_okey);
	for (int i = 0; i < p->n; i++)
		nb[i] = p->blocks[k[i].orig];
	free(p->blocks);
	p->blocks = nb;
	return true;
}

/* Columns: bands between full-width blocks, each read column by column. */
static void order_columns(struct tpage *p, const float *bnd, int nb)
{
	struct okey *k = malloc((size_t)p->n * sizeof(*k));
	if (!k)
		return;  /* keep MuPDF's order */
	for (int i = 0; i < p->n; i++) {
		const struct tblock *b = &p->blocks[i];
		bool wide = b->furniture || spans_gutter(b, bnd, nb);
		int band = 0;
		for (int j = 0; j < p->n; j++) {
			const struct tblock *o = &p->blocks[j];
			if (j != i && (o->furniture || spans_gutter(o, bnd, nb)) &&
			    (mid_y(o) < mid_y(b) || (mid_y(o) == mid_y(b) && j < i)))
				band++;
		}
		int col = 0;
		while (col < nb && (b->bbox.x0 + b->bbox.x1) / 2 > bnd[col])
			col++;
		/* the narrow blocks above the band's full-width block, then it */
		k[i] = (struct okey){2 * band + (wide ? 2 : 1), wide ? 0 : col, b->bbox.y0, i};
	}
	if (reorder(p, k))
		p->columns = nb + 1;
	free(k);
}

/* One column: MuPDF's order, with each table moved before the first block below it. */
static void place_tables(struct tpage *p)
{
	int nt = 0;
	while (nt < p->n && p->blocks[nt].kind == TB_TABLE)
		nt++;
	if (!nt || nt == p->n)
		return;
	struct okey *k = malloc((size_t)p->n * sizeof(*k));
	if (!k)
		return;
	for (int i = nt; i < p->n; i++)
		k[i] = (struct okey){0, 0, (float)(i - nt), i};
	for (int t = 0; t < nt; t++) {
		float y = mid_y(&p->blocks[t]), at = (float)(p->n - nt);
		for (int i = nt; i < p->n; i++)
			if (!p->blocks[i].furniture && mid_y(&p->blocks[i]) > y) {
				at = (float)(i - nt) - 0.5f;
				break;
			}
		k[t] = (struct okey){0, 0, at, t};
	}
	if (reorder(p, k))
		p->columns = 1;
	free(k);
}

bool cw_doc_ends_sentence(const char *t)
{
	size_t n = strlen(t);
	while (n && strchr("\"')]\xbb\x9d", t[n - 1]))
		n--;  /* closing quotes and brackets (and the last bytes of ” and ») */
	if (n >= 3 && !memcmp(t + n - 3, "\xe2\x80", 2))
		n -= 3;
	return n && strchr(".!?:;", t[n - 1]);
}

/*
 * The block's last line reaches its right edge: a paragraph's last line is short, so this
 * one was cut by the break even when a sentence ends with it (justified text).
 */
static bool full_last_line(const struct tblock *b)
{
	if (b->n < 2)
		return false;
	const struct tline *l = &b->lines[b->n - 1];
	float w = b->bbox.x1 - b->bbox.x0;
	return w > 0 && b->bbox.x1 - l->bbox.x1 < 0.02f * w && l->bbox.x0 - b->bbox.x0 < 0.02f * w;
}

static bool opens_block(const struct styles *st, const struct tline *t)
{
	char num[16];
	const char *rest;
	return cw_doc_heading_level(st, t) || cw_doc_list_marker(t->text, num, &rest);
}

/* The first block after (p, b) in reading order that is written; NULL at the end. */
static struct tblock *next_block(struct tpage *pages, int n, int *p, int *b, bool keep)
{
	for (;;) {
		if (++*b >= pages[*p].n) {
			*b = -1;
			if (++*p >= n)
				return NULL;
			if (pages[*p].ocr)
				return NULL;
			continue;
		}
		struct tblock *blk = &pages[*p].blocks[*b];
		if (!blk->furniture || keep)
			return blk;
	}
}

static void mark_continuations(struct tpage *pages, int n, const struct styles *st, bool keep)
{
	for (int p = 0; p < n; p++) {
		if (pages[p].ocr)
			continue;
		for (int b = 0; b < pages[p].n; b++) {
			struct tblock *cur = &pages[p].blocks[b];
			if (cur->kind != TB_TEXT || (cur->furniture && !keep) || !cur->n)
				continue;
			const struct tline *last = &cur->lines[cur->n - 1];
			if (last->furniture || cw_doc_heading_level(st, last) ||
			    (cw_doc_ends_sentence(last->text) && !full_last_line(cur)))
				continue;
			int np = p, nbk = b;
			struct tblock *nx = next_block(pages, n, &np, &nbk, keep);
			if (!nx || nx->kind != TB_TEXT || !nx->n)
				continue;
			const struct tline *first = &nx->lines[0];
			bool brk = np != p || nx->bbox.y0 < cur->bbox.y1 - 1;
			if (brk && !first->furniture && !opens_block(st, first) &&
			    fabsf(first->size - last->size) <= 1)
				cur->cont = true;
		}
	}
}

void cw_doc_flow(struct tpage *pages, int n, const struct styles *st, bool keep_furniture)
{
	for (int i = 0; i < n; i++) {
		struct tpage *p = &pages[i];
		float bnd[MAX_COLS];
		if (p->ocr || p->n < 2)
			continue;
		int nb = find_columns(p, bnd);
		if (nb)
			order_columns(p, bnd, nb);
		else
			place_tables(p);
	}
	mark_continuations(pages, n, st, keep_furniture);
}
