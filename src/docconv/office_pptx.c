/*
 * PPTX (PresentationML): slides in the presentation's order, each a section
 * titled by its title placeholder; text boxes as paragraphs, bullets (the
 * paragraph's buChar/buAutoNum, or a body placeholder's inherited bullets)
 * as nested lists by their level; tables with gridSpan/rowSpan; pictures as
 * images with their alt text; the notes slide's body as the slide's notes.
 */
#include "office.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pptx {
	struct odoc *d;
	struct ozip *z;
	struct orels rels;   /* of the slide being read */
	struct olists lists;
};

static void shapes(struct pptx *p, const xmlNode *tree, struct onode *out, int depth);

/* Runs of an a:p into para. */
static void runs(struct pptx *p, const xmlNode *ap, struct onode *para)
{
	for (const xmlNode *c = ap->children; c && od_ok(p->d); c = c->next) {
		if (ox_is(c, "br")) {
			od_add(p->d, para, ON_BREAK);
			continue;
		}
		if (!ox_is(c, "r") && !ox_is(c, "fld"))
			continue;
		xmlNode *pr = ox_child(c, "rPr");
		const char *b = ox_attr(pr, "b"), *i = ox_attr(pr, "i");
		unsigned flags = (b && (!strcmp(b, "1") || !strcmp(b, "true")) ? OF_BOLD : 0) |
				 (i && (!strcmp(i, "1") || !strcmp(i, "true")) ? OF_ITALIC : 0);
		struct sbuf s = {0};
		ox_text(ox_child(c, "t"), &s);
		const struct orel *rel = opc_rel(&p->rels, ox_rid(ox_child(pr, "hlinkClick"), "id"));
		struct onode *into = para;
		if (rel && rel->external) {
			/* consecutive runs of one link share it */
			struct onode *last = para->last;
			if (last && last->type == ON_LINK && last->href && !strcmp(last->href,
										   rel->target))
				into = last;
			else if ((into = od_add(p->d, para, ON_LINK)))
				od_set(p->d, &into->href, rel->target, strlen(rel->target));
		}
		if (into)
			od_text(p->d, into, s.p ? s.p : "", s.len, flags);
		free(s.p);
	}
}

/* The placeholder type of a shape: "title", "body", ... ("" without one, NULL: no placeholder). */
static const char *placeholder(const xmlNode *sp)
{
	xmlNode *nv = ox_child(sp, "nvSpPr");
	xmlNode *ph = ox_child(ox_child(nv, "nvPr"), "ph");
	if (!ph)
		return NULL;
	const char *t = ox_attr(ph, "type");
	return t ? t : "";
}

static void text_body(struct pptx *p, const xmlNode *body, struct onode *out, bool bullets)
{
	for (const xmlNode *ap = body ? body->children : NULL; ap && od_ok(p->d); ap = ap->next) {
		if (!ox_is(ap, "p"))
			continue;
		xmlNode *pr = ox_child(ap, "pPr");
		long lvl = ox_long(pr, "lvl", 0);
		xmlNode *num = ox_child(pr, "buAutoNum");
		bool item = !ox_child(pr, "buNone") &&
			    (bullets || ox_child(pr, "buChar") || num || ox_child(pr, "buBlip"));
		struct onode *para;
		struct sbuf probe = {0};
		ox_text(ap, &probe);
		bool blank = !probe.len;
		free(probe.p);
		if (blank)
			continue; /* empty paragraphs are spacing */
		if (item) {
			para = od_item(p->d, &p->lists, out, (int)lvl, num != NULL,
				       (int)ox_long(num, "startAt", 1));
		} else {
			od_items_end(&p->lists);
			para = od_add(p->d, out, ON_PARA);
		}
		if (para)
			runs(p, ap, para);
	}
}

static void picture(struct pptx *p, const xmlNode *pic, struct onode *out)
{
	xmlNode *c = ox_child(ox_child(pic, "nvPicPr"), "cNvPr");
	const char *alt = ox_attr(c, "descr");
	if (!alt || !*alt)
		alt = ox_attr(c, "title");
	const char *embed = ox_rid(ox_child(ox_child(pic, "blipFill"), "blip"), "embed");
	const struct orel *rel = opc_rel(&p->rels, embed);
	od_items_end(&p->lists);
	struct onode *para = od_add(p->d, out, ON_PARA);
	struct onode *img = para ? od_add(p->d, para, ON_IMAGE) : NULL;
	if (!img)
		return;
	if (alt)
		od_set(p->d, &img->text, alt, strlen(alt));
	if (rel && !rel->external)
		od_set(p->d, &img->part, rel->target, strlen(rel->target));
}

static void table(struct pptx *p, const xmlNode *tbl, struct onode *out)
{
	od_items_end(&p->lists);
	struct onode *t = od_add(p->d, out, ON_TABLE);
	for (const xmlNode *tr = tbl->children; t && tr && od_ok(p->d); tr = tr->next) {
		if (!ox_is(tr, "tr"))
			continue;
		struct onode *row = od_add(p->d, t, ON_ROW);
		for (const xmlNode *tc = tr->children; row && tc; tc = tc->next) {
			if (!ox_is(tc, "tc") || ox_attr(tc, "hMerge") || ox_attr(tc, "vMerge"))
				continue;
			struct onode *cell = od_add(p->d, row, ON_CELL);
			if (!cell || !od_cell(p->d))
				return;
			long cs = ox_long(tc, "gridSpan", 1), rs = ox_long(tc, "rowSpan", 1);
			cell->a = (int)(cs < 1 ? 1 : cs > OD_MAX_SPAN ? OD_MAX_SPAN : cs);
			cell->b = (int)(rs < 1 ? 1 : rs > OD_MAX_SPAN ? OD_MAX_SPAN : rs);
			text_body(p, ox_child(tc, "txBody"), cell, false);
			od_items_end(&p->lists);
		}
	}
}

