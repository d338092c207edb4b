/*
 * OpenDocument (ODT, ODS, ODP): content.xml's body read into the tree, with
 * the automatic and common styles giving bold/italic and whether a list is
 * numbered; meta.xml as metadata.  Text: text:h outline levels, nested
 * text:list, tables with spanned and covered cells, notes as footnotes,
 * frames' images with their svg:title/svg:desc.  Spreadsheets: each table a
 * section (repeated empty cells and rows are only expanded before content,
 * so a sheet's trailing "1024 columns" cost nothing); date cells show their
 * ISO date-value.  Presentations: each draw:page a section titled by its
 * title frame, with the notes page's text as notes.
 */
#include "office.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct odf {
	struct odoc *d;
	xmlNode *style_roots[2];  /* automatic styles (content.xml), common styles (styles.xml) */
	bool space;
};

static void blocks(struct odf *x, const xmlNode *from, struct onode *out, const char *lstyle,
		   int lvl);

/* ---- styles ------------------------------------------------------------------------------ */

static const xmlNode *find_style(const struct odf *x, const char *kind, const char *name)
{
	for (int i = 0; name && i < 2; i++)
		for (const xmlNode *c = x->style_roots[i] ? x->style_roots[i]->children : NULL; c;
		     c = c->next) {
			const char *n = ox_attr(c, "name");
			if (ox_is(c, kind) && n && !strcmp(n, name))
				return c;
		}
	return NULL;
}

static unsigned span_flags(const struct odf *x, const char *name)
{
	const xmlNode *s = find_style(x, "style", name);
	const xmlNode *tp = ox_child(s, "text-properties");
	const char *w = ox_attr(tp, "font-weight"), *st = ox_attr(tp, "font-style");
	return (w && (!strcmp(w, "bold") || atoi(w) >= 600) ? OF_BOLD : 0) |
	       (st && !strcmp(st, "italic") ? OF_ITALIC : 0);
}

/* Whether level lvl (1-based) of the list style is numbered. */
static bool numbered(const struct odf *x, const char *lstyle, int lvl)
{
	const xmlNode *ls = find_style(x, "list-style", lstyle);
	for (const xmlNode *c = ls ? ls->children : NULL; c; c = c->next)
		if (ox_long(c, "level", 0) == lvl)
			return ox_is(c, "list-level-style-number");
	return false;
}

/* ---- inlines ---------------------------------------------------------------------------- */

static void image(struct odf *x, const xmlNode *frame, struct onode *para)
{
	const xmlNode *img = ox_child(frame, "image");
	if (!img)
		return;
	struct onode *n = od_add(x->d, para, ON_IMAGE);
	char *alt = ox_find_text(frame, "desc");
	if (!alt)
		alt = ox_find_text(frame, "title");
	const char *href = ox_attr(img, "href");
	if (n && alt)
		od_set(x->d, &n->text, alt, strlen(alt));
	free(alt);
	if (n && href && strncmp(href, "http", 4) && !strstr(href, ".."))
		od_set(x->d, &n->part, href[0] == '.' && href[1] == '/' ? href + 2 : href,
		       strlen(href[0] == '.' && href[1] == '/' ? href + 2 : href));
}

static void note(struct odf *x, const xmlNode *n, struct onode *para)
{
	char label[16];
	const xmlNode *body = ox_child(n, "note-body");
	if (para->parent && od_depth(para) > OD_MAX_DEPTH)
		return;
	snprintf(label, sizeof(label), "%d", ++x->d->nfootnotes);
	struct onode *ref = od_add(x->d, para, ON_NOTEREF);
	struct onode *f = ref ? od_footnote(x->d, label) : NULL;
	if (!f || !od_set(x->d, &ref->text, label, strlen(label)))
		return;
	bool space = x->space;
	if (body)
		blocks(x, body, f, NULL, 0);
	x->space = space;
}

