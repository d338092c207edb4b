/*
 * Output writers: plain text, markdown, html and json from the model: the
 * classification comes from structure.c, tables from tables.c, what is
 * furniture from furniture.c, the order of blocks and the paragraphs that go
 * on past a break from flow.c.  Writers decide nothing about layout.
 */
#include "docconv_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_escaped_html(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			cw_sb_str(b, "&lt;");
			break;
		case '>':
			cw_sb_str(b, "&gt;");
			break;
		case '&':
			cw_sb_str(b, "&amp;");
			break;
		case '"':
			cw_sb_str(b, "&quot;");
			break;
		default:
			cw_sb_put(b, s, 1);
		}
	}
}

/* Join the lines of a paragraph: de-hyphenate "exam-" + "ple", else one space. */
static void join_line(struct sbuf *b, const char *t, bool *first)
{
	if (!*first) {
		if (b->len && b->p[b->len - 1] == '-' && islower((unsigned char)t[0]))
			b->p[--b->len] = '\0';
		else
			cw_sb_str(b, " ");
	}
	cw_sb_str(b, t);
	*first = false;
}

static bool skipped(const struct layout_opts *lo, bool furniture)
{
	return furniture && !lo->keep_furniture;
}

/* ---- text ------------------------------------------------------------------- */

/* A table as lines of tab-separated cells. */
static void text_table(struct sbuf *b, const struct ttable *t)
{
	for (int r = 0; r < t->rows; r++) {
		for (int c = 0; c < t->cols; c++) {
			const char *x = t->cells[r * t->cols + c].text;
			if (c)
				cw_sb_str(b, "\t");
			cw_sb_str(b, x ? x : "");
		}
		cw_sb_str(b, "\n");
	}
}

void cw_doc_write_text(struct sbuf *b, struct tpage *pages, int n, const struct layout_opts *lo)
{
	const char *sep = lo->page_separator ? lo->page_separator : "\f";
	for (int p = 0; p < n; p++) {
		if (p)
			cw_sb_str(b, sep);
		if (pages[p].ocr) {
			cw_sb_str(b, pages[p].ocr_text);
			continue;
		}
		bool any = false;
		for (int k = 0; k < pages[p].n; k++) {
			const struct tblock *blk = &pages[p].blocks[k];
			if (blk->kind == TB_FIGURE || skipped(lo, blk->furniture))
				continue;
			if (any)
				cw_sb_str(b, "\n");
			any = true;
			if (blk->kind == TB_TABLE) {
				text_table(b, blk->table);
				continue;
			}
			for (int l = 0; l < blk->n; l++) {
				if (skipped(lo, blk->lines[l].furniture))
					continue;
				cw_sb_str(b, blk->lines[l].text);
				cw_sb_str(b, "\n");
			}
		}
	}
}

/* ---- markdown and html ---------------------------------------------------------- */

/* The state of one markdown or html document being written. */
struct rich {
	struct sbuf *b;
	bool html;
	const struct styles *st;
	const struct layout_opts *lo;
	struct sbuf para;      /* the paragraph or list item being collected */
	bool first;            /* para has no line yet */
	bool in_list, item;    /* inside a list; para is an item */
	bool page_pending;     /* a page ended inside para: its separator comes after it */
};

static void page_break(struct rich *w)
{
	if (w->html) {
		cw_sb_str(w->b, "</div>\n<div class=\"page\">\n");
		return;
	}
	const char *sep = w->lo->page_separator ? w->lo->page_separator : "---";
	if (!*sep)
		return;
	cw_sb_str(w->b, "\n");
	cw_sb_str(w->b, sep);
	cw_sb_str(w->b, "\n\n");
}

/* The end of a list: markdown wants a blank line after it. */
static void end_list(struct rich *w)
{
	if (w->in_list && !w->html)
		cw_sb_str(w->b, "\n");
	w->in_list = false;
}

/* Write the paragraph (or list item) collected, empty it, and put a page break that came
 * inside it after it. */
static void flush(struct rich *w)
{
	struct sbuf *para = &w->para;
	if (para->p && para->len) {
		if (w->html) {
			cw_sb_str(w->b, w->item ? "<li>" : "<p>");
			put_escaped_html(w->b, para->p);
			cw_sb_str(w->b, w->item ? "</li>\n" : "</p>\n");
		} else {
			cw_sb_str(w->b, para->p);
			cw_sb_str(w->b, w->item ? "\n" : "\n\n");
		}
		para->len = 0;
		para->p[0] = '\0';
	}
	w->first = true;
	if (w->page_pending) {
		w->page_pending = false;
		end_list(w);
		page_break(w);
	}
}

