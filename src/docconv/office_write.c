/*
 * The office tree in the four output formats.  Text, markdown and html share
 * one walk (the format decides the markup); json is built as objects.
 * Sections (slides, sheets) play the part of pages: form feeds in text,
 * `---` in markdown, one <section> each in html, one page object in json.
 * Tables are laid on a grid first, so merged cells keep their columns in
 * text and markdown, which have no spans.
 */
#include "office.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct w {
	struct sbuf *b;
	enum cw_doc_format fmt;
};

static void put(struct w *w, const char *s)
{
	cw_sb_str(w->b, s);
}

static void html_esc(struct w *w, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': put(w, "&lt;"); break;
		case '>': put(w, "&gt;"); break;
		case '&': put(w, "&amp;"); break;
		case '"': put(w, "&quot;"); break;
		default: cw_sb_put(w->b, s, 1);
		}
	}
}

/* Markdown: characters that would start markup; in cells also the pipe; new lines go. */
static void md_esc(struct w *w, const char *s, bool cell)
{
	for (; *s; s++) {
		if (strchr("\\*_`[]", *s) || (cell && *s == '|'))
			put(w, "\\");
		if (*s == '\n' || *s == '\r')
			put(w, " ");
		else
			cw_sb_put(w->b, s, 1);
	}
}

static void text_out(struct w *w, const char *s, bool cell)
{
	if (w->fmt == CW_FMT_HTML)
		html_esc(w, s);
	else if (w->fmt == CW_FMT_MARKDOWN)
		md_esc(w, s, cell);
	else
		put(w, s);
}

static const char *basename_of(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* ---- inlines ----------------------------------------------------------------------- */

static void inlines(struct w *w, const struct onode *n, const char *indent, bool cell);

/* A run with its emphasis; markdown keeps the markers tight around the words. */
static void run(struct w *w, const struct onode *t, bool cell)
{
	const char *s = t->text ? t->text : "";
	unsigned f = t->flags & (OF_BOLD | OF_ITALIC);
	if (!f || w->fmt == CW_FMT_TEXT) {
		text_out(w, s, cell);
		return;
	}
	size_t n = strlen(s), lead = strspn(s, " \t"), end = n;
	while (end > lead && (s[end - 1] == ' ' || s[end - 1] == '\t'))
		end--;
	if (end == lead) {
		text_out(w, s, cell);
		return;
	}
	static const char *const md[] = {"", "**", "*", "***"};
	static const char *const ho[] = {"", "<strong>", "<em>", "<strong><em>"};
	static const char *const hc[] = {"", "</strong>", "</em>", "</em></strong>"};
	char *mid = strndup(s + lead, end - lead);
	if (!mid) {
		w->b->oom = true;
		return;
	}
	cw_sb_put(w->b, s, lead);
	put(w, w->fmt == CW_FMT_HTML ? ho[f] : md[f]);
	text_out(w, mid, cell);
	put(w, w->fmt == CW_FMT_HTML ? hc[f] : md[f]);
	put(w, s + end);
	free(mid);
}

static void image(struct w *w, const struct onode *n)
{
	const char *alt = n->text ? n->text : "";
	const char *src = n->part ? basename_of(n->part) : n->href ? n->href : "image";
	if (w->fmt == CW_FMT_HTML) {
		put(w, "<img alt=\"");
		html_esc(w, alt);
		put(w, "\" src=\"");
		html_esc(w, src);
		put(w, "\">");
	} else if (w->fmt == CW_FMT_MARKDOWN) {
		put(w, "![");
		md_esc(w, alt, true);
		put(w, "](");
		put(w, src);
		put(w, ")");
	} else {
		put(w, "[image");
		if (*alt) {
			put(w, ": ");
			put(w, alt);
		}
		put(w, "]");
	}
}

static void inline_node(struct w *w, const struct onode *c, const char *indent, bool cell)
{
	switch (c->type) {
	case ON_TEXT:
		run(w, c, cell);
		break;
	case ON_LINK:
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<a href=\"");
			html_esc(w, c->href ? c->href : "");
			put(w, "\">");
			inlines(w, c, indent, cell);
			put(w, "</a>");
		} else if (w->fmt == CW_FMT_MARKDOWN && c->href) {
			put(w, "[");
			inlines(w, c, indent, cell);
			put(w, "](");
			for (const char *s = c->href; *s; s++) {
				if (*s == '(' || *s == ')' || *s == ' ')
					put(w, *s == ' ' ? "%20" : *s == '(' ? "%28" : "%29");
				else
					cw_sb_put(w->b, s, 1);
			}
			put(w, ")");
		} else {
			inlines(w, c, indent, cell);
		}
		break;
	case ON_IMAGE:
		image(w, c);
		break;
	case ON_NOTEREF:
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<sup><a href=\"#fn-");
			html_esc(w, c->text);
			put(w, "\">");
			html_esc(w, c->text);
			put(w, "</a></sup>");
		} else {
			put(w, w->fmt == CW_FMT_MARKDOWN ? "[^" : "[");
			put(w, c->text);
			put(w, "]");
		}
		break;
	case ON_BREAK:
		if (w->fmt == CW_FMT_HTML)
			put(w, "<br>");
		else if (cell)
			put(w, w->fmt == CW_FMT_MARKDOWN ? "<br>" : " ");
		else {
			put(w, w->fmt == CW_FMT_MARKDOWN ? "\\\n" : "\n");
			put(w, indent);
		}
		break;
	default:
		break;
	}
}