static void inl(struct odf *x, const xmlNode *n, struct onode *para, unsigned flags, int depth)
{
	if (depth > 64 || !od_ok(x->d))
		return;
	for (const xmlNode *c = n->children; c; c = c->next) {
		if (c->type == XML_TEXT_NODE && c->content) {
			size_t len = strlen((const char *)c->content);
			char *t = strndup((const char *)c->content, len);
			if (!t) {
				od_fail(x->d, CW_DOC_LIMIT, "out of memory");
				return;
			}
			od_text(x->d, para, t, od_collapse_space(t, len, &x->space), flags);
			free(t);
		} else if (ox_is(c, "s")) {
			long k = ox_long(c, "c", 1);
			for (long i = 0; i < k && i < 256; i++)
				od_text(x->d, para, " ", 1, flags);
			x->space = true;
		} else if (ox_is(c, "tab")) {
			od_text(x->d, para, "\t", 1, flags);
		} else if (ox_is(c, "line-break")) {
			od_add(x->d, para, ON_BREAK);
		} else if (ox_is(c, "span")) {
			inl(x, c, para, flags | span_flags(x, ox_attr(c, "style-name")), depth + 1);
		} else if (ox_is(c, "a") && para->type != ON_LINK) {
			struct onode *l = od_add(x->d, para, ON_LINK);
			const char *href = ox_attr(c, "href");
			if (l && href)
				od_set(x->d, &l->href, href, strlen(href));
			if (l)
				inl(x, c, l, flags, depth + 1);
		} else if (ox_is(c, "note")) {
			note(x, c, para);
		} else if (ox_is(c, "frame")) {
			image(x, c, para);
		} else if (ox_is(c, "annotation") || ox_is(c, "note-citation") ||
			   ox_is(c, "bookmark") || ox_is(c, "soft-page-break")) {
			continue;
		} else if (c->type == XML_ELEMENT_NODE) {
			inl(x, c, para, flags, depth + 1);
		}
	}
}

static void paragraph(struct odf *x, const xmlNode *p, struct onode *para)
{
	x->space = true;
	inl(x, p, para, 0, 0); /* a paragraph style's weight is its look (headings), not emphasis */
	struct onode *t = para->last;
	if (t && t->type == ON_TEXT && t->text) {
		size_t n = strlen(t->text);
		while (n && t->text[n - 1] == ' ')
			t->text[--n] = '\0';
	}
}

/* ---- tables ------------------------------------------------------------------------------- */

static bool cell_empty(const xmlNode *c)
{
	return !ox_attr(c, "value-type") && !c->children;
}

static void cell(struct odf *x, const xmlNode *c, struct onode *row)
{
	struct onode *cl = od_add(x->d, row, ON_CELL);
	if (!cl || !od_cell(x->d))
		return;
	long cs = ox_long(c, "number-columns-spanned", 1), rs = ox_long(c, "number-rows-spanned", 1);
	cl->a = (int)(cs < 1 ? 1 : cs > OD_MAX_SPAN ? OD_MAX_SPAN : cs);
	cl->b = (int)(rs < 1 ? 1 : rs > OD_MAX_SPAN ? OD_MAX_SPAN : rs);
	const char *type = ox_attr(c, "value-type"), *date = ox_attr(c, "date-value");
	if (type && !strcmp(type, "date") && date) {
		struct onode *p = od_add(x->d, cl, ON_PARA);
		char buf[32];
		snprintf(buf, sizeof(buf), "%s", date);
		char *t = strchr(buf, 'T');
		if (t && !strcmp(t, "T00:00:00"))
			*t = '\0';
		else if (t)
			*t = ' ';
		if (p)
			od_text(x->d, p, buf, strlen(buf), 0);
		return;
	}
	blocks(x, c, cl, NULL, 0);
}

/* Cells of a row; empty repeated cells wait until content follows them. */
static void row_cells(struct odf *x, const xmlNode *tr, struct onode *row)
{
	long pending = 0;
	for (const xmlNode *c = tr->children; c && od_ok(x->d); c = c->next) {
		if (!ox_is(c, "table-cell"))
			continue;
		long rep = ox_long(c, "number-columns-repeated", 1);
		rep = rep < 1 ? 1 : rep;
		if (cell_empty(c)) {
			pending += rep;
			continue;
		}
		for (; pending > 0 && od_ok(x->d); pending--) {
			struct onode *e = od_add(x->d, row, ON_CELL);
			if (e && od_cell(x->d))
				e->a = e->b = 1;
		}
		for (long i = 0; i < rep && od_ok(x->d); i++)
			cell(x, c, row);
	}
}

