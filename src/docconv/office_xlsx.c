/*
 * XLSX (SpreadsheetML): each sheet a section named after it holding one
 * table.  Sheets and shared strings are streamed with libxml2's reader (a
 * sheet's DOM would cost many times its size); cells give their cached
 * values (formulas are not evaluated), dates are formatted from the cell's
 * number format, merged ranges become colspan/rowspan.  A sheet whose used
 * range is over the cell cap fails with ResourceLimit before any grid is
 * allocated.
 */
#include "office.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/xmlreader.h>

struct xcell {
	long row, col;
	char *v;
};

struct merge {
	long r0, c0, r1, c1;
};

struct xlsx {
	struct odoc *d;
	struct ozip *z;
	char **strings;
	long nstrings;
	bool *date_xf;   /* per cellXfs index: a date format */
	long nxf;
	bool date1904;
	struct xcell *cells;
	long ncells, capcells;
	struct merge *merges;
	long nmerges, capmerges;
};

/* ---- streaming ------------------------------------------------------------------------ */

static xmlTextReaderPtr reader(const unsigned char *buf, size_t len, const char *what,
			       struct cw_doc_result *r)
{
	*r = cw_doc_res(CW_DOC_OK, "%s", "");
	if (len > (size_t)INT32_MAX) {
		*r = cw_doc_res(CW_DOC_LIMIT, "%s is too large", what);
		return NULL;
	}
	if (memmem(buf, len, "<!DOCTYPE", 9) || memmem(buf, len, "<!ENTITY", 8)) {
		*r = cw_doc_res(CW_DOC_ERROR, "%s declares a DTD or entities (refused)", what);
		return NULL;
	}
	xmlTextReaderPtr rd = xmlReaderForMemory((const char *)buf, (int)len, NULL, NULL,
						 XML_PARSE_NONET | XML_PARSE_NOERROR |
							 XML_PARSE_NOWARNING);
	if (!rd)
		*r = cw_doc_res(CW_DOC_LIMIT, "out of memory reading %s", what);
	return rd;
}

static bool is(xmlTextReaderPtr rd, const char *local)
{
	const xmlChar *n = xmlTextReaderConstLocalName(rd);
	return n && !strcmp((const char *)n, local);
}

static char *attr(xmlTextReaderPtr rd, const char *name)
{
	return (char *)xmlTextReaderGetAttribute(rd, (const xmlChar *)name);
}

/* ---- shared strings and styles ------------------------------------------------------------ */

static struct cw_doc_result shared_strings(struct xlsx *x, const char *part)
{
	unsigned char *buf;
	size_t len;
	struct cw_doc_result r = oz_read(x->z, part, &buf, &len);
	if (r.status != CW_DOC_OK)
		return r;
	xmlTextReaderPtr rd = reader(buf, len, part, &r);
	struct sbuf s = {0};
	long cap = 0;
	int in_t = 0, in_rph = 0, ret;
	while (rd && r.status == CW_DOC_OK && (ret = xmlTextReaderRead(rd)) == 1) {
		int type = xmlTextReaderNodeType(rd);
		bool empty = xmlTextReaderIsEmptyElement(rd);
		if (type == XML_READER_TYPE_ELEMENT && is(rd, "si")) {
			s.len = 0;
			if (s.p)
				s.p[0] = '\0';
		} else if (type == XML_READER_TYPE_ELEMENT && is(rd, "rPh") && !empty) {
			in_rph++;
		} else if (type == XML_READER_TYPE_END_ELEMENT && is(rd, "rPh")) {
			in_rph--;
		} else if (type == XML_READER_TYPE_ELEMENT && is(rd, "t") && !empty) {
			in_t = 1;
		} else if (type == XML_READER_TYPE_END_ELEMENT && is(rd, "t")) {
			in_t = 0;
		} else if ((type == XML_READER_TYPE_TEXT ||
			    type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) && in_t && !in_rph) {
			const xmlChar *v = xmlTextReaderConstValue(rd);
			cw_sb_str(&s, v ? (const char *)v : "");
		} else if ((type == XML_READER_TYPE_END_ELEMENT && is(rd, "si")) ||
			   (type == XML_READER_TYPE_ELEMENT && is(rd, "si") && empty)) {
			if (x->nstrings >= OD_MAX_CELLS) {
				r = cw_doc_res(CW_DOC_LIMIT, "more than %ld shared strings",
					       OD_MAX_CELLS);
				break;
			}
			if (x->nstrings == cap) {
				cap = cap ? cap * 2 : 1024;
				char **v = realloc(x->strings, (size_t)cap * sizeof(char *));
				if (!v) {
					r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
					break;
				}
				x->strings = v;
			}
			x->strings[x->nstrings] = strdup(s.p ? s.p : "");
			if (!x->strings[x->nstrings++] || s.oom)
				r = cw_doc_res(CW_DOC_LIMIT, "out of memory");
		}
	}
	if (rd && r.status == CW_DOC_OK && ret < 0)
		r = cw_doc_res(CW_DOC_ERROR, "%s is not well-formed XML", part);
	if (rd)
		xmlFreeTextReader(rd);
	free(s.p);
	free(buf);
	return r;
}

