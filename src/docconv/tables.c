/*
 * Tables on a page, found before the text model is built so that their text is
 * taken out of the paragraphs:
 *
 *   ruled    the rulings (paths.c) that touch each other form a grid; its
 *            lines are the rows and columns, a missing vertical rule inside a
 *            row makes a spanning cell (its text goes to the first cell, the
 *            cells it covers stay empty);
 *   unruled  rows of text pieces (runs of characters split at gaps wider than
 *            an em and than the line's word spaces) on consecutive baselines,
 *            inside one column of the page, whose pieces leave the same
 *            vertical gutters free; the first row is the header and may be
 *            centred across them.  Short cells, few sentence ends and much
 *            white space tell it from prose in columns or justified text.
 *
 * Each table becomes a TB_TABLE block with its cells' text and boxes.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 3.0f         /* rulings whose ends come this close meet */
#define MERGE 8.0f       /* grid lines closer than this are one: double rules, and cells
			    whose frames overlap (HTML layouts); no cell is this narrow */
#define MAX_CELLS 20000
#define GAP_EM 1.0f      /* a gap wider than this many ems splits a line into pieces */
#define GUTTER 6.0f      /* the narrowest free strip between two columns, */
#define GUTTER_EM 1.0f   /* in points and in ems: word gaps of justified lines that happen
			    to line up over a few rows are narrower */
#define MIN_ROWS 3       /* header and two rows */
#define MAX_WORDS 3.5f   /* mean words per piece: more is columns of prose */
#define MAX_FILL 0.7f    /* share of the rows' width covered by text: more is justified prose */
#define MAX_ENDS 0.1f    /* share of pieces ending a sentence: more is prose */

/* ---- cells ----------------------------------------------------------------------- */

void cw_doc_table_free(struct ttable *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->rows * t->cols; i++)
		free(t->cells[i].text);
	free(t->cells);
	free(t);
}

static struct ttable *table_new(int rows, int cols, bool ruled)
{
	struct ttable *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cells = calloc((size_t)rows * (size_t)cols, sizeof(*t->cells));
	if (!t->cells) {
		free(t);
		return NULL;
	}
	t->rows = rows;
	t->cols = cols;
	t->ruled = ruled;
	for (int i = 0; i < rows * cols; i++)
		t->cells[i].bbox = fz_empty_rect;
	return t;
}

/* A piece of a cell's text: one line's characters inside one cell. */
struct piece {
	int cell;
	float base, x0;
	struct sbuf s;
};

static int cmp_piece(const void *a, const void *b)
{
	const struct piece *x = a, *y = b;
	if (x->cell != y->cell)
		return x->cell - y->cell;
	if (fabsf(x->base - y->base) > 2)
		return x->base < y->base ? -1 : 1;
	return x->x0 < y->x0 ? -1 : x->x0 > y->x0;
}

/* Append text to a cell: pieces are joined by one space (a cell's line breaks too). */
static bool cell_add(struct tcell *c, const char *s, size_t n)
{
	while (n && s[0] == ' ')
		s++, n--;
	while (n && s[n - 1] == ' ')
		n--;
	if (!n)
		return true;
	size_t old = c->text ? strlen(c->text) : 0;
	char *t = realloc(c->text, old + n + 2);
	if (!t)
		return false;
	if (old)
		t[old++] = ' ';
	memcpy(t + old, s, n);
	t[old + n] = '\0';
	c->text = t;
	return true;
}

/* Sort the pieces into cell order and join them into the cells. */
static bool fill_cells(struct ttable *t, struct piece *pc, int n)
{
	bool ok = true;
	if (n > 1)
		qsort(pc, (size_t)n, sizeof(*pc), cmp_piece);
	for (int i = 0; i < n; i++) {
		if (pc[i].s.oom)
			ok = false;
		else if (pc[i].s.p && !cell_add(&t->cells[pc[i].cell], pc[i].s.p, pc[i].s.len))
			ok = false;
		free(pc[i].s.p);
	}
	return ok;
}

static int filled(const struct ttable *t)
{
	int k = 0;
	for (int i = 0; i < t->rows * t->cols; i++)
		k += t->cells[i].text != NULL;
	return k;
}

