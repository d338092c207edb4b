/*
 * The text model: a page's blocks (text, tables, figures) and the lines of its
 * text blocks with each line's dominant size and weight (and its spans for the
 * json format), built from MuPDF's structured text with the tables' text taken
 * out; and what the lines are (the document's body size and heading levels,
 * list items).  The writers only print what this and the layout passes find.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void line_free(struct tline *t)
{
	free(t->text);
	for (int i = 0; i < t->nspans; i++)
		free(t->spans[i].text);
	free(t->spans);
}

void cw_doc_page_free(struct tpage *p)
{
	for (int b = 0; b < p->n; b++) {
		for (int l = 0; l < p->blocks[b].n; l++)
			line_free(&p->blocks[b].lines[l]);
		free(p->blocks[b].lines);
		cw_doc_table_free(p->blocks[b].table);
	}
	free(p->blocks);
	free(p->ocr_text);
	json_decref(p->ocr_json);
	memset(p, 0, sizeof(*p));
}

struct tblock *cw_doc_add_block(struct tpage *p)
{
	struct tblock *nb = realloc(p->blocks, (size_t)(p->n + 1) * sizeof(*nb));
	if (!nb)
		return NULL;
	p->blocks = nb;
	nb = &p->blocks[p->n++];
	memset(nb, 0, sizeof(*nb));
	nb->bbox = fz_empty_rect;
	return nb;
}

/* Tables are the page's first blocks (tables.c adds them before the text). */
bool cw_doc_in_table(const struct tpage *p, const fz_stext_char *c)
{
	if (!p->n || p->blocks[0].kind != TB_TABLE)
		return false;
	fz_rect r = cw_doc_char_box(c);
	fz_point m = fz_make_point((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2);
	for (int i = 0; i < p->n && p->blocks[i].kind == TB_TABLE; i++)
		if (fz_is_point_inside_rect(m, p->blocks[i].bbox))
			return true;
	return false;
}

static int cmp_line(const void *a, const void *b)
{
	const struct tline *x = a, *y = b;
	if (fabsf(x->baseline - y->baseline) > 2)
		return x->baseline < y->baseline ? -1 : 1;
	return x->bbox.x0 < y->bbox.x0 ? -1 : x->bbox.x0 > y->bbox.x0;
}

/* The line's runs of one font and size, for the json format. */
static bool line_spans(fz_context *ctx, const struct tpage *p, fz_stext_line *l, struct tline *t)
{
	for (fz_stext_char *c = l->first_char; c;) {
		if (cw_doc_in_table(p, c)) {
			c = c->next;
			continue;
		}
		fz_font *font = c->font;
		float size = c->size;
		struct tspan sp = {.size = size, .bbox = fz_rect_from_quad(c->quad)};
		struct sbuf s = {0};
		while (c && c->font == font && c->size == size && !cw_doc_in_table(p, c)) {
			cw_sb_rune(&s, c->c);
			sp.bbox = fz_union_rect(sp.bbox, fz_rect_from_quad(c->quad));
			c = c->next;
		}
		struct tspan *ns = realloc(t->spans, (size_t)(t->nspans + 1) * sizeof(*ns));
		if (s.oom || !ns) {
			free(s.p);
			if (ns)
				t->spans = ns;
			return false;
		}
		t->spans = ns;
		sp.text = s.p ? s.p : strdup("");
		snprintf(sp.font, sizeof(sp.font), "%s", fz_font_name(ctx, font));
		sp.bold = fz_font_is_bold(ctx, font);
		sp.italic = fz_font_is_italic(ctx, font);
		sp.mono = fz_font_is_monospaced(ctx, font);
		t->spans[t->nspans++] = sp;
		if (!sp.text)
			return false;
	}
	return true;
}

/* One structured-text line outside the tables into t; false: out of memory. *kept: it has
 * text. */
static bool model_line(fz_context *ctx, struct tpage *p, fz_stext_line *l, bool spans,
		       struct tline *t, bool *kept)
{
	struct sbuf s = {0};
	float size_sum = 0;
	int nchar = 0, nbold = 0;
	fz_rect box = {1e9f, 1e9f, -1e9f, -1e9f};
	*kept = false;
	for (fz_stext_char *c = l->first_char; c; c = c->next) {
		if (cw_doc_in_table(p, c))
			continue;
		cw_sb_rune(&s, c->c);
		if (c->c != ' ') {
			p->chars++;
			nchar++;
			size_sum += c->size;
			nbold += fz_font_is_bold(ctx, c->font);
			cw_doc_grow(&box, cw_doc_char_box(c));
		}
	}
	if (s.oom) {
		free(s.p);
		return false;
	}
	if (!s.p || !nchar) {
		free(s.p);
		return true;
	}
	/* leading and trailing spaces are layout, not text */
	while (s.len && s.p[s.len - 1] == ' ')
		s.p[--s.len] = '\0';
	size_t lead = strspn(s.p, " ");
	if (lead)
		memmove(s.p, s.p + lead, s.len - lead + 1);
	*t = (struct tline){.text = s.p, .size = size_sum / (float)nchar, .bold = nbold * 2 > nchar,
			    .bbox = box.x0 < box.x1 ? box : l->bbox};
	t->baseline = l->first_char ? l->first_char->origin.y : l->bbox.y1;
	*kept = true;
	return !spans || line_spans(ctx, p, l, t);
}

/* A figure: an image big enough not to be a rule, bullet or ornament. */
static bool add_figure(struct tpage *p, fz_rect r)
{
	if (r.x1 - r.x0 < 24 || r.y1 - r.y0 < 24)
		return true;
	struct tblock *fb = cw_doc_add_block(p);
	if (!fb)
		return false;
	fb->kind = TB_FIGURE;
	fb->bbox = r;
	return true;
}

/* Tables first, then the lines of each text block outside them, in reading order (baseline,
 * then x), with their dominant style; figures where the images are. */
bool cw_doc_page_model(fz_context *ctx, fz_stext_page *sp, const struct rulings *r, bool spans,
		       struct tpage *p)
{
	if (!cw_doc_find_tables(sp, r, p))
		return false;
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type == FZ_STEXT_BLOCK_IMAGE) {
			p->has_images = true;
			if (!add_figure(p, b->bbox))
				return false;
			continue;
		}
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		int nl = 0;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next)
			nl++;
		if (!nl)
			continue;
		struct tblock *tb = cw_doc_add_block(p);
		if (!tb)
			return false;
		tb->lines = calloc((size_t)nl, sizeof(struct tline));
		if (!tb->lines)
			return false;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			bool kept;
			struct tline *t = &tb->lines[tb->n];
			bool ok = model_line(ctx, p, l, spans, t, &kept);
			if (kept)
				tb->n++;
			if (!ok)
				return false;
			if (kept)
				tb->bbox = fz_union_rect(tb->bbox, t->bbox);
		}
		if (!tb->n) {
			free(tb->lines);
			p->n--;
			continue;
		}
		if (tb->n > 1)
			qsort(tb->lines, (size_t)tb->n, sizeof(struct tline), cmp_line);
	}
	return true;
}