/* The shapes of a tree; the title placeholder's text becomes the section's title. */
static void shapes(struct pptx *p, const xmlNode *tree, struct onode *out, int depth)
{
	if (depth > 16) {
		od_fail(p->d, CW_DOC_LIMIT, "shape groups nested deeper than 16");
		return;
	}
	for (const xmlNode *c = tree->children; c && od_ok(p->d); c = c->next) {
		if (ox_is(c, "sp")) {
			const char *ph = placeholder(c);
			xmlNode *body = ox_child(c, "txBody");
			bool title = ph && (!strcmp(ph, "title") || !strcmp(ph, "ctrTitle"));
			if (title && out->type == ON_SECTION && !out->text) {
				struct sbuf s = {0};
				for (xmlNode *ap = ox_child(body, "p"); ap; ap = ox_next(ap, "p")) {
					if (s.len)
						cw_sb_str(&s, " ");
					ox_text(ap, &s);
				}
				od_set(p->d, &out->text, s.p ? s.p : "", s.len);
				free(s.p);
				continue;
			}
			if (ph && (!strcmp(ph, "sldNum") || !strcmp(ph, "dt") || !strcmp(ph, "ftr") ||
				   !strcmp(ph, "hdr") || !strcmp(ph, "sldImg")))
				continue;
			bool bullets = ph && (!*ph || !strcmp(ph, "body") || !strcmp(ph, "obj"));
			if (out->type == ON_NOTES)
				bullets = false;
			text_body(p, body, out, bullets);
			od_items_end(&p->lists);
		} else if (ox_is(c, "pic")) {
			picture(p, c, out);
		} else if (ox_is(c, "graphicFrame")) {
			xmlNode *data = ox_child(ox_child(c, "graphic"), "graphicData");
			xmlNode *tbl = ox_child(data, "tbl");
			if (tbl)
				table(p, tbl, out);
		} else if (ox_is(c, "grpSp")) {
			shapes(p, c, out, depth + 1);
		} else if (ox_is(c, "AlternateContent")) {
			xmlNode *choice = ox_child(c, "Choice");
			if (choice)
				shapes(p, choice, out, depth + 1);
		}
	}
}

static struct cw_doc_result notes(struct pptx *p, const char *part, struct onode *sec)
{
	xmlDoc *doc;
	struct cw_doc_result r = ox_read(p->z, part, true, &doc);
	if (r.status != CW_DOC_OK || !doc)
		return r;
	xmlNode *tree = ox_child(ox_child(xmlDocGetRootElement(doc), "cSld"), "spTree");
	struct onode *n = tree ? od_add(p->d, sec, ON_NOTES) : NULL;
	/* only the body placeholder: the rest is the slide image and its number */
	for (const xmlNode *c = tree ? tree->children : NULL; n && c; c = c->next) {
		const char *ph = ox_is(c, "sp") ? placeholder(c) : NULL;
		if (ph && !strcmp(ph, "body"))
			text_body(p, ox_child(c, "txBody"), n, false);
	}
	xmlFreeDoc(doc);
	return r;
}

static struct cw_doc_result slide(struct pptx *p, const char *part, struct onode *sec)
{
	xmlDoc *doc;
	struct cw_doc_result r = opc_rels(p->z, part, &p->rels);
	if (r.status == CW_DOC_OK)
		r = ox_read(p->z, part, false, &doc);
	if (r.status != CW_DOC_OK) {
		opc_rels_free(&p->rels);
		return r;
	}
	xmlNode *tree = ox_child(ox_child(xmlDocGetRootElement(doc), "cSld"), "spTree");
	od_items_end(&p->lists);
	if (tree)
		shapes(p, tree, sec, 0);
	xmlFreeDoc(doc);
	const struct orel *n = opc_rel_type(&p->rels, "/notesSlide");
	if (od_ok(p->d) && n && !n->external)
		r = notes(p, n->target, sec);
	opc_rels_free(&p->rels);
	return od_ok(p->d) ? r : p->d->st;
}

struct cw_doc_result cw_office_pptx(struct odoc *d, struct ozip *z)
{
	struct pptx p = {.d = d, .z = z};
	struct orels pres;
	xmlDoc *doc = NULL;
	char main[1024];

	struct cw_doc_result r = opc_main_part(d, z, "ppt/presentation.xml", main, sizeof(main));
	if (r.status != CW_DOC_OK)
		return r;
	r = opc_rels(z, main, &pres);
	if (r.status == CW_DOC_OK)
		r = ox_read(z, main, false, &doc);
	xmlNode *list = doc ? ox_child(xmlDocGetRootElement(doc), "sldIdLst") : NULL;
	for (xmlNode *s = list ? list->children : NULL; s && r.status == CW_DOC_OK; s = s->next) {
		const struct orel *rel = ox_is(s, "sldId") ? opc_rel(&pres, ox_rid(s, "id")) : NULL;
		if (!rel || rel->external)
			continue;
		struct onode *sec = od_section(d, NULL);
		if (!sec)
			r = d->st;
		else if (!d->meta_only)
			r = slide(&p, rel->target, sec);
	}
	xmlFreeDoc(doc);
	opc_rels_free(&pres);
	return r;
}