static fz_point centre(const fz_stext_char *c)
{
	fz_rect r = fz_rect_from_quad(c->quad);
	return fz_make_point((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2);
}

static bool add_table(struct tpage *p, struct ttable *t, fz_rect box)
{
	struct tblock *b = cw_doc_add_block(p);
	if (!b) {
		cw_doc_table_free(t);
		return false;
	}
	b->kind = TB_TABLE;
	b->table = t;
	b->bbox = box;
	return true;
}

/* ---- ruled tables ---------------------------------------------------------------- */

static int uf_find(int *par, int i)
{
	while (par[i] != i)
		i = par[i] = par[par[i]];
	return i;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

/* Sort v and merge values closer than MERGE into their mean; returns the count left. */
static int cluster(float *v, int n)
{
	int out = 0;
	if (n > 1)
		qsort(v, (size_t)n, sizeof(float), cmp_float);
	for (int i = 0; i < n;) {
		int j = i;
		float sum = 0;
		while (j < n && v[j] - v[i] <= MERGE)
			sum += v[j++];
		v[out++] = sum / (float)(j - i);
		i = j;
	}
	return out;
}

/* A grid: its column and row lines, and the vertical rulings that drew it. */
struct grid {
	float *xs, *ys;
	int nx, ny;
	const struct rulings *r;
	const int *par;
	int root;
};

/* Is there a vertical rule at column line k across the middle of row i? */
static bool has_rule(const struct grid *g, int k, int i)
{
	float mid = (g->ys[i] + g->ys[i + 1]) / 2;
	int nh = g->r->nh;
	for (int j = 0; j < g->r->nv; j++) {
		const struct ruling *v = &g->r->v[j];
		if (uf_find((int *)g->par, nh + j) == g->root && fabsf(v->at - g->xs[k]) <= MERGE &&
		    v->a <= mid && v->b >= mid)
			return true;
	}
	return false;
}

static int find_slot(const float *lines, int n, float at)
{
	for (int i = 0; i + 1 < n; i++)
		if (at >= lines[i] && at < lines[i + 1])
			return i;
	return -1;
}

/* The grid's cells from the characters inside it; false: out of memory. */
static bool ruled_cells(fz_stext_page *sp, const struct grid *g, struct ttable *t)
{
	int rows = g->ny - 1, cols = g->nx - 1, n = 0, cap = 0;
	int *owner = malloc((size_t)rows * (size_t)cols * sizeof(int));
	struct piece *pc = NULL;
	bool ok = owner != NULL;
	for (int i = 0; ok && i < rows; i++)
		for (int j = 0; j < cols; j++)
			owner[i * cols + j] = j == 0 || has_rule(g, j, i) ? j : owner[i * cols + j - 1];
	for (int i = 0; ok && i < rows; i++)
		for (int j = 0; j < cols; j++) {
			struct tcell *c = &t->cells[i * cols + owner[i * cols + j]];
			c->bbox = fz_union_rect(c->bbox, fz_make_rect(g->xs[j], g->ys[i],
								      g->xs[j + 1], g->ys[i + 1]));
		}
	fz_rect box = fz_make_rect(g->xs[0], g->ys[0], g->xs[g->nx - 1], g->ys[g->ny - 1]);
	for (fz_stext_block *b = sp->first_block; ok && b; b = b->next) {
		if (b->type != FZ_STEXT_BLOCK_TEXT || !fz_is_valid_rect(fz_intersect_rect(b->bbox, box)))
			continue;
		for (fz_stext_line *l = b->u.t.first_line; ok && l; l = l->next) {
			struct piece *cur = NULL;
			for (fz_stext_char *c = l->first_char; ok && c; c = c->next) {
				fz_point m = centre(c);
				int r = find_slot(g->ys, g->ny, m.y), k = find_slot(g->xs, g->nx, m.x);
				if (r < 0 || k < 0) {
					cur = NULL;
					continue;
				}
				int cell = r * cols + owner[r * cols + k];
				if (!cur || cur->cell != cell) {
					if (n == cap) {
						int nc = cap ? cap * 2 : 64;
						struct piece *q = realloc(pc, (size_t)nc * sizeof(*q));
						if (!q) {
							ok = false;
							break;
						}
						pc = q;
						cap = nc;
					}
					cur = &pc[n++];
					*cur = (struct piece){cell, c->origin.y, m.x, {0}};
				}
				cw_sb_rune(&cur->s, c->c);
			}
		}
	}
	if (!fill_cells(t, pc, n))
		ok = false;
	free(pc);
	free(owner);
	return ok;
}

/* One connected group of rulings: a table when it makes at least 2 x 2 cells, mostly filled. */
static bool ruled_table(fz_stext_page *sp, const struct rulings *r, const int *par, int root,
			struct tpage *p)
{
	int nh = r->nh, nx = 0, ny = 0;
	float *xs = malloc((size_t)(r->nv + 1) * sizeof(float));
	float *ys = malloc((size_t)(r->nh + 1) * sizeof(float));
	bool ok = xs && ys;
	for (int i = 0; ok && i < r->nh; i++)
		if (uf_find((int *)par, i) == root)
			ys[ny++] = r->h[i].at;
	for (int j = 0; ok && j < r->nv; j++)
		if (uf_find((int *)par, nh + j) == root)
			xs[nx++] = r->v[j].at;
	if (ok) {
		nx = cluster(xs, nx);
		ny = cluster(ys, ny);
	}
	if (ok && nx >= 3 && ny >= 3 && (nx - 1) * (ny - 1) <= MAX_CELLS) {
		struct grid g = {xs, ys, nx, ny, r, par, root};
		struct ttable *t = table_new(ny - 1, nx - 1, true);
		ok = t && ruled_cells(sp, &g, t);
		int cells = t ? t->rows * t->cols : 0, f = t ? filled(t) : 0;
		/* a chart's grid holds a few labels; a table's cells hold its data */
		if (ok && f >= 2 && f * 10 >= cells * 3)
			ok = add_table(p, t, fz_make_rect(xs[0], ys[0], xs[nx - 1], ys[ny - 1]));
		else
			cw_doc_table_free(t);
	}
	free(xs);
	free(ys);
	return ok;
}

static bool ruled_tables(fz_stext_page *sp, const struct rulings *r, struct tpage *p)
{
	int n = r->nh + r->nv;
	if (r->full || r->nh < 3 || r->nv < 3)
		return true;
	int *par = malloc((size_t)n * sizeof(int));
	int *seen = calloc((size_t)n, sizeof(int));
	bool ok = par && seen;
	for (int i = 0; ok && i < n; i++)
		par[i] = i;
	for (int i = 0; ok && i < r->nh; i++)
		for (int j = 0; j < r->nv; j++) {
			const struct ruling *h = &r->h[i], *v = &r->v[j];
			if (v->at >= h->a - TOL && v->at <= h->b + TOL && h->at >= v->a - TOL &&
			    h->at <= v->b + TOL) {
				int a = uf_find(par, i), b = uf_find(par, r->nh + j);
				if (a != b)
					par[a] = b;
			}
		}
	for (int i = 0; ok && i < n; i++) {
		int root = uf_find(par, i);
		if (seen[root])
			continue;
		seen[root] = 1;
		ok = ruled_table(sp, r, par, root, p);
	}
	free(par);
	free(seen);
	return ok;
}

/* ---- unruled tables --------------------------------------------------------------- */

/* A run of a line's characters without a wide gap. */
struct frag {
	fz_rect box;
	float base, size;
	int words;
	int col;           /* the page column it is in */
	int block;         /* the structured-text block it comes from */
	struct sbuf s;
};

struct frags {
	struct frag *v;
	int n, cap;
	bool oom;
};

static struct frag *frag_new(struct frags *f)
{
	if (f->n == f->cap) {
		int nc = f->cap ? f->cap * 2 : 128;
		struct frag *q = realloc(f->v, (size_t)nc * sizeof(*q));
		if (!q) {
			f->oom = true;
			return NULL;
		}
		f->v = q;
		f->cap = nc;
	}
	struct frag *g = &f->v[f->n++];
	*g = (struct frag){.box = {1e9f, 1e9f, -1e9f, -1e9f}, .words = 1};
	return g;
}

/* The narrowest gap between words of the line (a space or a visible gap): justified text
 * stretches every gap of a line alike, a table row has wider gaps between its cells. */
static float word_gap(fz_stext_line *l)
{
	float right = 0, min = 1e9f;
	bool seen = false, space = false;
	for (fz_stext_char *c = l->first_char; c; c = c->next) {
		if (c->c == ' ' || c->c == '\t') {
			space = true;
			continue;
		}
		fz_rect q = cw_doc_char_box(c);
		if (seen && (space || q.x0 - right > 0.15f * c->size) && q.x0 - right < min)
			min = q.x0 - right;
		space = false;
		seen = true;
		right = q.x1;
	}
	return min;
}

/*
 * The page's text outside ruled tables as pieces split at wide gaps.  false: no two pieces
 * share a baseline (no line was split, no line continues the one before it to the right),
 * so no row can have two cells.
 */
static bool split_frags(fz_stext_page *sp, const struct tpage *p, struct frags *f)
{
	bool rows = false;
	float prev = -1e9f;
	int bi = 0;
	for (fz_stext_block *b = sp->first_block; b && !f->oom; b = b->next, bi++) {
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		for (fz_stext_line *l = b->u.t.first_line; l && !f->oom; l = l->next) {
			struct frag *cur = NULL;
			bool space = false;
			int pieces = 0;
			if (l->first_char && fabsf(l->first_char->origin.y - prev) <= 2)
				rows = true;
			if (l->first_char)
				prev = l->first_char->origin.y;
			float right = 0, gap = 1.6f * word_gap(l);
			for (fz_stext_char *c = l->first_char; c && !f->oom; c = c->next) {
				if (c->c == ' ' || c->c == '\t') {
					space = true;
					continue;
				}
				if (cw_doc_in_table(p, c)) {
					cur = NULL;
					continue;
				}
				fz_rect q = cw_doc_char_box(c);
				if (cur && q.x0 - right > GAP_EM * c->size && q.x0 - right > gap)
					cur = NULL;
				if (!cur) {
					if (!(cur = frag_new(f)))
						break;
					rows |= ++pieces > 1;
					cur->base = c->origin.y;
					cur->size = c->size;
					cur->block = bi;
				} else if (space) {
					cw_sb_put(&cur->s, " ", 1);
					cur->words++;
				}
				space = false;
				cw_sb_rune(&cur->s, c->c);
				f->oom |= cur->s.oom;
				cw_doc_grow(&cur->box, q);
				right = q.x1;
			}
		}
	}
	return rows;
}

static int cmp_frag(const void *a, const void *b)
{
	const struct frag *x = a, *y = b;
	if (x->col != y->col)
		return x->col - y->col;
	if (fabsf(x->base - y->base) > 2)
		return x->base < y->base ? -1 : 1;
	return x->box.x0 < y->box.x0 ? -1 : x->box.x0 > y->box.x0;
}

/* Free x intervals between a set of pieces: sorted, merged covered spans. */
struct spans {
	float a[64], b[64];
	int n;
};

static void spans_add(struct spans *s, float a, float b)
{
	struct spans o = {.n = 0};
	int i = 0;
	while (i < s->n && s->b[i] < a)
		o.a[o.n] = s->a[i], o.b[o.n++] = s->b[i++];
	while (i < s->n && s->a[i] <= b) {
		a = fminf(a, s->a[i]);
		b = fmaxf(b, s->b[i]);
		i++;
	}
	if (o.n < 64)
		o.a[o.n] = a, o.b[o.n++] = b;
	while (i < s->n && o.n < 64)
		o.a[o.n] = s->a[i], o.b[o.n++] = s->b[i++];
	*s = o;
}

/* The gutters: gaps of at least min between covered spans. */
static int gutters(const struct spans *s, float min, float *mid, int max)
{
	int k = 0;
	for (int i = 0; i + 1 < s->n && k < max; i++)
		if (s->a[i + 1] - s->b[i] >= min)
			mid[k++] = (s->b[i] + s->a[i + 1]) / 2;
	return k;
}

struct row {
	int first, n;      /* its pieces in the sorted frags */
};

/* A sentence ends in the piece: "word." at its end or "word. Next" inside. */
static bool has_sentence_end(const char *t)
{
	for (const char *d = strchr(t, '.'); d; d = strchr(d + 1, '.')) {
		if (d == t || !isalpha((unsigned char)d[-1]))
			continue;
		if (!d[1] || (d[1] == ' ' && isupper((unsigned char)d[2])))
			return true;
	}
	return false;
}

static bool is_marker(const char *t)
{
	char num[16];
	const char *rest;
	size_t n = strlen(t);
	char buf[24];
	if (n + 3 > sizeof(buf))
		return false;
	memcpy(buf, t, n);
	memcpy(buf + n, " x", 3);
	return cw_doc_list_marker(buf, num, &rest) && rest == buf + n + 1;
}

static int column_of(const struct frag *g, const float *mid, int nc)
{
	float x = (g->box.x0 + g->box.x1) / 2;
	int c = 0;
	while (c < nc - 1 && x > mid[c])
		c++;
	return c;
}

/*
 * Rows that MuPDF holds in one block with lines above and below them in the same column
 * are lines of a paragraph whose word gaps happen to line up.
 */
static bool inside_paragraph(const struct frags *f, const struct row *rows, int r0, int r1)
{
	const struct frag *top = &f->v[rows[r0].first];
	const struct frag *last = &f->v[rows[r1 - 1].first];
	for (int k = 0; k < rows[r0].n; k++) {
		int blk = f->v[rows[r0].first + k].block;
		bool above = false, below = false;
		for (int i = 0; i < f->n && !(above && below); i++) {
			const struct frag *g = &f->v[i];
			if (g->block != blk || g->col != top->col)
				continue;
			above |= g->base < top->base - 2;
			below |= g->base > last->base + 2;
		}
		if (above && below)
			return true;
	}
	return false;
}

/* Rows [r0, r1) with the column boundaries mid[0..nc-2]: a table, or false when it looks
 * like something else (prose in columns, a list with hanging markers).  Counted per cell,
 * as a cell may come in several pieces. */
static bool plausible(const struct frags *f, const struct row *rows, int r0, int r1,
		      const float *mid, int nc)
{
	int words = 0, cells = 0, markers = 0, firsts = 0, ends = 0;
	float x0 = 1e9f, x1 = -1e9f, covered = 0;
	for (int r = r0; r < r1; r++) {
		int w[32] = {0};
		bool end[32] = {false}, mark[32] = {false};
		for (int k = 0; k < rows[r].n; k++) {
			const struct frag *g = &f->v[rows[r].first + k];
			const char *t = g->s.p ? g->s.p : "";
			int c = column_of(g, mid, nc);
			if (!w[c])
				mark[c] = is_marker(t);
			w[c] += g->words;
			end[c] |= has_sentence_end(t);
			x0 = fminf(x0, g->box.x0);
			x1 = fmaxf(x1, g->box.x1);
			covered += g->box.x1 - g->box.x0;
		}
		for (int c = 0; c < nc; c++) {
			if (!w[c])
				continue;
			cells++;
			words += w[c];
			ends += end[c];
			if (c == 0) {
				firsts++;
				markers += mark[c];
			}
		}
	}
	if ((float)words > MAX_WORDS * (float)cells || (float)ends > MAX_ENDS * (float)cells)
		return false;
	if (covered > MAX_FILL * (x1 - x0) * (float)(r1 - r0))
		return false;
	if (inside_paragraph(f, rows, r0, r1))
		return false;
	if (firsts && markers * 2 > firsts)
		return false;
	return cells * 10 >= (r1 - r0) * nc * 6;
}

static bool unruled_table(const struct frags *f, const struct row *rows, int r0, int r1,
			  const float *mid, int nc, struct tpage *p)
{
	struct ttable *t = table_new(r1 - r0, nc, false);
	if (!t)
		return false;
	fz_rect box = fz_empty_rect;
	bool ok = true;
	for (int r = r0; ok && r < r1; r++)
		for (int k = 0; ok && k < rows[r].n; k++) {
			const struct frag *g = &f->v[rows[r].first + k];
			int c = column_of(g, mid, nc);
			struct tcell *cell = &t->cells[(r - r0) * nc + c];
			ok = cell_add(cell, g->s.p ? g->s.p : "", g->s.len);
			cell->bbox = fz_union_rect(cell->bbox, g->box);
			box = fz_union_rect(box, g->box);
		}
	if (!ok) {
		cw_doc_table_free(t);
		return false;
	}
	return add_table(p, t, fz_expand_rect(box, 1));
}

/* Grow runs of rows with at least two pieces; the rows after the first (the header) must
 * leave the same gutters free. */
static bool find_unruled(const struct frags *f, const struct row *rows, int nr, struct tpage *p)
{
	for (int r = 0; r < nr;) {
		float mid[32], best[32];
		int end = r + 1, nbest = 0;
		struct spans s = {.n = 0};
		if (rows[r].n < 2) {
			r++;
			continue;
		}
		for (int e = r + 1; e < nr && rows[e].n >= 2; e++) {
			const struct frag *prev = &f->v[rows[e - 1].first];
			const struct frag *cur = &f->v[rows[e].first];
			if (cur->col != prev->col ||
			    cur->base - prev->base > 2.5f * fmaxf(prev->size, cur->size))
				break;
			struct spans t = s;
			for (int k = 0; k < rows[e].n; k++)
				spans_add(&t, f->v[rows[e].first + k].box.x0,
					  f->v[rows[e].first + k].box.x1);
			int ng = gutters(&t, fmaxf(GUTTER, GUTTER_EM * cur->size), mid, 31);
			if (ng < 1)
				break;
			s = t;
			end = e + 1;
			nbest = ng;
			memcpy(best, mid, (size_t)ng * sizeof(float));
		}
		if (end - r >= MIN_ROWS && plausible(f, rows, r, end, best, nbest + 1)) {
			if (!unruled_table(f, rows, r, end, best, nbest + 1, p))
				return false;
			r = end;
		} else {
			r++;
		}
	}
	return true;
}

/*
 * The page's columns of prose, from its text blocks: a table is looked for inside one
 * column, never across a gutter that runs down most of the page (one table's columns
 * do not).
 */
static int page_columns(fz_stext_page *sp, float *bnd)
{
	int n = 0, k = 0, nb = 0;
	for (fz_stext_block *b = sp->first_block; b; b = b->next)
		n += b->type == FZ_STEXT_BLOCK_TEXT;
	fz_rect *box = malloc((size_t)(n ? n : 1) * sizeof(*box));
	int *w = malloc((size_t)(n ? n : 1) * sizeof(*w));
	if (box && w) {
		for (fz_stext_block *b = sp->first_block; b; b = b->next) {
			if (b->type != FZ_STEXT_BLOCK_TEXT)
				continue;
			int nl = 0;
			for (fz_stext_line *l = b->u.t.first_line; l; l = l->next)
				nl++;
			box[k] = b->bbox;
			w[k++] = nl;
		}
		nb = cw_doc_columns(box, w, k, 0.5f, bnd);
	}
	free(box);
	free(w);
	return nb;
}

/*
 * A cheap look before building pieces (which copies the page's text): can two pieces share
 * a baseline at all?  A line with a gap wider than an em, or a line continuing the one
 * before it on the same baseline.  Most pages of prose have neither.
 */
static bool rows_possible(fz_stext_page *sp)
{
	float prev = -1e9f;
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			fz_stext_char *c = l->first_char;
			if (!c)
				continue;
			if (fabsf(c->origin.y - prev) <= 2)
				return true;
			prev = c->origin.y;
			float right = 1e9f;
			for (; c; c = c->next) {
				if (c->c == ' ')
					continue;
				float x0 = CW_MIN(c->quad.ll.x, c->quad.ul.x);
				if (x0 - right > GAP_EM * c->size)
					return true;
				right = CW_MAX(c->quad.lr.x, c->quad.ur.x);
			}
		}
	}
	return false;
}