static void heading(struct rich *w, int level, const char *text)
{
	if (w->html) {
		char tag[8];
		snprintf(tag, sizeof(tag), "<h%d>", level);
		cw_sb_str(w->b, tag);
		put_escaped_html(w->b, text);
		snprintf(tag, sizeof(tag), "</h%d>", level);
		cw_sb_str(w->b, tag);
		cw_sb_str(w->b, "\n");
	} else {
		char hashes[8] = "######";
		hashes[level] = '\0';
		cw_sb_str(w->b, hashes);
		cw_sb_str(w->b, " ");
		cw_sb_str(w->b, text);
		cw_sb_str(w->b, "\n\n");
	}
}

/* One line of a text block: a heading, the start of a list item, or more of the paragraph. */
static void rich_line(struct rich *w, const struct tline *t)
{
	int level = cw_doc_heading_level(w->st, t);
	char num[16];
	const char *rest = NULL, *marker = NULL;
	if (!level)
		marker = cw_doc_list_marker(t->text, num, &rest);
	if (level || marker)
		flush(w);
	if (level) {
		heading(w, level, t->text);
		w->in_list = w->item = false;
		return;
	}
	if (marker) {
		if (!w->html) {
			cw_sb_put(&w->para, marker, strlen(marker));
			cw_sb_str(&w->para, " ");
		}
		w->first = true;
		join_line(&w->para, rest, &w->first);
		w->in_list = w->item = true;
		return;
	}
	join_line(&w->para, t->text, &w->first);
}

static void md_cell(struct sbuf *b, const char *s)
{
	cw_sb_str(b, " ");
	for (; s && *s; s++) {
		if (*s == '|')
			cw_sb_str(b, "\\|");
		else
			cw_sb_put(b, s, 1);
	}
	cw_sb_str(b, " |");
}

/* A table: the first row is the header. */
static void rich_table(struct rich *w, const struct ttable *t)
{
	struct sbuf *b = w->b;
	if (w->html) {
		cw_sb_str(b, "<table>\n");
		for (int r = 0; r < t->rows; r++) {
			cw_sb_str(b, "<tr>");
			for (int c = 0; c < t->cols; c++) {
				const char *x = t->cells[r * t->cols + c].text;
				cw_sb_str(b, r ? "<td>" : "<th>");
				put_escaped_html(b, x ? x : "");
				cw_sb_str(b, r ? "</td>" : "</th>");
			}
			cw_sb_str(b, "</tr>\n");
		}
		cw_sb_str(b, "</table>\n");
		return;
	}
	for (int r = 0; r < t->rows; r++) {
		cw_sb_str(b, "|");
		for (int c = 0; c < t->cols; c++)
			md_cell(b, t->cells[r * t->cols + c].text);
		cw_sb_str(b, "\n");
		if (r == 0) {
			cw_sb_str(b, "|");
			for (int c = 0; c < t->cols; c++)
				cw_sb_str(b, " --- |");
			cw_sb_str(b, "\n");
		}
	}
	cw_sb_str(b, "\n");
}

static void rich_figure(struct rich *w, int page, int k)
{
	char ref[64];
	snprintf(ref, sizeof(ref), "page-%d-figure-%d", page, k);
	if (w->html) {
		cw_sb_str(w->b, "<figure id=\"");
		cw_sb_str(w->b, ref);
		cw_sb_str(w->b, "\"></figure>\n");
	} else {
		cw_sb_str(w->b, "![figure](#");
		cw_sb_str(w->b, ref);
		cw_sb_str(w->b, ")\n\n");
	}
}

static void rich_block(struct rich *w, const struct tpage *pg, const struct tblock *blk,
		       int *figures)
{
	if (skipped(w->lo, blk->furniture))
		return;
	if (blk->kind != TB_TEXT) {
		flush(w);
		end_list(w);
		if (blk->kind == TB_TABLE)
			rich_table(w, blk->table);
		else
			rich_figure(w, pg->number, ++*figures);
		return;
	}
	for (int l = 0; l < blk->n; l++)
		if (!skipped(w->lo, blk->lines[l].furniture))
			rich_line(w, &blk->lines[l]);
	if (blk->cont)
		return;  /* the paragraph goes on in the next block */
	flush(w);
	end_list(w);
	w->item = false;
}

