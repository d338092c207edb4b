/*
 * Office and web documents (DOCX, PPTX, XLSX, ODT/ODS/ODP, HTML, Markdown,
 * CSV, plain text) into the same outputs as PDFs.  Unlike PDFs they are not
 * laid out: each reader walks the document's own markup into a small
 * document tree (headings, paragraphs, lists, tables, runs), and the
 * writers print the tree in the four formats.
 *
 *   office.c        recognising the bytes, the reader table, convert and info
 *   office_tree.c   the tree, its limits and the list builder
 *   office_write.c  text, markdown, html and json from the tree
 *   office_zip.c    zip packages through MuPDF's archive reader, with caps
 *   office_xml.c    libxml2 parsing without entities or network, helpers
 *   office_opc.c    OOXML packages: relationships, core properties
 *   office_docx.c, office_pptx.c, office_xlsx.c, office_odf.c,
 *   office_html.c, office_text.c   the readers
 *   office_ocr.c    OCR of embedded images (ocr="always")
 */
#ifndef CW_DOCCONV_OFFICE_H
#define CW_DOCCONV_OFFICE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "docconv_int.h"

enum cw_office_kind {
	CW_OFFICE_NONE = 0,  /* not ours: PDF, images, EPUB, ... go to MuPDF */
	CW_OFFICE_DOCX,
	CW_OFFICE_PPTX,
	CW_OFFICE_XLSX,
	CW_OFFICE_ODT,
	CW_OFFICE_ODS,
	CW_OFFICE_ODP,
	CW_OFFICE_HTML,
	CW_OFFICE_MARKDOWN,
	CW_OFFICE_CSV,
	CW_OFFICE_TEXT,
	CW_OFFICE_OLE,       /* legacy binary Office or an encrypted OOXML container */
	CW_OFFICE_NKINDS
};

/* What the bytes are (zip directory entries, XML root, text); never the file name. */
enum cw_office_kind cw_office_sniff(struct cw_doc_engine *e, const unsigned char *d, size_t n);

/* docconv's convert and info for a kind cw_office_sniff recognised (same result shape). */
struct cw_doc_result cw_office_convert(struct cw_doc_engine *e, enum cw_office_kind kind,
				       const unsigned char *data, size_t len,
				       const struct cw_doc_convert_opts *o, json_t **out);
struct cw_doc_result cw_office_info(struct cw_doc_engine *e, enum cw_office_kind kind,
				    const unsigned char *data, size_t len, json_t **out);

/* ---- limits ------------------------------------------------------------------ */

#define OD_MAX_DEPTH 40                 /* nesting of lists, tables, links in the tree */
#define OD_MAX_CELLS 2000000L           /* table cells in a document (huge sheets) */
#define OD_MAX_SPAN 1000                /* colspan and rowspan are clamped to this */
#define OZ_MAX_ENTRIES 20000            /* entries in a zip directory */
#define OZ_MAX_ENTRY (256u << 20)       /* bytes one entry may expand to */
#define OZ_MAX_TOTAL (512u << 20)       /* bytes all entries read may expand to */
#define OZ_MAX_RATIO 400                /* expansion over the zip's size past 16 MiB: a bomb */

/* ---- the document tree (office_tree.c) ------------------------------------------- */

enum onode_type {
	ON_ROOT,      /* blocks, or sections */
	ON_SECTION,   /* a slide or a sheet: text = its title; blocks, then ON_NOTES */
	ON_NOTES,     /* a slide's speaker notes: blocks */
	ON_HEADING,   /* level 1..6: inlines */
	ON_PARA,      /* inlines */
	ON_CODE,      /* preformatted: text */
	ON_LIST,      /* OF_ORDERED, a = first number: ON_ITEM children */
	ON_ITEM,      /* blocks */
	ON_TABLE,     /* ON_ROW children */
	ON_ROW,       /* ON_CELL children */
	ON_CELL,      /* blocks; a = colspan, b = rowspan (cells under a span are left out) */
	ON_FOOTNOTE,  /* text = its label: blocks (children of the document's notes) */
	ON_TEXT,      /* inline: text with OF_BOLD / OF_ITALIC */
	ON_LINK,      /* inline: href, inlines */
	ON_IMAGE,     /* inline: text = alt text, part = the package entry, ocr = its text */
	ON_NOTEREF,   /* inline: text = the footnote's label */
	ON_BREAK,     /* inline: a line break */
};

