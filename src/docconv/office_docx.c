/*
 * DOCX (WordprocessingML): the main part found through the package
 * relationships; headings from outline levels (the paragraph's or its
 * style's, or a "heading N" style name); lists from the numbering
 * definitions (numPr, own or inherited from the style); tables with
 * gridSpan and vMerge turned into colspan and rowspan; runs with bold and
 * italic, hyperlinks, drawings as images with their alt text, footnotes and
 * endnotes collected in reference order.
 */
#include "office.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct wstyle {
	const char *id, *name, *based; /* point into the styles part */
	int outline;                   /* -1: none */
	int num_id, ilvl;              /* -1: none */
	unsigned flags;                /* character styles: OF_BOLD, OF_ITALIC */
};

struct wlevel {
	bool ordered;
	int start;
};

struct wnum {
	long id, abs;
};

struct wabs {
	long id;
	struct wlevel lv[9];
};

struct docx {
	struct odoc *d;
	struct ozip *z;
	struct orels rels;
	xmlDoc *styles_doc, *num_doc, *notes_doc[2];
	struct wstyle *styles;
	int nstyles;
	struct wnum *nums;
	int nnums;
	struct wabs *abs;
	int nabs;
	struct olists lists;
	bool in_note;
};

/* ---- styles and numbering ------------------------------------------------------------ */

static const char *child_val(const xmlNode *n, const char *local)
{
	return ox_attr(ox_child(n, local), "val");
}

static void read_styles(struct docx *x, const char *part)
{
	xmlNode *root = x->styles_doc ? xmlDocGetRootElement(x->styles_doc) : NULL;
	int n = 0;
	(void)part;
	for (xmlNode *s = root ? root->children : NULL; s; s = s->next)
		n += ox_is(s, "style");
	x->styles = calloc((size_t)(n ? n : 1), sizeof(*x->styles));
	if (!x->styles)
		return;
	for (xmlNode *s = root ? root->children : NULL; s; s = s->next) {
		if (!ox_is(s, "style") || !ox_attr(s, "styleId"))
			continue;
		struct wstyle *st = &x->styles[x->nstyles++];
		xmlNode *ppr = ox_child(s, "pPr"), *rpr = ox_child(s, "rPr");
		xmlNode *num = ox_child(ppr, "numPr");
		st->id = ox_attr(s, "styleId");
		st->name = child_val(s, "name");
		st->based = child_val(s, "basedOn");
		st->outline = (int)ox_long(ox_child(ppr, "outlineLvl"), "val", -1);
		st->num_id = (int)ox_long(ox_child(num, "numId"), "val", -1);
		st->ilvl = (int)ox_long(ox_child(num, "ilvl"), "val", -1);
		if (ox_child(rpr, "b") && ox_on(ox_child(rpr, "b")))
			st->flags |= OF_BOLD;
		if (ox_child(rpr, "i") && ox_on(ox_child(rpr, "i")))
			st->flags |= OF_ITALIC;
	}
}

static const struct wstyle *style(const struct docx *x, const char *id)
{
	for (int i = 0; id && i < x->nstyles; i++)
		if (!strcmp(x->styles[i].id, id))
			return &x->styles[i];
	return NULL;
}

static void read_numbering(struct docx *x)
{
	xmlNode *root = x->num_doc ? xmlDocGetRootElement(x->num_doc) : NULL;
	int na = 0, nn = 0;
	for (xmlNode *c = root ? root->children : NULL; c; c = c->next) {
		na += ox_is(c, "abstractNum");
		nn += ox_is(c, "num");
	}
	x->abs = calloc((size_t)na + 1, sizeof(*x->abs));
	x->nums = calloc((size_t)nn + 1, sizeof(*x->nums));
	if (!x->abs || !x->nums)
		return;
	for (xmlNode *c = root ? root->children : NULL; c; c = c->next) {
		if (ox_is(c, "num")) {
			x->nums[x->nnums].id = ox_long(c, "numId", -1);
			x->nums[x->nnums++].abs = ox_long(ox_child(c, "abstractNumId"), "val", -1);
			continue;
		}
		if (!ox_is(c, "abstractNum"))
			continue;
		struct wabs *a = &x->abs[x->nabs++];
		a->id = ox_long(c, "abstractNumId", -1);
		for (int i = 0; i < 9; i++)
			a->lv[i] = (struct wlevel){false, 1};
		for (xmlNode *l = c->children; l; l = l->next) {
			long il = ox_long(l, "ilvl", -1);
			if (!ox_is(l, "lvl") || il < 0 || il > 8)
				continue;
			const char *fmt = child_val(l, "numFmt");
			a->lv[il].ordered = fmt && strcmp(fmt, "bullet") && strcmp(fmt, "none");
			a->lv[il].start = (int)ox_long(ox_child(l, "start"), "val", 1);
		}
	}
}