static void inlines(struct w *w, const struct onode *n, const char *indent, bool cell)
{
	for (const struct onode *c = n->first; c; c = c->next)
		inline_node(w, c, indent, cell);
}

/* The OCR text of a paragraph's images, as paragraphs of their own. */
static void image_ocr(struct w *w, const struct onode *n, const char *indent)
{
	for (const struct onode *c = n->first; c; c = c->next) {
		if (c->type == ON_LINK)
			image_ocr(w, c, indent);
		if (c->type != ON_IMAGE || !c->ocr || !*c->ocr)
			continue;
		put(w, w->fmt == CW_FMT_HTML ? "<p class=\"ocr\">" : "\n");
		if (w->fmt != CW_FMT_HTML)
			put(w, indent);
		for (const char *s = c->ocr; *s; s++) {
			char ch[2] = {*s == '\n' ? ' ' : *s, 0};
			text_out(w, ch, false);
		}
		put(w, w->fmt == CW_FMT_HTML ? "</p>\n" : "\n");
	}
}

/* ---- tables ---------------------------------------------------------------------------- */

static const struct onode covered;

struct grid {
	int rows, cols;
	const struct onode **at; /* rows * cols: a cell, &covered under a span, NULL empty */
};

/* Place the cells on the grid (at NULL: only count the columns). */
static int lay(const struct onode *t, const struct onode **at, int cols, int rows)
{
	int *busy = NULL, nbusy = 0, maxc = 0, r = 0;
	for (const struct onode *row = t->first; row; row = row->next, r++) {
		int c = 0;
		for (const struct onode *cell = row->first; cell; cell = cell->next) {
			while (c < nbusy && busy[c] > 0)
				c++;
			int cs = cell->a > 0 ? cell->a : 1, rs = cell->b > 0 ? cell->b : 1;
			if (c + cs > nbusy) {
				int *nb = realloc(busy, (size_t)(c + cs) * sizeof(int));
				if (!nb) {
					free(busy);
					return -1;
				}
				memset(nb + nbusy, 0, (size_t)(c + cs - nbusy) * sizeof(int));
				busy = nb;
				nbusy = c + cs;
			}
			for (int k = 0; k < cs; k++) {
				busy[c + k] = rs;
				for (int y = r; at && y < r + rs && y < rows && c + k < cols; y++)
					at[(size_t)y * (size_t)cols + (size_t)(c + k)] =
						y == r && k == 0 ? cell : &covered;
			}
			c += cs;
			if (c > maxc)
				maxc = c;
		}
		for (int k = 0; k < nbusy; k++)
			if (busy[k] > 0)
				busy[k]--;
	}
	free(busy);
	return maxc;
}

static bool grid_of(const struct onode *t, struct grid *g)
{
	g->rows = 0;
	for (const struct onode *row = t->first; row; row = row->next)
		g->rows++;
	g->cols = lay(t, NULL, 0, 0);
	g->at = NULL;
	if (g->cols < 0 || (double)g->rows * g->cols > 8e6)
		return false;
	g->at = calloc((size_t)g->rows * (size_t)g->cols + 1, sizeof(*g->at));
	if (!g->at)
		return false;
	lay(t, g->at, g->cols, g->rows);
	return true;
}