static bool unruled_tables(fz_stext_page *sp, struct tpage *p)
{
	if (!rows_possible(sp))
		return true;
	struct frags f = {0};
	struct row *rows = NULL;
	int nr = 0;
	bool ok;
	float bnd[MAX_COLS];
	bool rows_possible = split_frags(sp, p, &f);
	ok = !f.oom;
	if (ok && f.n >= 2 * MIN_ROWS && rows_possible) {
		int nb = page_columns(sp, bnd);
		for (int i = 0; i < f.n; i++) {
			float x = (f.v[i].box.x0 + f.v[i].box.x1) / 2;
			int c = 0;
			while (c < nb && x > bnd[c])
				c++;
			f.v[i].col = c;
		}
		if (f.n > 1)
			qsort(f.v, (size_t)f.n, sizeof(*f.v), cmp_frag);
		rows = malloc((size_t)f.n * sizeof(*rows));
		ok = rows != NULL;
		for (int i = 0; ok && i < f.n;) {
			int j = i + 1;
			while (j < f.n && f.v[j].col == f.v[i].col &&
			       fabsf(f.v[j].base - f.v[i].base) <= 2)
				j++;
			rows[nr++] = (struct row){i, j - i};
			i = j;
		}
		if (ok)
			ok = find_unruled(&f, rows, nr, p);
	}
	for (int i = 0; i < f.n; i++)
		free(f.v[i].s.p);
	free(f.v);
	free(rows);
	return ok;
}

bool cw_doc_find_tables(fz_stext_page *sp, const struct rulings *r, struct tpage *p)
{
	return ruled_tables(sp, r, p) && unruled_tables(sp, p);
}
