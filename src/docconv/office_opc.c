/*
 * OOXML packages (Open Packaging Conventions): a part's relationships with
 * their targets resolved to part names (never leaving the package), and the
 * core and extended properties as the document's metadata.
 */
#include "office.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool opc_resolve(const char *part, const char *target, char *out, size_t outlen)
{
	char path[1024];
	size_t n = 0;
	if (!target || !*target)
		return false;
	if (target[0] == '/') {
		target++;
	} else {
		const char *slash = strrchr(part, '/');
		n = slash ? (size_t)(slash - part) + 1 : 0;
	}
	if (n + strlen(target) + 1 > sizeof(path))
		return false;
	memcpy(path, part, n);
	strcpy(path + n, target);
	/* normalise: drop "." components, ".." pops one; popping past the root fails */
	size_t o = 0;
	for (char *p = path; *p;) {
		char *slash = strchr(p, '/');
		size_t k = slash ? (size_t)(slash - p) : strlen(p);
		if (k == 2 && p[0] == '.' && p[1] == '.') {
			if (!o)
				return false;
			o--;
			while (o && out[o - 1] != '/')
				o--;
		} else if (k && !(k == 1 && p[0] == '.')) {
			if (o + k + 2 > outlen)
				return false;
			memcpy(out + o, p, k);
			o += k;
			if (slash)
				out[o++] = '/';
		}
		p += k + (slash ? 1 : 0);
	}
	if (o && out[o - 1] == '/')
		o--;
	out[o] = '\0';
	return o > 0;
}

void opc_rels_free(struct orels *r)
{
	for (int i = 0; i < r->n; i++) {
		free(r->v[i].id);
		free(r->v[i].type);
		free(r->v[i].target);
	}
	free(r->v);
	r->v = NULL;
	r->n = 0;
}

struct cw_doc_result opc_rels(struct ozip *z, const char *part, struct orels *out)
{
	char name[1100];
	const char *slash = strrchr(part, '/');
	xmlDoc *doc;

	memset(out, 0, sizeof(*out));
	if (slash)
		snprintf(name, sizeof(name), "%.*s/_rels/%s.rels", (int)(slash - part), part,
			 slash + 1);
	else
		snprintf(name, sizeof(name), "_rels/%s.rels", part);
	struct cw_doc_result r = ox_read(z, name, true, &doc);
	if (r.status != CW_DOC_OK || !doc)
		return r;
	int cap = 0;
	for (xmlNode *c = xmlDocGetRootElement(doc)->children; c; c = c->next) {
		if (!ox_is(c, "Relationship"))
			continue;
		const char *id = ox_attr(c, "Id"), *type = ox_attr(c, "Type");
		const char *target = ox_attr(c, "Target"), *mode = ox_attr(c, "TargetMode");
		bool external = mode && !strcmp(mode, "External");
		char resolved[1024];
		if (!id || !type || !target)
			continue;
		if (!external && !opc_resolve(part, target, resolved, sizeof(resolved)))
			continue; /* a target outside the package is not followed */
		if (out->n == cap) {
			cap = cap ? cap * 2 : 16;
			struct orel *v = realloc(out->v, (size_t)cap * sizeof(*v));
			if (!v) {
				r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
				break;
			}
			out->v = v;
		}
		struct orel *rel = &out->v[out->n++];
		rel->id = strdup(id);
		rel->type = strdup(type);
		rel->target = strdup(external ? target : resolved);
		rel->external = external;
		if (!rel->id || !rel->type || !rel->target) {
			r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
			break;
		}
	}
	xmlFreeDoc(doc);
	if (r.status != CW_DOC_OK)
		opc_rels_free(out);
	return r;
}

const struct orel *opc_rel(const struct orels *r, const char *id)
{
	for (int i = 0; id && i < r->n; i++)
		if (!strcmp(r->v[i].id, id))
			return &r->v[i];
	return NULL;
}

const struct orel *opc_rel_type(const struct orels *r, const char *suffix)
{
	size_t k = strlen(suffix);
	for (int i = 0; i < r->n; i++) {
		size_t n = strlen(r->v[i].type);
		if (n >= k && !strcmp(r->v[i].type + n - k, suffix))
			return &r->v[i];
	}
	return NULL;
}

/* The text of root's child element named local into meta[key]. */
static void meta_child(struct odoc *d, xmlNode *root, const char *local, const char *key)
{
	xmlNode *c = ox_child(root, local);
	if (!c)
		return;
	struct sbuf b = {0};
	ox_text(c, &b);
	od_meta(d, key, b.p);
	free(b.p);
}

void opc_meta(struct odoc *d, struct ozip *z)
{
	xmlDoc *doc = NULL;
	/* metadata is a courtesy: a broken core.xml costs a warning, not the document */
	if (ox_read(z, "docProps/core.xml", true, &doc).status != CW_DOC_OK) {
		json_array_append_new(d->warnings,
				      json_string("docProps/core.xml is unreadable; no metadata"));
	} else if (doc) {
		xmlNode *root = xmlDocGetRootElement(doc);
		meta_child(d, root, "title", "title");
		meta_child(d, root, "creator", "author");
		meta_child(d, root, "subject", "subject");
		meta_child(d, root, "keywords", "keywords");
		meta_child(d, root, "created", "creation_date");
		meta_child(d, root, "modified", "modification_date");
		xmlFreeDoc(doc);
	}
	doc = NULL;
	if (ox_read(z, "docProps/app.xml", true, &doc).status == CW_DOC_OK && doc) {
		meta_child(d, xmlDocGetRootElement(doc), "Application", "creator");
		xmlFreeDoc(doc);
	}
}

struct cw_doc_result opc_main_part(struct odoc *d, struct ozip *z, const char *deflt, char *main,
				   size_t mainsz)
{
	struct orels pkg;
	snprintf(main, mainsz, "%s", deflt);
	opc_meta(d, z);
	struct cw_doc_result r = opc_rels(z, "", &pkg);
	if (r.status != CW_DOC_OK)
		return r;
	const struct orel *office = opc_rel_type(&pkg, "/officeDocument");
	if (office && !office->external)
		snprintf(main, mainsz, "%s", office->target);
	opc_rels_free(&pkg);
	return r;
}