/* A number format code that shows a date or time (quoted text and [colors] aside). */
static bool date_code(const char *f)
{
	bool quoted = false;
	int bracket = 0;
	for (; f && *f; f++) {
		char c = (char)tolower((unsigned char)*f);
		if (c == '"')
			quoted = !quoted;
		else if (quoted)
			continue;
		else if (c == '\\' && f[1])
			f++;
		else if (c == '[')
			bracket++;
		else if (c == ']')
			bracket--;
		else if (!bracket && strchr("dmyhs", c))
			return true;
	}
	return false;
}

static bool builtin_date(long id)
{
	return (id >= 14 && id <= 22) || (id >= 27 && id <= 36) || (id >= 45 && id <= 47) ||
	       (id >= 50 && id <= 58);
}

static struct cw_doc_result styles(struct xlsx *x, const char *part)
{
	xmlDoc *doc;
	struct cw_doc_result r = ox_read(x->z, part, true, &doc);
	if (r.status != CW_DOC_OK || !doc)
		return r;
	xmlNode *root = xmlDocGetRootElement(doc);
	xmlNode *fmts = ox_child(root, "numFmts"), *xfs = ox_child(root, "cellXfs");
	for (xmlNode *c = xfs ? xfs->children : NULL; c; c = c->next)
		x->nxf += ox_is(c, "xf");
	x->date_xf = calloc((size_t)x->nxf + 1, sizeof(bool));
	if (!x->date_xf) {
		xmlFreeDoc(doc);
		return cw_doc_res(CW_DOC_LIMIT, "out of memory");
	}
	long i = 0;
	for (xmlNode *c = xfs ? xfs->children : NULL; c; c = c->next) {
		if (!ox_is(c, "xf"))
			continue;
		long id = ox_long(c, "numFmtId", 0);
		bool date = builtin_date(id);
		for (xmlNode *f = fmts ? fmts->children : NULL; f; f = f->next)
			if (ox_is(f, "numFmt") && ox_long(f, "numFmtId", -1) == id)
				date = date_code(ox_attr(f, "formatCode"));
		x->date_xf[i++] = date;
	}
	xmlFreeDoc(doc);
	return r;
}

/* ---- values ----------------------------------------------------------------------------- */

/* Days since 1970-01-01 to a civil date (proleptic Gregorian). */
static void civil(long z, int *y, int *m, int *d)
{
	z += 719468;
	long era = (z >= 0 ? z : z - 146096) / 146097;
	long doe = z - era * 146097;
	long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	long mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = (int)(yoe + era * 400 + (*m <= 2));
}