static const struct wlevel *num_level(const struct docx *x, long num_id, int ilvl)
{
	for (int i = 0; i < x->nnums; i++) {
		if (x->nums[i].id != num_id)
			continue;
		for (int k = 0; k < x->nabs; k++)
			if (x->abs[k].id == x->nums[i].abs)
				return &x->abs[k].lv[ilvl < 0 ? 0 : ilvl > 8 ? 8 : ilvl];
	}
	return NULL;
}

/* ---- paragraphs ----------------------------------------------------------------------- */

static void body(struct docx *x, const xmlNode *from, struct onode *out);

/* The footnote or endnote with this id as blocks under a new labelled footnote. */
static void note(struct docx *x, int which, const char *id, struct onode *para)
{
	xmlNode *root = x->notes_doc[which] ? xmlDocGetRootElement(x->notes_doc[which]) : NULL;
	char label[16];
	if (x->in_note || !id)
		return;
	for (xmlNode *n = root ? root->children : NULL; n; n = n->next) {
		const char *nid = ox_attr(n, "id");
		if (!(ox_is(n, "footnote") || ox_is(n, "endnote")) || !nid || strcmp(nid, id))
			continue;
		snprintf(label, sizeof(label), "%d", ++x->d->nfootnotes);
		struct onode *ref = od_add(x->d, para, ON_NOTEREF);
		struct onode *f = ref ? od_footnote(x->d, label) : NULL;
		if (!f || !od_set(x->d, &ref->text, label, strlen(label)))
			return;
		struct olists saved = x->lists;
		od_items_end(&x->lists);
		x->in_note = true;
		body(x, n, f);
		x->in_note = false;
		x->lists = saved;
		return;
	}
}

/* A drawing's alt text (docPr descr, else title) and its picture's part. */
static void drawing(struct docx *x, const xmlNode *dr, struct onode *para)
{
	const xmlNode *stack[64];
	int sp = 0;
	const char *alt = NULL, *embed = NULL;
	stack[sp++] = dr;
	while (sp) {
		const xmlNode *n = stack[--sp];
		for (const xmlNode *c = n->children; c; c = c->next) {
			if (c->type != XML_ELEMENT_NODE)
				continue;
			if (ox_is(c, "docPr")) {
				alt = ox_attr(c, "descr");
				if (!alt || !*alt)
					alt = ox_attr(c, "title");
			} else if (ox_is(c, "blip") && !embed) {
				embed = ox_rid(c, "embed");
			} else if (ox_is(c, "imagedata") && !embed) {
				embed = ox_rid(c, "id");
				if (!alt)
					alt = ox_attr(c, "title");
			}
			if (sp < 64)
				stack[sp++] = c;
		}
	}
	struct onode *img = od_add(x->d, para, ON_IMAGE);
	const struct orel *rel = opc_rel(&x->rels, embed);
	if (!img)
		return;
	od_set(x->d, &img->text, alt ? alt : "", alt ? strlen(alt) : 0);
	if (rel && !rel->external)
		od_set(x->d, &img->part, rel->target, strlen(rel->target));
}

static void run(struct docx *x, const xmlNode *r, struct onode *para)
{
	xmlNode *rpr = ox_child(r, "rPr");
	const struct wstyle *cs = style(x, child_val(rpr, "rStyle"));
	unsigned flags = cs ? cs->flags : 0;
	xmlNode *b = ox_child(rpr, "b"), *i = ox_child(rpr, "i");
	if (b)
		flags = ox_on(b) ? flags | OF_BOLD : flags & ~OF_BOLD;
	if (i)
		flags = ox_on(i) ? flags | OF_ITALIC : flags & ~OF_ITALIC;
	for (const xmlNode *c = r->children; c && od_ok(x->d); c = c->next) {
		if (ox_is(c, "t")) {
			struct sbuf s = {0};
			ox_text(c, &s);
			od_text(x->d, para, s.p ? s.p : "", s.len, flags);
			free(s.p);
		} else if (ox_is(c, "tab")) {
			od_text(x->d, para, "\t", 1, flags);
		} else if (ox_is(c, "noBreakHyphen")) {
			od_text(x->d, para, "-", 1, flags);
		} else if (ox_is(c, "cr") ||
			   (ox_is(c, "br") && !(ox_attr(c, "type") && strcmp(ox_attr(c, "type"),
									     "textWrapping")))) {
			od_add(x->d, para, ON_BREAK);
		} else if (ox_is(c, "drawing") || ox_is(c, "pict")) {
			drawing(x, c, para);
		} else if (ox_is(c, "AlternateContent")) {
			xmlNode *choice = ox_child(c, "Choice");
			if (choice)
				run(x, choice, para);
		} else if (ox_is(c, "footnoteReference")) {
			note(x, 0, ox_attr(c, "id"), para);
		} else if (ox_is(c, "endnoteReference")) {
			note(x, 1, ox_attr(c, "id"), para);
		}
	}
}