/* Tesseract separates paragraphs with blank lines. */
static void rich_ocr(struct rich *w, const char *s)
{
	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t len = nl ? (size_t)(nl - s) : strlen(s);
		char *line = strndup(s, len);
		if (line && *line)
			join_line(&w->para, line, &w->first);
		else
			flush(w);
		free(line);
		s += len + (nl ? 1 : 0);
	}
	flush(w);
}

/* Markdown or HTML from the same classification (headings, paragraphs, list items, tables,
 * figures). */
void cw_doc_write_rich(struct sbuf *b, struct tpage *pages, int n, bool html,
		       const struct styles *st, const struct layout_opts *lo)
{
	struct rich w = {.b = b, .html = html, .st = st, .lo = lo, .first = true};
	if (html)
		cw_sb_str(b, "<div class=\"page\">\n");
	for (int p = 0; p < n; p++) {
		int figures = 0;
		if (p && w.para.len)
			w.page_pending = true;
		else if (p)
			page_break(&w);
		if (pages[p].ocr) {
			rich_ocr(&w, pages[p].ocr_text);
			continue;
		}
		for (int k = 0; k < pages[p].n; k++)
			rich_block(&w, &pages[p], &pages[p].blocks[k], &figures);
	}
	flush(&w);
	end_list(&w);
	if (html)
		cw_sb_str(b, "</div>\n");
	free(w.para.p);
}

/* ---- json ------------------------------------------------------------------- */

static json_t *rect(fz_rect r)
{
	return json_pack("[f,f,f,f]", r.x0, r.y0, r.x1, r.y1);
}

static json_t *json_line(const struct tline *t)
{
	json_t *spans = json_array();
	for (int i = 0; i < t->nspans; i++) {
		const struct tspan *s = &t->spans[i];
		json_array_append_new(spans, json_pack(
			"{s:s,s:s,s:f,s:{s:b,s:b,s:b},s:o}", "text", s->text, "font", s->font,
			"size", s->size, "flags", "bold", s->bold, "italic", s->italic,
			"monospaced", s->mono, "bbox", rect(s->bbox)));
	}
	json_t *l = json_pack("{s:o,s:o}", "bbox", rect(t->bbox), "spans", spans);
	if (t->furniture)
		json_object_set_new(l, "furniture", json_true());
	return l;
}

static json_t *json_table(const struct tblock *blk)
{
	const struct ttable *t = blk->table;
	json_t *rows = json_array();
	for (int r = 0; r < t->rows; r++) {
		json_t *cells = json_array();
		for (int c = 0; c < t->cols; c++) {
			const struct tcell *x = &t->cells[r * t->cols + c];
			bool box = fz_is_valid_rect(x->bbox);
			json_array_append_new(cells, json_pack("{s:s,s:o}", "text",
							       x->text ? x->text : "", "bbox",
							       box ? rect(x->bbox) : json_null()));
		}
		json_array_append_new(rows, json_pack("{s:o}", "cells", cells));
	}
	return json_pack("{s:s,s:o,s:b,s:o}", "type", "table", "bbox", rect(blk->bbox), "ruled",
			 t->ruled, "rows", rows);
}

/* A page's blocks in reading order: text (lines, spans), table (rows, cells), image. */
json_t *cw_doc_json_blocks(const struct tpage *p)
{
	json_t *blocks = json_array();
	for (int k = 0; k < p->n; k++) {
		const struct tblock *blk = &p->blocks[k];
		json_t *j;
		if (blk->kind == TB_TABLE) {
			j = json_table(blk);
		} else if (blk->kind == TB_FIGURE) {
			j = json_pack("{s:s,s:o}", "type", "image", "bbox", rect(blk->bbox));
		} else {
			json_t *lines = json_array();
			for (int l = 0; l < blk->n; l++)
				json_array_append_new(lines, json_line(&blk->lines[l]));
			j = json_pack("{s:s,s:o,s:o}", "type", "text", "bbox", rect(blk->bbox),
				      "lines", lines);
			if (blk->cont)
				json_object_set_new(j, "continues", json_true());
		}
		if (blk->furniture)
			json_object_set_new(j, "furniture", json_true());
		json_array_append_new(blocks, j);
	}
	return blocks;
}