static void blocks(struct w *w, const struct onode *parent, const char *indent);

/* A cell's blocks on one line: paragraphs joined by <br> (markdown) or a space (text). */
static void cell_line(struct w *w, const struct onode *n, bool *first)
{
	for (const struct onode *c = n->first; c; c = c->next) {
		if (c->type == ON_PARA || c->type == ON_HEADING || c->type == ON_CODE) {
			if (od_empty(c))
				continue;
			if (!*first)
				put(w, w->fmt == CW_FMT_MARKDOWN ? "<br>" : " ");
			*first = false;
			if (c->type == ON_CODE)
				text_out(w, c->text ? c->text : "", true);
			else
				inlines(w, c, "", true);
		} else {
			cell_line(w, c, first);
		}
	}
}

static void table_flat(struct w *w, const struct onode *t, const char *indent)
{
	struct grid g;
	bool ok = grid_of(t, &g);
	for (int r = 0; ok && r < g.rows; r++) {
		put(w, indent);
		if (w->fmt == CW_FMT_MARKDOWN)
			put(w, "|");
		for (int c = 0; c < g.cols; c++) {
			const struct onode *cell = g.at[(size_t)r * (size_t)g.cols + (size_t)c];
			bool first = true;
			if (w->fmt == CW_FMT_MARKDOWN)
				put(w, " ");
			else if (c)
				put(w, "\t");
			if (cell && cell != &covered)
				cell_line(w, cell, &first);
			if (w->fmt == CW_FMT_MARKDOWN)
				put(w, " |");
		}
		put(w, "\n");
		if (r == 0 && w->fmt == CW_FMT_MARKDOWN) {
			put(w, indent);
			put(w, "|");
			for (int c = 0; c < g.cols; c++)
				put(w, " --- |");
			put(w, "\n");
		}
	}
	if (!ok) {
		/* too wide to lay out: one line per row, cells in order */
		for (const struct onode *row = t->first; row; row = row->next) {
			bool first = true;
			put(w, indent);
			for (const struct onode *cell = row->first; cell; cell = cell->next) {
				if (!first)
					put(w, "\t");
				cell_line(w, cell, &first);
				first = false;
			}
			put(w, "\n");
		}
	}
	free(g.at);
}

static void table_html(struct w *w, const struct onode *t)
{
	char attr[64];
	put(w, "<table>\n");
	for (const struct onode *row = t->first; row; row = row->next) {
		put(w, "<tr>");
		for (const struct onode *cell = row->first; cell; cell = cell->next) {
			bool head = row == t->first;
			put(w, head ? "<th" : "<td");
			if (cell->a > 1) {
				snprintf(attr, sizeof(attr), " colspan=\"%d\"", cell->a);
				put(w, attr);
			}
			if (cell->b > 1) {
				snprintf(attr, sizeof(attr), " rowspan=\"%d\"", cell->b);
				put(w, attr);
			}
			put(w, ">");
			bool first = true;
			for (const struct onode *c = cell->first; c; c = c->next) {
				/* a single paragraph stays bare, as people write tables */
				if (c->type == ON_PARA && !cell->first->next) {
					inlines(w, c, "", true);
				} else {
					if (first)
						put(w, "\n");
					blocks(w, cell, "");
					break;
				}
				first = false;
			}
			put(w, head ? "</th>" : "</td>");
		}
		put(w, "</tr>\n");
	}
	put(w, "</table>\n");
}

/* ---- blocks -------------------------------------------------------------------------- */

static void list(struct w *w, const struct onode *l, const char *indent);

