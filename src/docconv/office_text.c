/*
 * Plain text, Markdown and CSV.  In their own format they pass through
 * unchanged (office.c); for the other formats they are read into the tree:
 * text as paragraphs (blank-line separated), Markdown's block structure
 * (ATX headings, fenced code, nested "-"/"*"/"+"/"1." list items, pipe
 * tables, paragraphs; inline markup is kept as written), CSV as one table
 * (RFC 4180 quoting, the delimiter the sniffer saw: comma, semicolon or tab).
 */
#include "office.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct line {
	const char *s;
	size_t n;
};

/* The next line (without its \r\n) from *p; false at the end. */
static bool next_line(const char **p, const char *end, struct line *l)
{
	if (*p >= end)
		return false;
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	l->s = *p;
	l->n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
	*p = nl ? nl + 1 : end;
	if (l->n && l->s[l->n - 1] == '\r')
		l->n--;
	return true;
}

/* a code fence: "```" after optional spaces (lines are not NUL-terminated) */
static bool fence(const struct line *l)
{
	size_t i = 0;
	while (i < l->n && l->s[i] == ' ')
		i++;
	return l->n - i >= 3 && !memcmp(l->s + i, "```", 3);
}

static bool blank(const struct line *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (!isspace((unsigned char)l->s[i]))
			return false;
	return true;
}

/* Add a line to a paragraph, joined to the previous one by a space. */
static void join(struct odoc *d, struct onode *para, const char *s, size_t n)
{
	while (n && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	if (para->first)
		od_text(d, para, " ", 1, 0);
	od_text(d, para, s, n, 0);
}

static void plain(struct odoc *d, const char *p, const char *end)
{
	struct line l;
	struct onode *para = NULL;
	while (od_ok(d) && next_line(&p, end, &l)) {
		if (blank(&l)) {
			para = NULL;
			continue;
		}
		if (!para && !(para = od_add(d, d->root, ON_PARA)))
			return;
		join(d, para, l.s, l.n);
	}
}

/* ---- markdown -------------------------------------------------------------------------- */

/* A list marker after indent spaces: its length, *ordered and *num; 0 if none. */
static size_t item_marker(const struct line *l, size_t indent, bool *ordered, int *num)
{
	const char *s = l->s + indent;
	size_t n = l->n - indent;
	if (n >= 2 && (s[0] == '-' || s[0] == '*' || s[0] == '+') && s[1] == ' ') {
		*ordered = false;
		return 2;
	}
	size_t k = 0;
	while (k < n && k < 9 && isdigit((unsigned char)s[k]))
		k++;
	if (k && k + 1 < n && (s[k] == '.' || s[k] == ')') && s[k + 1] == ' ') {
		*ordered = true;
		*num = atoi(s);
		return k + 2;
	}
	return 0;
}

/* Cells of a pipe-table row into row. */
static void pipe_row(struct odoc *d, const struct line *l, struct onode *t)
{
	struct onode *row = od_add(d, t, ON_ROW);
	const char *s = l->s, *end = l->s + l->n;
	while (s < end && isspace((unsigned char)*s))
		s++;
	if (s < end && *s == '|')
		s++;
	while (row && s < end && od_ok(d)) {
		const char *c = s;
		while (c < end && !(*c == '|' && (c == s || c[-1] != '\\')))
			c++;
		if (c == end && blank(&(struct line){s, (size_t)(end - s)}))
			break;
		struct onode *cell = od_add(d, row, ON_CELL);
		struct onode *para = cell ? od_add(d, cell, ON_PARA) : NULL;
		if (!para || !od_cell(d))
			return;
		cell->a = cell->b = 1;
		join(d, para, s, (size_t)(c - s));
		s = c < end ? c + 1 : end;
	}
}

static bool table_rule(const struct line *l)
{
	size_t dashes = 0;
	for (size_t i = 0; i < l->n; i++) {
		char c = l->s[i];
		if (c == '-')
			dashes++;
		else if (c != '|' && c != ':' && c != ' ')
			return false;
	}
	return dashes >= 3 && memchr(l->s, '|', l->n);
}

/* Whether the line at p is a table's header rule. */
static bool rule_follows(const char *p, const char *end)
{
	struct line l;
	return next_line(&p, end, &l) && table_rule(&l);
}

static void markdown(struct odoc *d, const char *p, const char *end)
{
	struct line l, peek;
	struct onode *para = NULL;
	struct olists lists = {0};
	while (od_ok(d) && next_line(&p, end, &l)) {
		size_t ind = 0, h = 0;
		bool ordered = false;
		int num = 1;
		while (ind < l.n && l.s[ind] == ' ')
			ind++;
		while (ind + h < l.n && h < 7 && l.s[ind + h] == '#')
			h++;
		if (blank(&l)) {
			para = NULL;
			continue;
		}
		if (h >= 1 && h <= 6 && (ind + h == l.n || l.s[ind + h] == ' ')) {
			od_items_end(&lists);
			para = NULL;
			struct onode *hd = od_add(d, d->root, ON_HEADING);
			if (hd) {
				hd->level = (int)h;
				join(d, hd, l.s + ind + h, l.n - ind - h);
			}
		} else if (l.n - ind >= 3 && !memcmp(l.s + ind, "```", 3)) {
			struct sbuf code = {0};
			od_items_end(&lists);
			para = NULL;
			while (next_line(&p, end, &l) && !fence(&l)) {
				cw_sb_put(&code, l.s, l.n);
				cw_sb_str(&code, "\n");
			}
			struct onode *c = od_add(d, d->root, ON_CODE);
			if (c)
				od_set(d, &c->text, code.p ? code.p : "", code.len);
			free(code.p);
		} else if (memchr(l.s, '|', l.n) && rule_follows(p, end)) {
			od_items_end(&lists);
			para = NULL;
			struct onode *t = od_add(d, d->root, ON_TABLE);
			if (!t)
				return;
			pipe_row(d, &l, t);
			next_line(&p, end, &peek);
			const char *q = p;
			while (next_line(&q, end, &peek) && !blank(&peek) &&
			       memchr(peek.s, '|', peek.n)) {
				p = q;
				pipe_row(d, &peek, t);
			}
		} else if (item_marker(&l, ind, &ordered, &num)) {
			size_t m = item_marker(&l, ind, &ordered, &num);
			para = od_item(d, &lists, d->root, (int)ind / 2, ordered, num);
			if (para)
				join(d, para, l.s + ind + m, l.n - ind - m);
		} else if (para) {
			join(d, para, l.s, l.n); /* continuation, lazily */
		} else {
			od_items_end(&lists);
			if ((para = od_add(d, d->root, ON_PARA)))
				join(d, para, l.s, l.n);
		}
	}
}

/* ---- CSV ---------------------------------------------------------------------------------- */

static char delimiter(const char *p, const char *end)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
	size_t best = 0;
	char dl = ',';
	for (const char *c = ",;\t"; *c; c++) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			k += p[i] == *c;
		if (k > best) {
			best = k;
			dl = *c;
		}
	}
	return dl;
}