/* Runs, hyperlinks and the containers that only wrap runs. */
static void runs(struct docx *x, const xmlNode *p, struct onode *para, int depth)
{
	for (const xmlNode *c = p->children; c && od_ok(x->d); c = c->next) {
		if (ox_is(c, "r")) {
			run(x, c, para);
		} else if (ox_is(c, "hyperlink") && depth < 8) {
			const struct orel *rel = opc_rel(&x->rels, ox_rid(c, "id"));
			const char *anchor = ox_attr(c, "anchor");
			struct onode *l = od_add(x->d, para, ON_LINK);
			if (!l)
				return;
			if (rel && rel->external)
				od_set(x->d, &l->href, rel->target, strlen(rel->target));
			else if (anchor) {
				char h[256];
				snprintf(h, sizeof(h), "#%s", anchor);
				od_set(x->d, &l->href, h, strlen(h));
			}
			runs(x, c, l, depth + 1);
		} else if ((ox_is(c, "ins") || ox_is(c, "smartTag") || ox_is(c, "customXml") ||
			    ox_is(c, "fldSimple") || ox_is(c, "moveTo")) && depth < 8) {
			runs(x, c, para, depth + 1);
		} else if (ox_is(c, "sdt") && depth < 8) {
			xmlNode *content = ox_child(c, "sdtContent");
			if (content)
				runs(x, content, para, depth + 1);
		}
	}
}

/* 1..6 for a heading paragraph, else 0. */
static int heading_level(const struct docx *x, const xmlNode *ppr, const struct wstyle *st)
{
	long lv = ox_long(ox_child(ppr, "outlineLvl"), "val", -1);
	for (int k = 0; lv < 0 && st && k < 16; k++) {
		const char *name = st->name ? st->name : "";
		if (st->outline >= 0)
			lv = st->outline;
		else if (!strncasecmp(name, "heading ", 8) && name[8] >= '1' && name[8] <= '9')
			lv = name[8] - '1';
		else if (!strcasecmp(name, "title"))
			lv = 0;
		else
			st = style(x, st->based);
	}
	if (lv < 0 || lv > 8)
		return 0; /* outline level 9 is body text */
	return lv > 5 ? 6 : (int)lv + 1;
}

static void paragraph(struct docx *x, const xmlNode *p, struct onode *out)
{
	xmlNode *ppr = ox_child(p, "pPr");
	const struct wstyle *st = style(x, child_val(ppr, "pStyle"));
	xmlNode *numpr = ox_child(ppr, "numPr");
	long num_id = ox_long(ox_child(numpr, "numId"), "val", -1);
	int ilvl = (int)ox_long(ox_child(numpr, "ilvl"), "val", -1);
	const struct wstyle *s = st;
	for (int k = 0; num_id < 0 && s && k < 16; k++, s = style(x, s->based))
		if (s->num_id >= 0) {
			num_id = s->num_id;
			if (ilvl < 0)
				ilvl = s->ilvl;
		}
	int level = heading_level(x, ppr, st);
	struct onode *para;
	const struct wlevel *nl = num_id > 0 ? num_level(x, num_id, ilvl) : NULL;
	if (nl && !level) {
		/* "List Bullet 2" styles nest with a one-level numbering of their own */
		const char *name = st && st->name ? st->name : "";
		size_t n = strlen(name);
		if (ilvl <= 0 && n > 6 && !strncasecmp(name, "list ", 5) && name[n - 2] == ' ' &&
		    name[n - 1] >= '2' && name[n - 1] <= '9')
			ilvl = name[n - 1] - '1';
		para = od_item(x->d, &x->lists, out, ilvl, nl->ordered, nl->start);
	} else {
		od_items_end(&x->lists);
		para = od_add(x->d, out, level ? ON_HEADING : ON_PARA);
		if (para)
			para->level = level;
	}
	if (!para)
		return;
	runs(x, p, para, 0);
	if (para->type == ON_HEADING && od_empty(para))
		para->type = ON_PARA; /* an empty heading is spacing, not structure */
}

/* ---- tables ----------------------------------------------------------------------------- */

#define MAX_GRID 4096

