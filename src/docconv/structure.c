/*
 * The text model: a page's text blocks and their lines in reading order with
 * each line's dominant size and weight, built from MuPDF's structured text;
 * and what the lines are (the document's body size and heading levels, list
 * items).  The writers only print what this finds.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cw_doc_page_free(struct tpage *p)
{
	for (int b = 0; b < p->n; b++) {
		for (int l = 0; l < p->blocks[b].n; l++)
			free(p->blocks[b].lines[l].text);
		free(p->blocks[b].lines);
	}
	free(p->blocks);
	free(p->ocr_text);
	json_decref(p->ocr_json);
	memset(p, 0, sizeof(*p));
}

static int cmp_line(const void *a, const void *b)
{
	const struct tline *x = a, *y = b;
	if (fabsf(x->baseline - y->baseline) > 2)
		return x->baseline < y->baseline ? -1 : 1;
	return x->bbox.x0 < y->bbox.x0 ? -1 : x->bbox.x0 > y->bbox.x0;
}

/* Lines of each text block, in reading order (baseline, then x), with their dominant style. */
bool cw_doc_page_model(fz_context *ctx, fz_stext_page *sp, struct tpage *p)
{
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type == FZ_STEXT_BLOCK_IMAGE) {
			p->has_images = true;
			continue;
		}
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		int nl = 0;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next)
			nl++;
		if (!nl)
			continue;
		struct tblock *nb = realloc(p->blocks, (size_t)(p->n + 1) * sizeof(*nb));
		if (!nb)
			return false;
		p->blocks = nb;
		struct tblock *tb = &p->blocks[p->n++];
		tb->n = 0;
		tb->lines = calloc((size_t)nl, sizeof(struct tline));
		if (!tb->lines)
			return false;
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			struct sbuf s = {0};
			float size_sum = 0;
			int nchar = 0, nbold = 0;
			for (fz_stext_char *c = l->first_char; c; c = c->next) {
				cw_sb_rune(&s, c->c);
				if (c->c != ' ') {
					p->chars++;
					nchar++;
					size_sum += c->size;
					nbold += fz_font_is_bold(ctx, c->font);
				}
			}
			if (s.oom) {
				free(s.p);
				return false;
			}
			if (!s.p || !nchar) {
				free(s.p);
				continue;
			}
			/* trailing spaces are layout, not text */
			while (s.len && s.p[s.len - 1] == ' ')
				s.p[--s.len] = '\0';
			struct tline *t = &tb->lines[tb->n++];
			t->text = s.p;
			t->size = size_sum / (float)nchar;
			t->bold = nbold * 2 > nchar;
			t->bbox = l->bbox;
			t->baseline = l->first_char ? l->first_char->origin.y : l->bbox.y1;
		}
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
			*rest = t + n + 1;
			return "-";
		}
	}
	int k = 0;
	while (k < 4 && isdigit((unsigned char)t[k]))
		k++;
	if (k > 0 && (t[k] == '.' || t[k] == ')') && t[k + 1] == ' ') {
		snprintf(num, 16, "%.*s.", k, t);
		*rest = t + k + 2;
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
	float bigger[64];
	int nb = 0;
	for (int i = 0; i < ns; i++)
		if (sizes[i] >= st->body * 1.15f)
			bigger[nb++] = sizes[i];
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