/* ---- classification -------------------------------------------------------- */

/* A list item marker at the start of a line: "- " for bullets, the number for "1." / "1)". */
const char *cw_doc_list_marker(const char *t, char num[16], const char **rest)
{
	static const char *const bullets[] = {"\xe2\x80\xa2", "\xe2\x97\xa6", "\xe2\x96\xaa",
					      "\xe2\x80\x93", "-", "*", "\xc2\xb7"};
	for (size_t i = 0; i < sizeof(bullets) / sizeof(bullets[0]); i++) {
		size_t n = strlen(bullets[i]);
		if (!strncmp(t, bullets[i], n) && t[n] == ' ') {
			*rest = t + n + strspn(t + n, " ");
			return "-";
		}
	}
	int k = 0;
	while (k < 4 && isdigit((unsigned char)t[k]))
		k++;
	if (k > 0 && (t[k] == '.' || t[k] == ')') && t[k + 1] == ' ') {
		snprintf(num, 16, "%.*s.", k, t);
		*rest = t + k + 1 + strspn(t + k + 1, " ");
		return num;
	}
	return NULL;
}

static int cmp_float_desc(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

void cw_doc_find_styles(struct tpage *pages, int n, struct styles *st)
{
	/* histogram of sizes rounded to 0.5 pt, weighted by characters */
	float sizes[64];
	long weight[64];
	int ns = 0;
	memset(st, 0, sizeof(*st));
	for (int p = 0; p < n; p++)
		for (int b = 0; b < pages[p].n; b++)
			for (int l = 0; l < pages[p].blocks[b].n; l++) {
				struct tline *t = &pages[p].blocks[b].lines[l];
				float s = roundf(t->size * 2) / 2;
				int i;
				for (i = 0; i < ns && sizes[i] != s; i++)
					;
				if (i == ns) {
					if (ns == 64)
						continue;
					sizes[ns] = s;
					weight[ns++] = 0;
				}
				weight[i] += (long)strlen(t->text);
			}
	long best = -1;
	for (int i = 0; i < ns; i++)
		if (weight[i] > best) {
			best = weight[i];
			st->body = sizes[i];
		}
	float bigger[64] = {0};
	int nb = 0;
	for (int i = 0; i < ns; i++)
		if (sizes[i] >= st->body * 1.15f)
			bigger[nb++] = sizes[i];
	if (nb > 1)
		qsort(bigger, (size_t)nb, sizeof(float), cmp_float_desc);
	for (int i = 0; i < nb && i < 3; i++)
		st->heads[st->nheads++] = bigger[i];
}

int cw_doc_heading_level(const struct styles *st, const struct tline *t)
{
	float s = roundf(t->size * 2) / 2;
	for (int i = 0; i < st->nheads; i++)
		if (s >= st->heads[i])
			return i + 1;
	if (st->nheads && s >= st->body * 1.15f)
		return st->nheads;
	return 0;
}

