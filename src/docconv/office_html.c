/*
 * HTML through libxml2's HTML parser: headings, paragraphs, lists (ol start),
 * tables with colspan/rowspan, pre, bold/italic, links and images with their
 * alt text.  Content that mixes text with blocks (a <div> with loose text, a
 * <li> with a nested list) gets implicit paragraphs; white space collapses
 * as a browser would.  Scripts, styles and forms are not content.
 */
#include "office.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_XML_DEPTH 256

struct hw {
	struct odoc *d;
	bool space;   /* the last character written was white space */
};

static bool named(const xmlNode *n, const char *const *names)
{
	if (!n || n->type != XML_ELEMENT_NODE)
		return false;
	for (; *names; names++)
		if (!strcasecmp((const char *)n->name, *names))
			return true;
	return false;
}

static const char *const skipped[] = {"script", "style", "noscript", "template", "head",
				      "iframe", "svg", "math", "button", "select", "textarea",
				      "object", "canvas", NULL};
static const char *const blocklike[] = {
	"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "pre", "div", "section",
	"article", "main", "header", "footer", "blockquote", "figure", "nav", "aside", "form",
	"dl", "dt", "dd", "details", "summary", "center", "address", "hr", "li", "body",
	"html", "fieldset", "figcaption", NULL};

static void mixed(struct hw *h, const xmlNode *from, struct onode *out, int depth);

static bool too_deep(struct hw *h, int depth)
{
	if (depth < MAX_XML_DEPTH)
		return false;
	od_fail(h->d, CW_DOC_LIMIT, "the HTML is nested deeper than %d elements", MAX_XML_DEPTH);
	return true;
}

static void text_node(struct hw *h, const char *s, struct onode *para, unsigned flags)
{
	size_t n = strlen(s);
	char *t = malloc(n + 1);
	if (!t) {
		od_fail(h->d, CW_DOC_LIMIT, "out of memory");
		return;
	}
	memcpy(t, s, n);
	n = od_collapse_space(t, n, &h->space);
	od_text(h->d, para, t, n, flags);
	free(t);
}

static void inl(struct hw *h, const xmlNode *n, struct onode *para, unsigned flags, int depth)
{
	if (too_deep(h, depth) || !od_ok(h->d))
		return;
	if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
		if (n->content)
			text_node(h, (const char *)n->content, para, flags);
		return;
	}
	if (n->type != XML_ELEMENT_NODE || named(n, skipped))
		return;
	const char *name = (const char *)n->name;
	if (!strcasecmp(name, "br")) {
		od_add(h->d, para, ON_BREAK);
		h->space = true;
		return;
	}
	if (!strcasecmp(name, "img")) {
		struct onode *img = od_add(h->d, para, ON_IMAGE);
		const char *alt = ox_attr(n, "alt"), *src = ox_attr(n, "src");
		if (img && alt)
			od_set(h->d, &img->text, alt, strlen(alt));
		/* data: URLs are the image itself, not a name to show */
		if (img && src && strncmp(src, "data:", 5) && strlen(src) < 2048)
			od_set(h->d, &img->href, src, strlen(src));
		h->space = false;
		return;
	}
	if (!strcasecmp(name, "b") || !strcasecmp(name, "strong"))
		flags |= OF_BOLD;
	else if (!strcasecmp(name, "i") || !strcasecmp(name, "em"))
		flags |= OF_ITALIC;
	struct onode *into = para;
	const char *href = ox_attr(n, "href");
	if (!strcasecmp(name, "a") && href && *href && para->type != ON_LINK) {
		into = od_add(h->d, para, ON_LINK);
		if (!into || !od_set(h->d, &into->href, href, strlen(href)))
			return;
	}
	for (const xmlNode *c = n->children; c; c = c->next)
		inl(h, c, into, flags, depth + 1);
}

/* Drop the white space a paragraph ends with (its start never has any). */
static void trim_end(struct onode *para)
{
	struct onode *t = para->last;
	if (t && t->type == ON_TEXT && t->text) {
		size_t n = strlen(t->text);
		while (n && t->text[n - 1] == ' ')
			t->text[--n] = '\0';
	}
}

static void cells(struct hw *h, const xmlNode *tr, struct onode *row, int depth)
{
	for (const xmlNode *c = tr->children; c && od_ok(h->d); c = c->next) {
		if (!ox_is(c, "td") && !ox_is(c, "th"))
			continue;
		struct onode *cell = od_add(h->d, row, ON_CELL);
		if (!cell || !od_cell(h->d))
			return;
		long cs = ox_long(c, "colspan", 1), rs = ox_long(c, "rowspan", 1);
		cell->a = (int)(cs < 1 ? 1 : cs > OD_MAX_SPAN ? OD_MAX_SPAN : cs);
		cell->b = (int)(rs < 1 ? 1 : rs > OD_MAX_SPAN ? OD_MAX_SPAN : rs);
		mixed(h, c, cell, depth + 1);
	}
}