static void block(struct w *w, const struct onode *n, const char *indent)
{
	char tag[16];
	switch (n->type) {
	case ON_HEADING: {
		int lv = n->level < 1 ? 1 : n->level > 6 ? 6 : n->level;
		if (w->fmt == CW_FMT_HTML) {
			snprintf(tag, sizeof(tag), "<h%d>", lv);
			put(w, tag);
			inlines(w, n, "", true);
			snprintf(tag, sizeof(tag), "</h%d>\n", lv);
			put(w, tag);
			break;
		}
		put(w, indent);
		if (w->fmt == CW_FMT_MARKDOWN) {
			static const char hashes[] = "######";
			cw_sb_put(w->b, hashes, (size_t)lv);
			put(w, " ");
		}
		inlines(w, n, indent, true);
		put(w, "\n");
		break;
	}
	case ON_PARA:
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<p>");
			inlines(w, n, "", false);
			put(w, "</p>\n");
		} else {
			put(w, indent);
			inlines(w, n, indent, false);
			put(w, "\n");
		}
		image_ocr(w, n, indent);
		break;
	case ON_CODE:
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<pre><code>");
			html_esc(w, n->text ? n->text : "");
			put(w, "</code></pre>\n");
			break;
		}
		if (w->fmt == CW_FMT_MARKDOWN) {
			put(w, indent);
			put(w, "```\n");
		}
		for (const char *s = n->text ? n->text : ""; *s;) {
			const char *nl = strchr(s, '\n');
			size_t k = nl ? (size_t)(nl - s) : strlen(s);
			put(w, indent);
			cw_sb_put(w->b, s, k);
			put(w, "\n");
			s += k + (nl ? 1 : 0);
		}
		if (w->fmt == CW_FMT_MARKDOWN) {
			put(w, indent);
			put(w, "```\n");
		}
		break;
	case ON_LIST:
		list(w, n, indent);
		break;
	case ON_TABLE:
		if (w->fmt == CW_FMT_HTML)
			table_html(w, n);
		else
			table_flat(w, n, indent);
		break;
	default:
		blocks(w, n, indent);
		break;
	}
}

static void list(struct w *w, const struct onode *l, const char *indent)
{
	bool ordered = l->flags & OF_ORDERED;
	int num = l->a > 0 ? l->a : 1;
	if (w->fmt == CW_FMT_HTML) {
		char open[48];
		if (ordered && num != 1)
			snprintf(open, sizeof(open), "<ol start=\"%d\">\n", num);
		else
			snprintf(open, sizeof(open), "%s", ordered ? "<ol>\n" : "<ul>\n");
		put(w, open);
		for (const struct onode *it = l->first; it; it = it->next) {
			put(w, "<li>");
			const struct onode *c = it->first;
			if (c && c->type == ON_PARA) {
				inlines(w, c, "", false);
				c = c->next;
			}
			if (c) {
				put(w, "\n");
				for (; c; c = c->next)
					block(w, c, "");
			}
			put(w, "</li>\n");
		}
		put(w, ordered ? "</ol>\n" : "</ul>\n");
		return;
	}
	for (const struct onode *it = l->first; it; it = it->next, num++) {
		char marker[24], pad[64];
		if (ordered)
			snprintf(marker, sizeof(marker), "%d. ", num);
		else
			snprintf(marker, sizeof(marker), "- ");
		snprintf(pad, sizeof(pad), "%s%*s", indent, (int)strlen(marker), "");
		put(w, indent);
		put(w, marker);
		const struct onode *c = it->first;
		if (c && c->type == ON_PARA) {
			inlines(w, c, pad, false);
			put(w, "\n");
			image_ocr(w, c, pad);
			c = c->next;
		} else {
			put(w, "\n");
		}
		for (; c; c = c->next) {
			if (c->type != ON_LIST)
				put(w, "\n");
			block(w, c, strlen(pad) < 48 ? pad : indent);
		}
	}
}

/* Blocks separated by a blank line (html needs no separator). */
static void blocks(struct w *w, const struct onode *parent, const char *indent)
{
	bool first = true;
	for (const struct onode *c = parent->first; c; c = c->next) {
		if (c->type == ON_NOTES || (c->type == ON_PARA && od_empty(c)))
			continue;
		if (!first && w->fmt != CW_FMT_HTML)
			put(w, "\n");
		block(w, c, indent);
		first = false;
	}
}

/* ---- sections and footnotes ------------------------------------------------------------ */

static void notes_of(struct w *w, const struct onode *sec)
{
	for (const struct onode *c = sec->first; c; c = c->next) {
		if (c->type != ON_NOTES || od_empty(c))
			continue;
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<aside class=\"notes\">\n");
			blocks(w, c, "");
			put(w, "</aside>\n");
		} else {
			put(w, w->fmt == CW_FMT_MARKDOWN ? "\n> **Notes:**\n>\n" : "\nNotes:\n");
			blocks(w, c, w->fmt == CW_FMT_MARKDOWN ? "> " : "");
		}
	}
}

