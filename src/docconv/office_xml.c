/*
 * XML and HTML through libxml2, set up for hostile input: no network, no
 * DTD loading, no entity substitution, libxml2's own depth limit (no
 * XML_PARSE_HUGE); and package parts declaring a DTD at all are refused,
 * since no OOXML or ODF part has one and internal entities are how
 * "billion laughs" documents grow.  Plus the small lookups the readers use.
 */
#include "office.h"

#include <stdlib.h>
#include <string.h>

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>

/* libxml2 reports errors to stderr by default: the worker's log has no use for them. */
static void quiet(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

static void init_libxml(void)
{
	static bool done;
	if (done)
		return;
	xmlInitParser();
	xmlSetGenericErrorFunc(NULL, quiet);
	done = true;
}

struct cw_doc_result ox_parse(const unsigned char *buf, size_t len, const char *what,
			      xmlDoc **out)
{
	*out = NULL;
	init_libxml();
	if (len > (size_t)INT32_MAX)
		return cw_doc_res(CW_DOC_LIMIT, "%s is too large", what);
	if (memmem(buf, len, "<!DOCTYPE", 9) || memmem(buf, len, "<!ENTITY", 8))
		return cw_doc_res(CW_DOC_ERROR, "%s declares a DTD or entities (refused)", what);
	xmlDoc *doc = xmlReadMemory((const char *)buf, (int)len, NULL, NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
					    XML_PARSE_NOCDATA);
	if (!doc || !xmlDocGetRootElement(doc)) {
		const xmlError *err = xmlGetLastError();
		xmlFreeDoc(doc);
		return cw_doc_res(CW_DOC_ERROR, "%s is not well-formed XML%s%.200s", what,
				  err && err->message ? ": " : "",
				  err && err->message ? err->message : "");
	}
	*out = doc;
	return cw_doc_res(CW_DOC_OK, "%s", "");
}

struct cw_doc_result ox_read(struct ozip *z, const char *name, bool optional, xmlDoc **out)
{
	unsigned char *buf;
	size_t len;
	*out = NULL;
	if (optional && !oz_has(z, name))
		return cw_doc_res(CW_DOC_OK, "%s", "");
	struct cw_doc_result r = oz_read(z, name, &buf, &len);
	if (r.status != CW_DOC_OK)
		return r;
	r = ox_parse(buf, len, name, out);
	free(buf);
	return r;
}

struct cw_doc_result ox_parse_html(const unsigned char *buf, size_t len, xmlDoc **out)
{
	init_libxml();
	*out = NULL;
	if (len > (size_t)INT32_MAX)
		return cw_doc_res(CW_DOC_LIMIT, "the HTML is too large");
	xmlResetLastError();
	htmlDocPtr doc = htmlReadMemory((const char *)buf, (int)len, NULL, NULL,
					HTML_PARSE_NONET | HTML_PARSE_NOERROR |
						HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER);
	/* recovering, the parser drops what lies past its depth limit: say so, not less text */
	const xmlError *err = xmlGetLastError();
	if (err && err->message && strstr(err->message, "Excessive depth")) {
		xmlFreeDoc(doc);
		return cw_doc_res(CW_DOC_LIMIT, "the HTML is nested too deeply (%.100s)",
				  err->message);
	}
	if (!doc || !xmlDocGetRootElement(doc)) {
		xmlFreeDoc(doc);
		return cw_doc_res(CW_DOC_ERROR, "the HTML could not be parsed");
	}
	*out = doc;
	return cw_doc_res(CW_DOC_OK, "%s", "");
}

bool ox_is(const xmlNode *n, const char *local)
{
	return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, local);
}

xmlNode *ox_next(const xmlNode *n, const char *local)
{
	for (n = n ? n->next : NULL; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && (!local || ox_is(n, local)))
			return (xmlNode *)n;
	return NULL;
}

xmlNode *ox_child(const xmlNode *n, const char *local)
{
	if (!n)
		return NULL;
	for (xmlNode *c = n->children; c; c = c->next)
		if (ox_is(c, local))
			return c;
	return NULL;
}

const char *ox_attr(const xmlNode *n, const char *local)
{
	if (!n || n->type != XML_ELEMENT_NODE)
		return NULL;
	for (const xmlAttr *a = n->properties; a; a = a->next)
		if (!strcmp((const char *)a->name, local)) {
			const xmlNode *t = a->children;
			return t && t->type == XML_TEXT_NODE && t->content
				       ? (const char *)t->content : "";
		}
	return NULL;
}

const char *ox_rid(const xmlNode *n, const char *local)
{
	if (!n || n->type != XML_ELEMENT_NODE)
		return NULL;
	for (const xmlAttr *a = n->properties; a; a = a->next)
		if (!strcmp((const char *)a->name, local) && a->ns && a->ns->href &&
		    strstr((const char *)a->ns->href, "/relationships")) {
			const xmlNode *t = a->children;
			return t && t->type == XML_TEXT_NODE && t->content
				       ? (const char *)t->content : "";
		}
	return NULL;
}

long ox_long(const xmlNode *n, const char *local, long def)
{
	const char *v = ox_attr(n, local);
	char *end;
	if (!v || !*v)
		return def;
	long x = strtol(v, &end, 10);
	return *end ? def : x;
}

bool ox_on(const xmlNode *n)
{
	const char *v = ox_attr(n, "val");
	return !v || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "on");
}

static void text_rec(const xmlNode *n, struct sbuf *b, int depth)
{
	for (const xmlNode *c = n->children; c && depth < 256; c = c->next) {
		if (c->type == XML_TEXT_NODE && c->content)
			cw_sb_str(b, (const char *)c->content);
		else if (c->type == XML_ELEMENT_NODE)
			text_rec(c, b, depth + 1);
	}
}

void ox_text(const xmlNode *n, struct sbuf *b)
{
	if (n)
		text_rec(n, b, 0);
}

static const xmlNode *find_rec(const xmlNode *n, const char *local, int depth)
{
	for (const xmlNode *c = n->children; c && depth < 256; c = c->next) {
		if (ox_is(c, local))
			return c;
		if (c->type == XML_ELEMENT_NODE) {
			const xmlNode *f = find_rec(c, local, depth + 1);
			if (f)
				return f;
		}
	}
	return NULL;
}

char *ox_find_text(const xmlNode *n, const char *local)
{
	const xmlNode *f = n ? find_rec(n, local, 0) : NULL;
	if (!f)
		return NULL;
	struct sbuf b = {0};
	ox_text(f, &b);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p ? b.p : strdup("");
}