static void rows(struct odf *x, const xmlNode *from, struct onode *t, long *pending, int depth)
{
	for (const xmlNode *c = from->children; c && od_ok(x->d) && depth < 8; c = c->next) {
		if (ox_is(c, "table-header-rows") || ox_is(c, "table-rows") ||
		    ox_is(c, "table-row-group")) {
			rows(x, c, t, pending, depth + 1);
			continue;
		}
		if (!ox_is(c, "table-row"))
			continue;
		long rep = ox_long(c, "number-rows-repeated", 1);
		rep = rep < 1 ? 1 : rep;
		bool empty = true;
		for (const xmlNode *k = c->children; k && empty; k = k->next)
			empty = !ox_is(k, "table-cell") || cell_empty(k);
		if (empty) {
			*pending += rep;
			continue;
		}
		for (; *pending > 0 && od_ok(x->d); (*pending)--)
			if (od_cell(x->d))
				od_add(x->d, t, ON_ROW);
		for (long i = 0; i < rep && od_ok(x->d); i++) {
			struct onode *row = od_add(x->d, t, ON_ROW);
			if (row)
				row_cells(x, c, row);
		}
	}
}

static void table(struct odf *x, const xmlNode *tbl, struct onode *out)
{
	long pending = 0;
	if (od_depth(out) > OD_MAX_DEPTH) {
		od_fail(x->d, CW_DOC_LIMIT, "tables nested deeper than %d", OD_MAX_DEPTH);
		return;
	}
	struct onode *t = od_add(x->d, out, ON_TABLE);
	if (t)
		rows(x, tbl, t, &pending, 0);
}

/* ---- blocks ------------------------------------------------------------------------------ */

static void list(struct odf *x, const xmlNode *l, struct onode *out, const char *lstyle, int lvl)
{
	if (od_depth(out) > OD_MAX_DEPTH) {
		od_fail(x->d, CW_DOC_LIMIT, "lists nested deeper than %d", OD_MAX_DEPTH);
		return;
	}
	const char *own = ox_attr(l, "style-name");
	if (own)
		lstyle = own;
	struct onode *ln = od_add(x->d, out, ON_LIST);
	if (!ln)
		return;
	ln->flags = numbered(x, lstyle, lvl + 1) ? OF_ORDERED : 0;
	ln->a = 1;
	for (const xmlNode *c = l->children; c && od_ok(x->d); c = c->next) {
		struct onode *it;
		if ((ox_is(c, "list-item") || ox_is(c, "list-header")) &&
		    (it = od_add(x->d, ln, ON_ITEM)))
			blocks(x, c, it, lstyle, lvl + 1);
	}
}

static void blocks(struct odf *x, const xmlNode *from, struct onode *out, const char *lstyle,
		   int lvl)
{
	for (const xmlNode *c = from->children; c && od_ok(x->d); c = c->next) {
		if (ox_is(c, "h")) {
			struct onode *h = od_add(x->d, out, ON_HEADING);
			long level = ox_long(c, "outline-level", 1);
			if (!h)
				return;
			h->level = (int)(level < 1 ? 1 : level > 6 ? 6 : level);
			paragraph(x, c, h);
			if (od_empty(h))
				h->type = ON_PARA;
		} else if (ox_is(c, "p")) {
			struct onode *p = od_add(x->d, out, ON_PARA);
			if (p)
				paragraph(x, c, p);
		} else if (ox_is(c, "list")) {
			list(x, c, out, lstyle, lvl);
		} else if (ox_is(c, "table")) {
			table(x, c, out);
		} else if (ox_is(c, "section") || ox_is(c, "text-box") ||
			   ox_is(c, "index-body")) {
			blocks(x, c, out, lstyle, lvl);
		}
	}
}

/* ---- presentations and spreadsheets ------------------------------------------------------ */

static void frames(struct odf *x, const xmlNode *page, struct onode *out, int depth)
{
	for (const xmlNode *c = page->children; c && od_ok(x->d) && depth < 16; c = c->next) {
		if (ox_is(c, "g")) {
			frames(x, c, out, depth + 1);
			continue;
		}
		if (!ox_is(c, "frame"))
			continue;
		const char *cls = ox_attr(c, "class");
		xmlNode *box = ox_child(c, "text-box");
		if (cls && !strcmp(cls, "title") && out->type == ON_SECTION && !out->text) {
			struct sbuf s = {0};
			ox_text(box, &s);
			od_set(x->d, &out->text, s.p ? s.p : "", s.len);
			free(s.p);
		} else if (box) {
			blocks(x, box, out, NULL, 0);
		} else if (ox_child(c, "image")) {
			struct onode *p = od_add(x->d, out, ON_PARA);
			if (p)
				image(x, c, p);
		} else if (ox_child(c, "table")) {
			table(x, ox_child(c, "table"), out);
		}
	}
}