static void section(struct w *w, const struct onode *s, int index)
{
	if (w->fmt == CW_FMT_HTML) {
		char open[64];
		snprintf(open, sizeof(open), "<section class=\"page\" id=\"page-%d\">\n", index);
		put(w, open);
	} else if (index > 1) {
		put(w, w->fmt == CW_FMT_MARKDOWN ? "\n---\n\n" : "\f");
	}
	if (s->text && *s->text) {
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<h1>");
			html_esc(w, s->text);
			put(w, "</h1>\n");
		} else {
			if (w->fmt == CW_FMT_MARKDOWN)
				put(w, "# ");
			text_out(w, s->text, true);
			put(w, "\n");
			if (s->first)
				put(w, "\n");
		}
	}
	blocks(w, s, "");
	notes_of(w, s);
	if (w->fmt == CW_FMT_HTML)
		put(w, "</section>\n");
}

static void footnotes(struct w *w, const struct odoc *d)
{
	if (!d->notes->first)
		return;
	if (w->fmt == CW_FMT_HTML)
		put(w, "<section class=\"footnotes\">\n<ol>\n");
	else
		put(w, w->fmt == CW_FMT_MARKDOWN ? "\n" : "\n---\n");
	for (const struct onode *f = d->notes->first; f; f = f->next) {
		if (w->fmt == CW_FMT_HTML) {
			put(w, "<li id=\"fn-");
			html_esc(w, f->text);
			put(w, "\">");
			bool first = true;
			cell_line(w, f, &first);
			put(w, "</li>\n");
			continue;
		}
		put(w, w->fmt == CW_FMT_MARKDOWN ? "[^" : "[");
		put(w, f->text);
		put(w, w->fmt == CW_FMT_MARKDOWN ? "]: " : "] ");
		bool first = true;
		cell_line(w, f, &first);
		put(w, "\n");
	}
	if (w->fmt == CW_FMT_HTML)
		put(w, "</ol>\n</section>\n");
}

static bool selected(const int *sel, int nsel, int number)
{
	if (!sel)
		return true;
	for (int i = 0; i < nsel; i++)
		if (sel[i] == number)
			return true;
	return false;
}

void cw_office_write(struct sbuf *b, const struct odoc *d, enum cw_doc_format fmt,
		     const int *sel, int nsel)
{
	struct w w = {b, fmt};
	int k = 0, shown = 0;
	bool sections = d->root->first && d->root->first->type == ON_SECTION;
	if (!sections) {
		blocks(&w, d->root, "");
	} else {
		for (const struct onode *s = d->root->first; s; s = s->next)
			if (selected(sel, nsel, ++k))
				section(&w, s, ++shown);
	}
	footnotes(&w, d);
}

/* ---- json ------------------------------------------------------------------------------ */

static json_t *jblocks(const struct onode *parent);

static void plain(const struct onode *n, struct sbuf *b)
{
	for (const struct onode *c = n->first; c; c = c->next) {
		if (c->type == ON_TEXT)
			cw_sb_str(b, c->text ? c->text : "");
		else if (c->type == ON_BREAK)
			cw_sb_str(b, "\n");
		else if (c->type == ON_NOTEREF)
			cw_sb_str(b, ""); /* the reference is a span of its own */
		else if (c->type == ON_CODE)
			cw_sb_str(b, c->text ? c->text : "");
		else {
			if (b->len && (c->type == ON_PARA || c->type == ON_HEADING) &&
			    b->p[b->len - 1] != '\n')
				cw_sb_str(b, "\n");
			plain(c, b);
		}
	}
}

static json_t *jtext(const struct onode *n)
{
	struct sbuf b = {0};
	plain(n, &b);
	json_t *s = json_stringn(b.p ? b.p : "", b.len);
	free(b.p);
	return s ? s : json_string("");
}

