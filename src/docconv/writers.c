/*
 * Output writers: plain text, markdown and html from the text model (the
 * classification comes from structure.c), and the json format's blocks,
 * lines and spans straight from MuPDF's structured text.
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

void cw_doc_write_text(struct sbuf *b, struct tpage *pages, int n)
{
	for (int p = 0; p < n; p++) {
		if (p)
			cw_sb_str(b, "\f");
		if (pages[p].ocr) {
			cw_sb_str(b, pages[p].ocr_text);
			continue;
		}
		for (int k = 0; k < pages[p].n; k++) {
			if (k)
				cw_sb_str(b, "\n");
			for (int l = 0; l < pages[p].blocks[k].n; l++) {
				cw_sb_str(b, pages[p].blocks[k].lines[l].text);
				cw_sb_str(b, "\n");
			}
		}
	}
}

/* Write the paragraph (or list item) collected in para, and empty it. */
static void flush_para(struct sbuf *b, struct sbuf *para, bool html, bool item)
{
	if (!para->p || !para->len)
		return;
	if (html) {
		cw_sb_str(b, item ? "<li>" : "<p>");
		put_escaped_html(b, para->p);
		cw_sb_str(b, item ? "</li>\n" : "</p>\n");
	} else {
		cw_sb_str(b, para->p);
		cw_sb_str(b, item ? "\n" : "\n\n");
	}
	para->len = 0;
	para->p[0] = '\0';
}

/* Markdown or HTML from the same classification (headings, paragraphs, list items). */
void cw_doc_write_rich(struct sbuf *b, struct tpage *pages, int n, bool html)
{
	struct styles st;
	cw_doc_find_styles(pages, n, &st);
	for (int p = 0; p < n; p++) {
		if (html)
			cw_sb_str(b, p ? "</div>\n<div class=\"page\">\n"
				       : "<div class=\"page\">\n");
		else if (p)
			cw_sb_str(b, "\n---\n\n");
		if (pages[p].ocr) {
			/* Tesseract separates paragraphs with blank lines */
			const char *s = pages[p].ocr_text;
			struct sbuf para = {0};
			bool first = true;
			while (*s) {
				const char *nl = strchr(s, '\n');
				size_t len = nl ? (size_t)(nl - s) : strlen(s);
				char *line = strndup(s, len);
				if (line && *line) {
					join_line(&para, line, &first);
				} else {
					flush_para(b, &para, html, false);
					first = true;
				}
				free(line);
				s += len + (nl ? 1 : 0);
			}
			flush_para(b, &para, html, false);
			free(para.p);
			continue;
		}
		for (int k = 0; k < pages[p].n; k++) {
			struct tblock *blk = &pages[p].blocks[k];
			struct sbuf para = {0};
			bool first = true, in_list = false;
			for (int l = 0; l <= blk->n; l++) {
				struct tline *t = l < blk->n ? &blk->lines[l] : NULL;
				int level = t ? cw_doc_heading_level(&st, t) : 0;
				char num[16];
				const char *rest = NULL;
				const char *marker = NULL;
				if (t && !level)
					marker = cw_doc_list_marker(t->text, num, &rest);
				/* a heading, a new list item or the end closes the paragraph */
				if (!t || level || marker) {
					flush_para(b, &para, html, in_list);
					first = true;
				}
				if (!t)
					break;
				if (level) {
					char hashes[8] = "######";
					if (html) {
						char tag[8];
						snprintf(tag, sizeof(tag), "<h%d>", level);
						cw_sb_str(b, tag);
						put_escaped_html(b, t->text);
						snprintf(tag, sizeof(tag), "</h%d>", level);
						cw_sb_str(b, tag);
						cw_sb_str(b, "\n");
					} else {
						hashes[level] = '\0';
						cw_sb_str(b, hashes);
						cw_sb_str(b, " ");
						cw_sb_str(b, t->text);
						cw_sb_str(b, "\n\n");
					}
					in_list = false;
					continue;
				}
				if (marker) {
					if (!html) {
						cw_sb_put(&para, marker, strlen(marker));
						cw_sb_str(&para, " ");
					}
					first = true;
					join_line(&para, rest, &first);
					in_list = true;
					continue;
				}
				join_line(&para, t->text, &first);
			}
			if (!html && in_list)
				cw_sb_str(b, "\n");
			free(para.p);
		}
	}
	if (html)
		cw_sb_str(b, "</div>\n");
}

/* ---- json ------------------------------------------------------------------- */

static json_t *flags_of(fz_context *ctx, fz_font *f)
{
	return json_pack("{s:b,s:b,s:b}", "bold", fz_font_is_bold(ctx, f), "italic",
			 fz_font_is_italic(ctx, f), "monospaced", fz_font_is_monospaced(ctx, f));
}

static json_t *rect(fz_rect r)
{
	return json_pack("[f,f,f,f]", r.x0, r.y0, r.x1, r.y1);
}

/* pages -> blocks -> lines -> spans (runs of one font and size) */
json_t *cw_doc_json_blocks(fz_context *ctx, fz_stext_page *sp)
{
	json_t *blocks = json_array();
	for (fz_stext_block *b = sp->first_block; b; b = b->next) {
		if (b->type == FZ_STEXT_BLOCK_IMAGE) {
			json_array_append_new(blocks, json_pack("{s:s,s:o}", "type", "image",
								"bbox", rect(b->bbox)));
			continue;
		}
		if (b->type != FZ_STEXT_BLOCK_TEXT)
			continue;
		json_t *lines = json_array();
		for (fz_stext_line *l = b->u.t.first_line; l; l = l->next) {
			json_t *spans = json_array();
			fz_stext_char *c = l->first_char;
			while (c) {
				fz_font *font = c->font;
				float size = c->size;
				fz_rect box = fz_rect_from_quad(c->quad);
				struct sbuf s = {0};
				while (c && c->font == font && c->size == size) {
					cw_sb_rune(&s, c->c);
					box = fz_union_rect(box, fz_rect_from_quad(c->quad));
					c = c->next;
				}
				json_array_append_new(spans, json_pack(
					"{s:s,s:s,s:f,s:o,s:o}", "text", s.p ? s.p : "",
					"font", fz_font_name(ctx, font), "size", size,
					"flags", flags_of(ctx, font), "bbox", rect(box)));
				free(s.p);
			}
			json_array_append_new(lines, json_pack("{s:o,s:o}", "bbox", rect(l->bbox),
							       "spans", spans));
		}
		json_array_append_new(blocks, json_pack("{s:s,s:o,s:o}", "type", "text", "bbox",
							rect(b->bbox), "lines", lines));
	}
	return blocks;
}

