/*
 * The office document tree: nodes with their memory counted against the
 * engine's memory limit, the cell cap, cancellation checks while building,
 * and the builder for lists that arrive flat with a level.
 */
#include "office.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool od_init(struct odoc *d, struct cw_doc_engine *e, enum cw_office_kind kind)
{
	memset(d, 0, sizeof(*d));
	d->e = e;
	d->kind = kind;
	d->st.status = CW_DOC_OK;
	d->max_bytes = e->lim.memory;
	d->root = calloc(1, sizeof(*d->root));
	d->notes = calloc(1, sizeof(*d->notes));
	d->meta = json_object();
	d->warnings = json_array();
	if (!d->root || !d->notes || !d->meta || !d->warnings) {
		od_free(d);
		return false;
	}
	d->root->type = ON_ROOT;
	d->notes->type = ON_ROOT;
	return true;
}

/* Free a subtree without recursion: children are spliced after their parent. */
static void free_nodes(struct onode *n)
{
	while (n) {
		if (n->first) {
			n->last->next = n->next;
			n->next = n->first;
			n->first = n->last = NULL;
		}
		struct onode *next = n->next;
		free(n->text);
		free(n->href);
		free(n->part);
		free(n->ocr);
		free(n);
		n = next;
	}
}

void od_free(struct odoc *d)
{
	free_nodes(d->root);
	free_nodes(d->notes);
	json_decref(d->meta);
	json_decref(d->warnings);
	d->root = d->notes = NULL;
	d->meta = d->warnings = NULL;
}

bool od_fail(struct odoc *d, enum cw_doc_status st, const char *fmt, ...)
{
	if (d->st.status != CW_DOC_OK)
		return false;
	d->st.status = st;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->st.message, sizeof(d->st.message), fmt, ap);
	va_end(ap);
	return false;
}

/* Count n more bytes of the tree; false (ResourceLimit) past the memory limit. */
static bool account(struct odoc *d, size_t n)
{
	d->bytes += n + 16; /* the allocator's own overhead, roughly */
	if (d->bytes > d->max_bytes)
		return od_fail(d, CW_DOC_LIMIT, "the document needs more than %zu MiB",
			       d->max_bytes >> 20);
	return true;
}

struct onode *od_add(struct odoc *d, struct onode *parent, enum onode_type t)
{
	if (!od_ok(d) || !account(d, sizeof(struct onode)))
		return NULL;
	/* the soft limit: checked every few thousand nodes, cheap enough */
	if ((++d->nodes & 4095) == 0 && cw_doc_cancelled(d->e)) {
		od_fail(d, CW_DOC_CANCELLED, "cancelled while reading the document");
		return NULL;
	}
	struct onode *n = calloc(1, sizeof(*n));
	if (!n) {
		od_fail(d, CW_DOC_LIMIT, "out of memory");
		return NULL;
	}
	n->type = t;
	n->parent = parent;
	if (parent->last)
		parent->last->next = n;
	else
		parent->first = n;
	parent->last = n;
	return n;
}

bool od_set(struct odoc *d, char **field, const char *s, size_t n)
{
	if (!od_ok(d) || !account(d, n + 1))
		return false;
	char *p = malloc(n + 1);
	if (!p)
		return od_fail(d, CW_DOC_LIMIT, "out of memory");
	memcpy(p, s, n);
	p[n] = '\0';
	free(*field);
	*field = p;
	return true;
}

bool od_text(struct odoc *d, struct onode *parent, const char *s, size_t n, unsigned flags)
{
	if (!n)
		return od_ok(d);
	struct onode *prev = parent->last;
	if (prev && prev->type == ON_TEXT && prev->flags == flags) {
		size_t old = strlen(prev->text);
		if (!od_ok(d) || !account(d, n))
			return false;
		char *p = realloc(prev->text, old + n + 1);
		if (!p)
			return od_fail(d, CW_DOC_LIMIT, "out of memory");
		memcpy(p + old, s, n);
		p[old + n] = '\0';
		prev->text = p;
		return true;
	}
	struct onode *t = od_add(d, parent, ON_TEXT);
	if (!t)
		return false;
	t->flags = flags;
	return od_set(d, &t->text, s, n);
}

bool od_cell(struct odoc *d)
{
	if (++d->cells > OD_MAX_CELLS)
		return od_fail(d, CW_DOC_LIMIT, "more than %ld table cells", OD_MAX_CELLS);
	return od_ok(d);
}

int od_depth(const struct onode *n)
{
	int k = 0;
	for (; n && n->parent; n = n->parent)
		k++;
	return k;
}

struct onode *od_footnote(struct odoc *d, const char *label)
{
	struct onode *f = od_add(d, d->notes, ON_FOOTNOTE);
	if (f && !od_set(d, &f->text, label, strlen(label)))
		return NULL;
	return f;
}

bool od_empty(const struct onode *n)
{
	if ((n->type == ON_TEXT || n->type == ON_CODE) && n->text)
		for (const char *s = n->text; *s; s++)
			if (*s != ' ' && *s != '\t' && *s != '\n')
				return false;
	if (n->type == ON_IMAGE || n->type == ON_NOTEREF)
		return false;
	for (const struct onode *c = n->first; c; c = c->next)
		if (!od_empty(c))
			return false;
	return true;
}

struct onode *od_section(struct odoc *d, const char *title)
{
	struct onode *s = od_add(d, d->root, ON_SECTION);
	if (s && title && !od_set(d, &s->text, title, strlen(title)))
		return NULL;
	d->sections++;
	return s;
}

void od_meta(struct odoc *d, const char *key, const char *value)
{
	if (value && *value)
		json_object_set_new(d->meta, key, json_string(value));
}

/* ---- flat lists --------------------------------------------------------------- */

void od_items_end(struct olists *ls)
{
	ls->depth = 0;
	ls->container = NULL;
}

struct onode *od_item(struct odoc *d, struct olists *ls, struct onode *container, int level,
		      bool ordered, int start)
{
	int max = (int)(sizeof(ls->list) / sizeof(ls->list[0])) - 1;
	if (ls->container != container)
		od_items_end(ls);
	ls->container = container;
	if (level < 0)
		level = 0;
	if (level > max)
		level = max;
	/* one level deeper at most: a jump from 0 to 3 nests once */
	if (level > ls->depth)
		level = ls->depth;
	/* a list of the other kind at this level starts a new list */
	if (level < ls->depth && !!(ls->list[level]->flags & OF_ORDERED) != ordered)
		ls->depth = level;
	if (level == ls->depth) {
		struct onode *parent = level ? ls->list[level - 1]->last : container;
		struct onode *l = od_add(d, parent, ON_LIST);
		if (!l)
			return NULL;
		l->flags = ordered ? OF_ORDERED : 0;
		l->a = start > 0 ? start : 1;
		l->level = level;
		ls->list[level] = l;
	}
	ls->depth = level + 1;
	struct onode *item = od_add(d, ls->list[level], ON_ITEM);
	return item ? od_add(d, item, ON_PARA) : NULL;
}

/* ---- text helpers ------------------------------------------------------------------ */

size_t od_collapse_space(char *s, size_t n, bool *prev_space)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool sp = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
		if (sp) {
			if (!*prev_space)
				s[o++] = ' ';
			*prev_space = true;
		} else {
			s[o++] = c;
			*prev_space = false;
		}
	}
	return o;
}