static void jspans(const struct onode *n, const char *href, json_t *out)
{
	for (const struct onode *c = n->first; c; c = c->next) {
		json_t *s = NULL;
		if (c->type == ON_TEXT) {
			s = json_pack("{s:s,s:b,s:b}", "text", c->text ? c->text : "", "bold",
				      !!(c->flags & OF_BOLD), "italic", !!(c->flags & OF_ITALIC));
			if (s && href)
				json_object_set_new(s, "href", json_string(href));
		} else if (c->type == ON_LINK) {
			jspans(c, c->href ? c->href : "", out);
		} else if (c->type == ON_IMAGE) {
			s = json_pack("{s:s,s:s?,s:s?}", "image", c->text ? c->text : "", "part",
				      c->part, "ocr_text", c->ocr);
		} else if (c->type == ON_NOTEREF) {
			s = json_pack("{s:s}", "footnote", c->text ? c->text : "");
		} else if (c->type == ON_BREAK) {
			s = json_pack("{s:s,s:b,s:b}", "text", "\n", "bold", 0, "italic", 0);
		}
		if (s)
			json_array_append_new(out, s);
	}
}

static json_t *jblock(const struct onode *n)
{
	json_t *o = NULL, *spans;
	switch (n->type) {
	case ON_HEADING:
	case ON_PARA:
		if (n->type == ON_PARA && od_empty(n))
			return NULL;
		spans = json_array();
		jspans(n, NULL, spans);
		o = json_pack("{s:s,s:o,s:o}", "type", n->type == ON_PARA ? "paragraph" : "heading",
			      "text", jtext(n), "spans", spans);
		if (o && n->type == ON_HEADING)
			json_object_set_new(o, "level", json_integer(n->level));
		return o;
	case ON_CODE:
		return json_pack("{s:s,s:s}", "type", "code", "text", n->text ? n->text : "");
	case ON_LIST: {
		json_t *items = json_array();
		for (const struct onode *it = n->first; it; it = it->next)
			json_array_append_new(items, json_pack("{s:o}", "blocks", jblocks(it)));
		return json_pack("{s:s,s:b,s:i,s:o}", "type", "list", "ordered",
				 !!(n->flags & OF_ORDERED), "start", n->a > 0 ? n->a : 1, "items",
				 items);
	}
	case ON_TABLE: {
		json_t *rows = json_array();
		for (const struct onode *r = n->first; r; r = r->next) {
			json_t *cells = json_array();
			for (const struct onode *c = r->first; c; c = c->next)
				json_array_append_new(cells, json_pack(
					"{s:o,s:i,s:i}", "text", jtext(c), "colspan",
					c->a > 0 ? c->a : 1, "rowspan", c->b > 0 ? c->b : 1));
			json_array_append_new(rows, cells);
		}
		struct grid g;
		int cols = grid_of(n, &g) ? g.cols : -1;
		free(g.at);
		return json_pack("{s:s,s:i,s:o}", "type", "table", "columns", cols, "rows", rows);
	}
	default:
		return json_pack("{s:s,s:o}", "type", "group", "blocks", jblocks(n));
	}
}

static json_t *jblocks(const struct onode *parent)
{
	json_t *a = json_array();
	for (const struct onode *c = parent->first; c; c = c->next) {
		if (c->type == ON_NOTES)
			continue;
		json_t *b = jblock(c);
		if (b)
			json_array_append_new(a, b);
	}
	return a;
}

json_t *cw_office_json(const struct odoc *d, const int *sel, int nsel)
{
	json_t *pages = json_array(), *notes = json_array();
	const struct onode *first = d->root->first;
	if (!first || first->type != ON_SECTION) {
		json_array_append_new(pages, json_pack("{s:i,s:o}", "number", 1, "blocks",
						       jblocks(d->root)));
	} else {
		int k = 0;
		for (const struct onode *s = first; s; s = s->next) {
			if (!selected(sel, nsel, ++k))
				continue;
			json_t *p = json_pack("{s:i,s:s?,s:o}", "number", k, "title", s->text,
					      "blocks", jblocks(s));
			for (const struct onode *c = s->first; p && c; c = c->next)
				if (c->type == ON_NOTES)
					json_object_set_new(p, "notes", jblocks(c));
			json_array_append_new(pages, p);
		}
	}
	for (const struct onode *f = d->notes->first; f; f = f->next)
		json_array_append_new(notes, json_pack("{s:s,s:o,s:o}", "label", f->text, "text",
						       jtext(f), "blocks", jblocks(f)));
	return json_pack("{s:o,s:o}", "pages", pages, "footnotes", notes);
}