static void presentation(struct odf *x, const xmlNode *body)
{
	for (const xmlNode *pg = body->children; pg && od_ok(x->d); pg = pg->next) {
		if (!ox_is(pg, "page"))
			continue;
		struct onode *sec = od_section(x->d, NULL);
		if (!sec || x->d->meta_only)
			continue;
		frames(x, pg, sec, 0);
		xmlNode *notes = ox_child(pg, "notes");
		struct onode *n = notes ? od_add(x->d, sec, ON_NOTES) : NULL;
		for (const xmlNode *f = notes ? notes->children : NULL; n && f; f = f->next) {
			const char *cls = ox_attr(f, "class");
			if (ox_is(f, "frame") && cls && !strcmp(cls, "notes"))
				blocks(x, ox_child(f, "text-box") ? ox_child(f, "text-box") : f, n,
				       NULL, 0);
		}
	}
}

static void spreadsheet(struct odf *x, const xmlNode *body)
{
	for (const xmlNode *t = body->children; t && od_ok(x->d); t = t->next) {
		if (!ox_is(t, "table"))
			continue;
		struct onode *sec = od_section(x->d, ox_attr(t, "name"));
		if (sec && !x->d->meta_only)
			table(x, t, sec);
	}
}

/* ---- the package --------------------------------------------------------------------------- */

static void meta(struct odoc *d, struct ozip *z)
{
	static const struct {
		const char *local, *key;
	} keys[] = {{"title", "title"},	    {"initial-creator", "author"},
		    {"creator", "author"},	    {"subject", "subject"},
		    {"keyword", "keywords"},	    {"creation-date", "creation_date"},
		    {"date", "modification_date"}, {"generator", "creator"}};
	xmlDoc *doc = NULL;
	if (ox_read(z, "meta.xml", true, &doc).status != CW_DOC_OK) {
		json_array_append_new(d->warnings, json_string("meta.xml is unreadable"));
		return;
	}
	xmlNode *m = doc ? ox_child(xmlDocGetRootElement(doc), "meta") : NULL;
	for (size_t i = 0; m && i < sizeof(keys) / sizeof(keys[0]); i++) {
		xmlNode *c = ox_child(m, keys[i].local);
		if (!c || json_object_get(d->meta, keys[i].key))
			continue;
		struct sbuf s = {0};
		ox_text(c, &s);
		od_meta(d, keys[i].key, s.p);
		free(s.p);
	}
	xmlFreeDoc(doc);
}

struct cw_doc_result cw_office_odf(struct odoc *d, struct ozip *z)
{
	struct odf x = {.d = d};
	xmlDoc *content = NULL, *styles = NULL;
	meta(d, z);
	struct cw_doc_result r = ox_read(z, "content.xml", false, &content);
	if (r.status == CW_DOC_OK && !d->meta_only)
		r = ox_read(z, "styles.xml", true, &styles);
	if (r.status != CW_DOC_OK) {
		xmlFreeDoc(content);
		return r;
	}
	xmlNode *root = xmlDocGetRootElement(content);
	x.style_roots[0] = ox_child(root, "automatic-styles");
	x.style_roots[1] = styles ? ox_child(xmlDocGetRootElement(styles), "styles") : NULL;
	xmlNode *body = ox_child(root, "body");
	xmlNode *text = ox_child(body, "text"), *sheet = ox_child(body, "spreadsheet");
	xmlNode *pres = ox_child(body, "presentation");
	if (d->kind == CW_OFFICE_ODT && text && !d->meta_only)
		blocks(&x, text, d->root, NULL, 0);
	else if (d->kind == CW_OFFICE_ODS && sheet)
		spreadsheet(&x, sheet);
	else if (d->kind == CW_OFFICE_ODP && pres)
		presentation(&x, pres);
	else if (!text && !sheet && !pres)
		r = cw_doc_res(CW_DOC_ERROR, "content.xml has no text, spreadsheet or presentation");
	xmlFreeDoc(content);
	xmlFreeDoc(styles);
	return od_ok(d) ? r : d->st;
}