#define OF_BOLD 1u
#define OF_ITALIC 2u
#define OF_ORDERED 4u

struct onode {
	enum onode_type type;
	unsigned flags;
	int level;
	int a, b;
	char *text, *href, *part, *ocr;
	struct onode *parent, *first, *last, *next;
};

struct odoc {
	struct cw_doc_engine *e;
	enum cw_office_kind kind;
	struct onode *root;
	struct onode *notes;        /* footnotes and endnotes: ON_FOOTNOTE children */
	json_t *meta;               /* title, author, ... as the PDF metadata */
	json_t *warnings;
	struct cw_doc_result st;    /* the first failure; building stops there */
	size_t bytes, max_bytes;    /* tree memory against the engine's memory limit */
	long nodes, cells;
	int nfootnotes;
	bool meta_only;             /* info: metadata and the section count only */
	int sections;               /* slides or sheets found (meta_only counts them too) */
};

bool od_init(struct odoc *d, struct cw_doc_engine *e, enum cw_office_kind kind);
void od_free(struct odoc *d);
/* Record a failure (the first one stays); false, for `return od_fail(...)`. */
bool od_fail(struct odoc *d, enum cw_doc_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline bool od_ok(const struct odoc *d)
{
	return d->st.status == CW_DOC_OK;
}

/* A new last child of parent; NULL once a limit or the cancel flag stopped the build. */
struct onode *od_add(struct odoc *d, struct onode *parent, enum onode_type t);
/* Set *field to a copy of s (n bytes); false on a limit. */
bool od_set(struct odoc *d, char **field, const char *s, size_t n);
/* Append text to parent's inlines, merged into the previous run of the same style. */
bool od_text(struct odoc *d, struct onode *parent, const char *s, size_t n, unsigned flags);
/* Count one table cell against OD_MAX_CELLS; false (ResourceLimit) past it. */
bool od_cell(struct odoc *d);
/* Depth of n below the root (for OD_MAX_DEPTH). */
int od_depth(const struct onode *n);
/* A footnote's body: a new ON_FOOTNOTE labelled label under d->notes. */
struct onode *od_footnote(struct odoc *d, const char *label);
/* True when the node holds no text, image or note reference at all. */
bool od_empty(const struct onode *n);
/* A new section (slide, sheet) with its title. */
struct onode *od_section(struct odoc *d, const char *title);
/* Set a metadata string (title, author, ...); empty values are left null. */
void od_meta(struct odoc *d, const char *key, const char *value);

/*
 * Lists whose items come flat with a level (DOCX numbering, slide bullets):
 * od_item opens or continues the lists up to that level and returns the new
 * item's paragraph.  Anything else added to the container ends them: call
 * od_items_end first.
 */
struct olists {
	struct onode *container;
	struct onode *list[10];
	int depth;
};
struct onode *od_item(struct odoc *d, struct olists *ls, struct onode *container, int level,
		      bool ordered, int start);
void od_items_end(struct olists *ls);

/* Collapse runs of XML/HTML white space into one space (in place); returns the new length. */
size_t od_collapse_space(char *s, size_t n, bool *prev_space);

/* ---- writers (office_write.c) ------------------------------------------------------ */

/* The sections (1-based numbers in sel, nsel of them; NULL = the whole document) as fmt. */
void cw_office_write(struct sbuf *b, const struct odoc *d, enum cw_doc_format fmt,
		     const int *sel, int nsel);
json_t *cw_office_json(const struct odoc *d, const int *sel, int nsel);

/* ---- zip packages (office_zip.c) ------------------------------------------------------ */

struct ozip {
	struct cw_doc_engine *e;
	fz_archive *arch;
	fz_stream *stm;     /* over the caller's bytes: nothing is copied */
	size_t srclen, total;
};

struct cw_doc_result oz_open(struct cw_doc_engine *e, const unsigned char *data, size_t len,
			     struct ozip *z);
void oz_close(struct ozip *z);
bool oz_has(struct ozip *z, const char *name);
/*
 * The entry's bytes, NUL-terminated (malloc'd), within the entry and total
 * expansion caps.  A missing entry is CW_DOC_ERROR with *data NULL.
 */
struct cw_doc_result oz_read(struct ozip *z, const char *name, unsigned char **data, size_t *len);

/* ---- XML (office_xml.c) ------------------------------------------------------------------ */

#include <libxml/tree.h>

/* Parse a package part: no network, no DTD, no entity expansion; what names the part. */
struct cw_doc_result ox_parse(const unsigned char *buf, size_t len, const char *what,
			      xmlDoc **out);
/* Read and parse a zip entry; a missing optional entry is OK with *out NULL. */
struct cw_doc_result ox_read(struct ozip *z, const char *name, bool optional, xmlDoc **out);
/* Parse HTML (libxml2's HTML parser, recovering, no network). */
struct cw_doc_result ox_parse_html(const unsigned char *buf, size_t len, xmlDoc **out);
bool ox_is(const xmlNode *n, const char *local);
xmlNode *ox_child(const xmlNode *n, const char *local);
/* The next element sibling after n named local (NULL local = any element). */
xmlNode *ox_next(const xmlNode *n, const char *local);
/* An attribute by local name, any namespace; NULL when absent.  Points into the tree. */
const char *ox_attr(const xmlNode *n, const char *local);
/* A relationship id attribute (r:id, r:embed): the attribute in the relationships namespace. */
const char *ox_rid(const xmlNode *n, const char *local);
/* All the text below n (depth bounded), appended to b. */
void ox_text(const xmlNode *n, struct sbuf *b);
/* The text of the first descendant element named local, as a malloc'd string (or NULL). */
char *ox_find_text(const xmlNode *n, const char *local);
/* An integer attribute, def when absent or malformed. */
long ox_long(const xmlNode *n, const char *local, long def);
/* OOXML's on/off values: absent attribute or "1"/"true"/"on" = on. */
bool ox_on(const xmlNode *n);

/* ---- OOXML packages (office_opc.c) ------------------------------------------------------- */

struct orel {
	char *id, *type, *target;  /* target: a part name, or the URL when external */
	bool external;
};
struct orels {
	struct orel *v;
	int n;
};

/* The relationships of a part ("" = the package's); a missing .rels is an empty set. */
struct cw_doc_result opc_rels(struct ozip *z, const char *part, struct orels *out);
void opc_rels_free(struct orels *r);
const struct orel *opc_rel(const struct orels *r, const char *id);
/* The first relationship whose type ends in suffix ("/officeDocument"). */
const struct orel *opc_rel_type(const struct orels *r, const char *suffix);
/* Resolve target against the directory of part; false when it leaves the package. */
bool opc_resolve(const char *part, const char *target, char *out, size_t outlen);
/* docProps/core.xml and app.xml into d->meta. */
void opc_meta(struct odoc *d, struct ozip *z);
/*
 * The start every OOXML reader shares: core properties into d, then the main
 * part the package's officeDocument relation names (deflt when none) into
 * main (mainsz bytes).
 */
struct cw_doc_result opc_main_part(struct odoc *d, struct ozip *z, const char *deflt, char *main,
				   size_t mainsz);

/* ---- readers ---------------------------------------------------------------------------- */

struct cw_doc_result cw_office_docx(struct odoc *d, struct ozip *z);
struct cw_doc_result cw_office_pptx(struct odoc *d, struct ozip *z);
struct cw_doc_result cw_office_xlsx(struct odoc *d, struct ozip *z);
struct cw_doc_result cw_office_odf(struct odoc *d, struct ozip *z);
struct cw_doc_result cw_office_html(struct odoc *d, const unsigned char *data, size_t len);
/* Markdown, CSV and plain text (d->kind says which). */
struct cw_doc_result cw_office_text(struct odoc *d, const unsigned char *data, size_t len);

/* OCR each embedded image of the selected sections; page numbers with OCR into ocr_pages. */
struct cw_doc_result cw_office_ocr(struct odoc *d, struct ozip *z,
				   const struct cw_doc_convert_opts *o, const int *sel, int nsel,
				   json_t *ocr_pages);

#endif