static void table(struct docx *x, const xmlNode *tbl, struct onode *out)
{
	if (od_depth(out) > OD_MAX_DEPTH) {
		od_fail(x->d, CW_DOC_LIMIT, "tables nested deeper than %d", OD_MAX_DEPTH);
		return;
	}
	od_items_end(&x->lists);
	struct onode *t = od_add(x->d, out, ON_TABLE);
	struct onode **origin = calloc(MAX_GRID, sizeof(*origin));
	if (!t || !origin) {
		free(origin);
		if (t)
			od_fail(x->d, CW_DOC_LIMIT, "out of memory");
		return;
	}
	for (const xmlNode *tr = tbl->children; tr && od_ok(x->d); tr = tr->next) {
		if (!ox_is(tr, "tr"))
			continue;
		struct onode *row = od_add(x->d, t, ON_ROW);
		long col = ox_long(ox_child(ox_child(tr, "trPr"), "gridBefore"), "val", 0);
		if (col < 0 || col >= MAX_GRID)
			col = 0;
		for (const xmlNode *tc = tr->children; tc && row && od_ok(x->d); tc = tc->next) {
			if (!ox_is(tc, "tc"))
				continue;
			xmlNode *pr = ox_child(tc, "tcPr"), *vm = ox_child(pr, "vMerge");
			long span = ox_long(ox_child(pr, "gridSpan"), "val", 1);
			span = span < 1 ? 1 : span > OD_MAX_SPAN ? OD_MAX_SPAN : span;
			const char *vv = ox_attr(vm, "val");
			bool cont = vm && (!vv || !strcmp(vv, "continue"));
			if (cont && col < MAX_GRID && origin[col]) {
				if (origin[col]->b < OD_MAX_SPAN)
					origin[col]->b++;
				col += span;
				continue;
			}
			struct onode *cell = od_add(x->d, row, ON_CELL);
			if (!cell || !od_cell(x->d))
				break;
			cell->a = (int)span;
			cell->b = 1;
			for (long k = col; k < col + span && k < MAX_GRID; k++)
				origin[k] = vm ? cell : NULL;
			body(x, tc, cell);
			od_items_end(&x->lists);
			col += span;
		}
	}
	free(origin);
}

static void body(struct docx *x, const xmlNode *from, struct onode *out)
{
	for (const xmlNode *c = from->children; c && od_ok(x->d); c = c->next) {
		if (ox_is(c, "p")) {
			paragraph(x, c, out);
		} else if (ox_is(c, "tbl")) {
			table(x, c, out);
		} else if (ox_is(c, "sdt")) {
			xmlNode *content = ox_child(c, "sdtContent");
			if (content)
				body(x, content, out);
		} else if (ox_is(c, "customXml") || ox_is(c, "ins")) {
			body(x, c, out);
		}
	}
}

/* ---- the package ------------------------------------------------------------------------- */

static struct cw_doc_result read_part(struct docx *x, const char *type, xmlDoc **doc)
{
	const struct orel *rel = opc_rel_type(&x->rels, type);
	if (!rel || rel->external)
		return cw_doc_res(CW_DOC_OK, "%s", "");
	return ox_read(x->z, rel->target, true, doc);
}

struct cw_doc_result cw_office_docx(struct odoc *d, struct ozip *z)
{
	struct docx x = {.d = d, .z = z};
	xmlDoc *doc = NULL;
	char main[1024];

	struct cw_doc_result r = opc_main_part(d, z, "word/document.xml", main, sizeof(main));
	if (r.status != CW_DOC_OK)
		return r;
	if (d->meta_only)
		return oz_has(z, main) ? r : cw_doc_res(CW_DOC_ERROR, "the DOCX has no %s", main);
	r = opc_rels(z, main, &x.rels);
	if (r.status == CW_DOC_OK)
		r = ox_read(z, main, false, &doc);
	if (r.status == CW_DOC_OK)
		r = read_part(&x, "/styles", &x.styles_doc);
	if (r.status == CW_DOC_OK)
		r = read_part(&x, "/numbering", &x.num_doc);
	if (r.status == CW_DOC_OK)
		r = read_part(&x, "/footnotes", &x.notes_doc[0]);
	if (r.status == CW_DOC_OK)
		r = read_part(&x, "/endnotes", &x.notes_doc[1]);
	if (r.status == CW_DOC_OK) {
		read_styles(&x, main);
		read_numbering(&x);
		if (!x.styles || !x.abs || !x.nums)
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
	}
	if (r.status == CW_DOC_OK) {
		xmlNode *b = ox_child(xmlDocGetRootElement(doc), "body");
		if (!b)
			r = cw_doc_res(CW_DOC_ERROR, "%s has no body", main);
		else
			body(&x, b, d->root);
	}
	xmlFreeDoc(doc);
	xmlFreeDoc(x.styles_doc);
	xmlFreeDoc(x.num_doc);
	xmlFreeDoc(x.notes_doc[0]);
	xmlFreeDoc(x.notes_doc[1]);
	free(x.styles);
	free(x.nums);
	free(x.abs);
	opc_rels_free(&x.rels);
	return r;
}