static void rows(struct hw *h, const xmlNode *from, struct onode *t, int depth)
{
	for (const xmlNode *c = from->children; c && od_ok(h->d); c = c->next) {
		if (ox_is(c, "tr")) {
			struct onode *row = od_add(h->d, t, ON_ROW);
			if (row)
				cells(h, c, row, depth + 1);
		} else if (ox_is(c, "thead") || ox_is(c, "tbody") || ox_is(c, "tfoot")) {
			rows(h, c, t, depth + 1);
		}
	}
}

/* One block element under out. */
static void block(struct hw *h, const xmlNode *n, struct onode *out, int depth)
{
	const char *name = (const char *)n->name;
	if (od_depth(out) > OD_MAX_DEPTH) {
		od_fail(h->d, CW_DOC_LIMIT, "lists or tables nested deeper than %d", OD_MAX_DEPTH);
		return;
	}
	if ((name[0] == 'h' || name[0] == 'H') && name[1] >= '1' && name[1] <= '6' && !name[2]) {
		struct onode *hd = od_add(h->d, out, ON_HEADING);
		if (!hd)
			return;
		hd->level = name[1] - '0';
		h->space = true;
		for (const xmlNode *c = n->children; c; c = c->next)
			inl(h, c, hd, 0, depth + 1);
		trim_end(hd);
		if (od_empty(hd))
			hd->type = ON_PARA;
	} else if (!strcasecmp(name, "ul") || !strcasecmp(name, "ol")) {
		struct onode *l = od_add(h->d, out, ON_LIST);
		if (!l)
			return;
		l->flags = !strcasecmp(name, "ol") ? OF_ORDERED : 0;
		l->a = (int)ox_long(n, "start", 1);
		for (const xmlNode *c = n->children; c && od_ok(h->d); c = c->next) {
			struct onode *it;
			if (ox_is(c, "li") && (it = od_add(h->d, l, ON_ITEM)))
				mixed(h, c, it, depth + 1);
		}
	} else if (!strcasecmp(name, "table")) {
		struct onode *t = od_add(h->d, out, ON_TABLE);
		if (t)
			rows(h, n, t, depth + 1);
	} else if (!strcasecmp(name, "pre")) {
		struct onode *code = od_add(h->d, out, ON_CODE);
		struct sbuf b = {0};
		ox_text(n, &b);
		if (code)
			od_set(h->d, &code->text, b.p ? b.p : "", b.len);
		free(b.p);
	} else if (strcasecmp(name, "hr")) {
		mixed(h, n, out, depth + 1);
	}
}

/* Children that mix inline content and blocks: loose inline runs become paragraphs. */
static void mixed(struct hw *h, const xmlNode *from, struct onode *out, int depth)
{
	struct onode *para = NULL;
	if (too_deep(h, depth))
		return;
	for (const xmlNode *c = from->children; c && od_ok(h->d); c = c->next) {
		if (c->type == XML_ELEMENT_NODE && named(c, skipped))
			continue;
		if (c->type == XML_ELEMENT_NODE && named(c, blocklike)) {
			if (para)
				trim_end(para);
			para = NULL;
			block(h, c, out, depth);
			continue;
		}
		if (c->type != XML_ELEMENT_NODE && c->type != XML_TEXT_NODE &&
		    c->type != XML_CDATA_SECTION_NODE)
			continue;
		if (!para) {
			para = od_add(h->d, out, ON_PARA);
			h->space = true;
			if (!para)
				return;
		}
		inl(h, c, para, 0, depth + 1);
	}
	if (para)
		trim_end(para);
}

static void meta(struct odoc *d, const xmlNode *head)
{
	static const struct {
		const char *name, *key;
	} keys[] = {{"author", "author"}, {"description", "subject"}, {"keywords", "keywords"},
		    {"generator", "creator"}};
	char *title = ox_find_text(head, "title");
	if (title) {
		bool sp = true;
		size_t n = od_collapse_space(title, strlen(title), &sp);
		title[n && title[n - 1] == ' ' ? n - 1 : n] = '\0';
		od_meta(d, "title", title);
		free(title);
	}
	for (const xmlNode *c = head ? head->children : NULL; c; c = c->next) {
		const char *name = ox_attr(c, "name"), *content = ox_attr(c, "content");
		if (!ox_is(c, "meta") || !name || !content)
			continue;
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (!strcasecmp(name, keys[i].name))
				od_meta(d, keys[i].key, content);
	}
}

struct cw_doc_result cw_office_html(struct odoc *d, const unsigned char *data, size_t len)
{
	xmlDoc *doc;
	struct cw_doc_result r = ox_parse_html(data, len, &doc);
	if (r.status != CW_DOC_OK)
		return r;
	xmlNode *root = xmlDocGetRootElement(doc);
	xmlNode *head = ox_child(root, "head"), *body = ox_child(root, "body");
	meta(d, head);
	if (!d->meta_only) {
		struct hw h = {d, true};
		mixed(&h, body ? body : root, d->root, 0);
	}
	xmlFreeDoc(doc);
	return od_ok(d) ? r : d->st;
}