/* A serial date as ISO 8601: the date, the time, or both. */
static void format_date(const struct xlsx *x, double v, char *out, size_t n)
{
	/* 1900 system: serial 1 is 1900-01-01 and the fictitious 1900-02-29 is serial 60 */
	double days = floor(v);
	long epoch = x->date1904 ? -24107 : -25569; /* 1904-01-01 / 1899-12-30, from 1970 */
	if (!x->date1904 && days < 61)
		days += 1;
	long secs = lround((v - floor(v)) * 86400.0);
	if (secs >= 86400) {
		secs -= 86400;
		days += 1;
	}
	int y, m, d;
	civil((long)days + epoch, &y, &m, &d);
	if (v < 1 && v >= 0)
		snprintf(out, n, "%02ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
	else if (secs)
		snprintf(out, n, "%04d-%02d-%02d %02ld:%02ld:%02ld", y, m, d, secs / 3600,
			 secs / 60 % 60, secs % 60);
	else
		snprintf(out, n, "%04d-%02d-%02d", y, m, d);
}

/* The cell's shown value from its type, style and cached value. */
static char *value(const struct xlsx *x, const char *t, long s, const char *v)
{
	char buf[64];
	if (!v)
		return NULL;
	if (t && !strcmp(t, "s")) {
		char *end;
		long i = strtol(v, &end, 10);
		return !*end && i >= 0 && i < x->nstrings ? strdup(x->strings[i]) : strdup("");
	}
	if (t && !strcmp(t, "b"))
		return strdup(!strcmp(v, "1") ? "TRUE" : "FALSE");
	if ((!t || !strcmp(t, "n")) && s >= 0 && s < x->nxf && x->date_xf[s]) {
		char *end;
		double d = strtod(v, &end);
		if (!*end && d > -1 && d < 2958466) { /* up to 9999-12-31 */
			format_date(x, d, buf, sizeof(buf));
			return strdup(buf);
		}
	}
	return strdup(v);
}

/* "BC12" into column 55 and row 12 (1-based); false if malformed. */
static bool cell_ref(const char *s, long *row, long *col)
{
	long c = 0, r = 0;
	for (; isalpha((unsigned char)*s) && c < 100000; s++)
		c = c * 26 + (toupper((unsigned char)*s) - 'A' + 1);
	for (; isdigit((unsigned char)*s) && r < 100000000; s++)
		r = r * 10 + (*s - '0');
	if (*s || !c || !r)
		return false;
	*row = r;
	*col = c;
	return true;
}

static bool push_cell(struct xlsx *x, long row, long col, char *v)
{
	if (!od_cell(x->d)) {
		free(v);
		return false;
	}
	if (x->ncells == x->capcells) {
		long cap = x->capcells ? x->capcells * 2 : 1024;
		struct xcell *c = realloc(x->cells, (size_t)cap * sizeof(*c));
		if (!c) {
			free(v);
			return od_fail(x->d, CW_DOC_LIMIT, "out of memory");
		}
		x->cells = c;
		x->capcells = cap;
	}
	x->cells[x->ncells++] = (struct xcell){row, col, v};
	return true;
}

static void push_merge(struct xlsx *x, const char *ref)
{
	char a[32];
	const char *colon = ref ? strchr(ref, ':') : NULL;
	struct merge m;
	if (!colon || (size_t)(colon - ref) >= sizeof(a))
		return;
	memcpy(a, ref, (size_t)(colon - ref));
	a[colon - ref] = '\0';
	if (!cell_ref(a, &m.r0, &m.c0) || !cell_ref(colon + 1, &m.r1, &m.c1) || m.r1 < m.r0 ||
	    m.c1 < m.c0)
		return;
	if (x->nmerges == x->capmerges) {
		long cap = x->capmerges ? x->capmerges * 2 : 64;
		struct merge *v = realloc(x->merges, (size_t)cap * sizeof(*v));
		if (!v)
			return;
		x->merges = v;
		x->capmerges = cap;
	}
	x->merges[x->nmerges++] = m;
}

/* ---- sheets ---------------------------------------------------------------------------- */

struct cur {
	long row, col, style;
	char *type;
	struct sbuf v;
	bool in_v, has_v;
};

static void cell_start(struct xlsx *x, xmlTextReaderPtr rd, struct cur *c)
{
	char *r = attr(rd, "r"), *s = attr(rd, "s");
	long row, col;
	(void)x;
	if (r && cell_ref(r, &row, &col)) {
		c->col = col;
		if (row != c->row)
			c->row = row;
	} else {
		c->col++;
	}
	c->style = s ? strtol(s, NULL, 10) : -1;
	free(c->type);
	c->type = attr(rd, "t");
	c->v.len = 0;
	if (c->v.p)
		c->v.p[0] = '\0';
	c->has_v = false;
	xmlFree(r);
	xmlFree(s);
}

static void cell_end(struct xlsx *x, struct cur *c)
{
	if (!c->has_v)
		return;
	char *v = value(x, c->type, c->style, c->v.p ? c->v.p : "");
	if (v && *v)
		push_cell(x, c->row, c->col, v);
	else
		free(v);
}

static struct cw_doc_result read_sheet(struct xlsx *x, const char *part)
{
	unsigned char *buf;
	size_t len;
	struct cw_doc_result r = oz_read(x->z, part, &buf, &len);
	if (r.status != CW_DOC_OK)
		return r;
	xmlTextReaderPtr rd = reader(buf, len, part, &r);
	struct cur c = {.row = 0};
	int ret = 0;
	while (rd && od_ok(x->d) && (ret = xmlTextReaderRead(rd)) == 1) {
		int type = xmlTextReaderNodeType(rd);
		bool empty = xmlTextReaderIsEmptyElement(rd);
		if (type == XML_READER_TYPE_ELEMENT) {
			if (is(rd, "row")) {
				char *rr = attr(rd, "r");
				long n = rr ? strtol(rr, NULL, 10) : 0;
				c.row = n > 0 ? n : c.row + 1;
				c.col = 0;
				xmlFree(rr);
			} else if (is(rd, "c")) {
				cell_start(x, rd, &c);
			} else if ((is(rd, "v") || is(rd, "t")) && !empty) {
				c.in_v = c.has_v = true;
			} else if (is(rd, "mergeCell")) {
				char *ref = attr(rd, "ref");
				push_merge(x, ref);
				xmlFree(ref);
			}
		} else if (type == XML_READER_TYPE_END_ELEMENT) {
			if (is(rd, "v") || is(rd, "t"))
				c.in_v = false;
			else if (is(rd, "c"))
				cell_end(x, &c);
		} else if ((type == XML_READER_TYPE_TEXT ||
			    type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) && c.in_v) {
			const xmlChar *v = xmlTextReaderConstValue(rd);
			cw_sb_str(&c.v, v ? (const char *)v : "");
		}
		if (c.v.oom)
			od_fail(x->d, CW_DOC_LIMIT, "out of memory");
	}
	if (rd && od_ok(x->d) && ret < 0)
		r = cw_doc_res(CW_DOC_ERROR, "%s is not well-formed XML", part);
	if (rd)
		xmlFreeTextReader(rd);
	free(c.v.p);
	free(c.type);
	free(buf);
	return od_ok(x->d) ? r : x->d->st;
}

static int cmp_merge(const void *a, const void *b)
{
	const struct merge *x = a, *y = b;
	if (x->r0 != y->r0)
		return x->r0 < y->r0 ? -1 : 1;
	return x->c0 < y->c0 ? -1 : x->c0 > y->c0;
}

/* The cells read into a table over their used range. */
static void sheet_table(struct xlsx *x, struct onode *sec, const char *name)
{
	long r0 = 0, r1 = 0, c0 = 0, c1 = 0;
	for (long i = 0; i < x->ncells; i++) {
		struct xcell *c = &x->cells[i];
		if (!i || c->row < r0)
			r0 = c->row;
		if (!i || c->row > r1)
			r1 = c->row;
		if (!i || c->col < c0)
			c0 = c->col;
		if (!i || c->col > c1)
			c1 = c->col;
	}
	if (!x->ncells)
		return;
	long rows = r1 - r0 + 1, cols = c1 - c0 + 1;
	if ((double)rows * (double)cols > (double)OD_MAX_CELLS) {
		od_fail(x->d, CW_DOC_LIMIT, "sheet '%.100s' spans %ld rows x %ld columns, over "
			"the limit of %ld cells", name, rows, cols, OD_MAX_CELLS);
		return;
	}
	/* 0: empty, -1: under a merge, else 1 + index into cells */
	long *grid = calloc((size_t)(rows * cols), sizeof(long));
	if (!grid) {
		od_fail(x->d, CW_DOC_LIMIT, "out of memory");
		return;
	}
	for (long i = 0; i < x->ncells; i++)
		grid[(x->cells[i].row - r0) * cols + (x->cells[i].col - c0)] = i + 1;
	/* merges clipped to the used range; overlapping ones cannot cost more than a pass */
	long work = 0;
	if (x->nmerges > 1)
		qsort(x->merges, (size_t)x->nmerges, sizeof(*x->merges), cmp_merge);
	for (long i = 0; i < x->nmerges && work <= 2 * OD_MAX_CELLS; i++) {
		struct merge *m = &x->merges[i];
		for (long r = m->r0 > r0 ? m->r0 : r0; r <= m->r1 && r <= r1; r++)
			for (long c = m->c0 > c0 ? m->c0 : c0; c <= m->c1 && c <= c1; c++, work++)
				if (r != m->r0 || c != m->c0)
					grid[(r - r0) * cols + (c - c0)] = -1;
	}
	struct onode *t = od_add(x->d, sec, ON_TABLE);
	long mi = 0;
	for (long r = 0; t && r < rows && od_ok(x->d); r++) {
		struct onode *row = od_add(x->d, t, ON_ROW);
		for (long c = 0; row && c < cols; c++) {
			long g = grid[r * cols + c];
			if (g < 0)
				continue;
			struct onode *cell = od_add(x->d, row, ON_CELL);
			if (!cell || !od_cell(x->d))
				break;
			cell->a = cell->b = 1;
			/* the merges are sorted like the cells: walk them alongside */
			while (mi < x->nmerges && (x->merges[mi].r0 < r + r0 ||
						   (x->merges[mi].r0 == r + r0 &&
						    x->merges[mi].c0 < c + c0)))
				mi++;
			if (mi < x->nmerges && x->merges[mi].r0 == r + r0 &&
			    x->merges[mi].c0 == c + c0) {
				long cs = x->merges[mi].c1 - x->merges[mi].c0 + 1;
				long rs = x->merges[mi].r1 - x->merges[mi].r0 + 1;
				cell->a = (int)(cs > OD_MAX_SPAN ? OD_MAX_SPAN : cs);
				cell->b = (int)(rs > OD_MAX_SPAN ? OD_MAX_SPAN : rs);
			}
			struct onode *p = od_add(x->d, cell, ON_PARA);
			if (p && g > 0)
				od_text(x->d, p, x->cells[g - 1].v, strlen(x->cells[g - 1].v), 0);
		}
	}
	free(grid);
}

static void reset_cells(struct xlsx *x)
{
	for (long i = 0; i < x->ncells; i++)
		free(x->cells[i].v);
	x->ncells = 0;
	x->nmerges = 0;
}

struct cw_doc_result cw_office_xlsx(struct odoc *d, struct ozip *z)
{
	struct xlsx x = {.d = d, .z = z};
	struct orels wb;
	xmlDoc *doc = NULL;
	char main[1024];

	struct cw_doc_result r = opc_main_part(d, z, "xl/workbook.xml", main, sizeof(main));
	if (r.status != CW_DOC_OK)
		return r;
	r = opc_rels(z, main, &wb);
	if (r.status == CW_DOC_OK)
		r = ox_read(z, main, false, &doc);
	xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
	xmlNode *sheets = ox_child(root, "sheets");
	const struct orel *rel;
	const char *d1904 = ox_attr(ox_child(root, "workbookPr"), "date1904");
	x.date1904 = d1904 && (!strcmp(d1904, "1") || !strcmp(d1904, "true"));
	if (r.status == CW_DOC_OK && !d->meta_only && (rel = opc_rel_type(&wb, "/sharedStrings")))
		r = shared_strings(&x, rel->target);
	if (r.status == CW_DOC_OK && !d->meta_only && (rel = opc_rel_type(&wb, "/styles")))
		r = styles(&x, rel->target);
	for (xmlNode *s = sheets ? sheets->children : NULL; s && r.status == CW_DOC_OK;
	     s = s->next) {
		if (!ox_is(s, "sheet"))
			continue;
		const char *name = ox_attr(s, "name");
		rel = opc_rel(&wb, ox_rid(s, "id"));
		if (!rel || rel->external || !strstr(rel->type, "/worksheet"))
			continue; /* chart sheets and dialogs have no cells */
		struct onode *sec = od_section(d, name ? name : "");
		if (!sec || d->meta_only)
			continue;
		reset_cells(&x);
		r = read_sheet(&x, rel->target);
		if (r.status == CW_DOC_OK)
			sheet_table(&x, sec, name ? name : "");
		if (r.status == CW_DOC_OK && !od_ok(d))
			r = d->st;
	}
	reset_cells(&x);
	for (long i = 0; i < x.nstrings; i++)
		free(x.strings[i]);
	free(x.strings);
	free(x.cells);
	free(x.merges);
	free(x.date_xf);
	xmlFreeDoc(doc);
	opc_rels_free(&wb);
	return r;
}