static void csv(struct odoc *d, const char *p, const char *end)
{
	char dl = delimiter(p, end);
	struct onode *t = od_add(d, d->root, ON_TABLE), *row = NULL;
	struct sbuf f = {0};
	while (t && p < end && od_ok(d)) {
		bool quoted = false;
		f.len = 0;
		/* one field */
		while (p < end) {
			char c = *p;
			if (quoted) {
				if (c == '"' && p + 1 < end && p[1] == '"') {
					cw_sb_put(&f, "\"", 1);
					p += 2;
					continue;
				}
				if (c == '"')
					quoted = false;
				else
					cw_sb_put(&f, p, 1);
				p++;
				continue;
			}
			if (c == '"' && !f.len) {
				quoted = true;
				p++;
				continue;
			}
			if (c == dl || c == '\n' || c == '\r')
				break;
			cw_sb_put(&f, p, 1);
			p++;
		}
		if (!row && !(row = od_add(d, t, ON_ROW)))
			break;
		struct onode *cell = od_add(d, row, ON_CELL);
		struct onode *para = cell ? od_add(d, cell, ON_PARA) : NULL;
		if (!para || !od_cell(d))
			break;
		cell->a = cell->b = 1;
		od_text(d, para, f.p ? f.p : "", f.len, 0);
		if (p < end && *p == dl) {
			p++;
			continue;
		}
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
		row = NULL;
	}
	if (f.oom)
		od_fail(d, CW_DOC_LIMIT, "out of memory");
	free(f.p);
}

struct cw_doc_result cw_office_text(struct odoc *d, const unsigned char *data, size_t len)
{
	const char *p = (const char *)data, *end = p + len;
	if (len >= 3 && !memcmp(p, "\xef\xbb\xbf", 3))
		p += 3;
	if (d->meta_only)
		return cw_doc_res(CW_DOC_OK, "%s", "");
	if (d->kind == CW_OFFICE_CSV)
		csv(d, p, end);
	else if (d->kind == CW_OFFICE_MARKDOWN)
		markdown(d, p, end);
	else
		plain(d, p, end);
	return od_ok(d) ? cw_doc_res(CW_DOC_OK, "%s", "") : d->st;
}
