/*
 * The rulings device: while a page runs, it keeps the straight horizontal and
 * vertical lines of its vector drawing (stroked lines, the edges of stroked and
 * filled rectangles, thin filled rectangles used as rules) for the table
 * finder, and forwards text and images to the structured-text device, so the
 * page is interpreted once for both.
 */
#include "docconv_int.h"

#include <math.h>
#include <stdlib.h>

#define MAX_RULINGS 4000  /* more: a drawing (map, chart), not tables; stop collecting */
#define THIN 3.0f         /* a filled rectangle this thin is a rule */
#define SLANT 0.5f        /* a line whose ends differ this much across is not straight */
#define SHORT 2.0f        /* shorter lines are dots and ticks */

struct rdev {
	fz_device super;
	fz_device *target;
	struct rulings *r;
};

/* What one path walk saw: its points, and whether it is made only of straight lines. */
struct walk {
	fz_matrix ctm;
	fz_point start, cur;
	bool curved;
	struct rulings *r;
	fz_point pts[64];     /* the lines of the path, as pairs */
	int npts;
	bool overflow;
};

static void push(struct rulings *r, bool horiz, float at, float a, float b)
{
	if (r->full)
		return;
	if (a > b) {
		float t = a;
		a = b;
		b = t;
	}
	if (b - a < SHORT)
		return;
	struct ruling **v = horiz ? &r->h : &r->v;
	int *n = horiz ? &r->nh : &r->nv, *cap = horiz ? &r->caph : &r->capv;
	if (r->nh + r->nv >= MAX_RULINGS) {
		r->full = true;
		return;
	}
	if (*n == *cap) {
		int nc = *cap ? *cap * 2 : 64;
		struct ruling *p = realloc(*v, (size_t)nc * sizeof(*p));
		if (!p) {
			r->full = true;
			return;
		}
		*v = p;
		*cap = nc;
	}
	(*v)[(*n)++] = (struct ruling){at, a, b};
}

/* A straight line in page space: kept when it is horizontal or vertical. */
static void line(struct rulings *r, fz_point p, fz_point q)
{
	if (fabsf(p.y - q.y) <= SLANT)
		push(r, true, (p.y + q.y) / 2, p.x, q.x);
	else if (fabsf(p.x - q.x) <= SLANT)
		push(r, false, (p.x + q.x) / 2, p.y, q.y);
}

/* A rectangle in page space: a rule when thin, else its four edges (cell frames). */
static void rect(struct rulings *r, fz_rect b, bool filled)
{
	float w = b.x1 - b.x0, h = b.y1 - b.y0;
	if (filled && h <= THIN && w <= THIN)
		return;
	if (filled && h <= THIN) {
		push(r, true, (b.y0 + b.y1) / 2, b.x0, b.x1);
		return;
	}
	if (filled && w <= THIN) {
		push(r, false, (b.x0 + b.x1) / 2, b.y0, b.y1);
		return;
	}
	push(r, true, b.y0, b.x0, b.x1);
	push(r, true, b.y1, b.x0, b.x1);
	push(r, false, b.x0, b.y0, b.y1);
	push(r, false, b.x1, b.y0, b.y1);
}

static void add_seg(struct walk *w, fz_point a, fz_point b)
{
	if (w->npts + 2 > (int)(sizeof(w->pts) / sizeof(w->pts[0]))) {
		w->overflow = true;
		return;
	}
	w->pts[w->npts++] = fz_transform_point(a, w->ctm);
	w->pts[w->npts++] = fz_transform_point(b, w->ctm);
}

static void w_moveto(fz_context *ctx, void *arg, float x, float y)
{
	struct walk *w = arg;
	(void)ctx;
	w->start = w->cur = fz_make_point(x, y);
}

static void w_lineto(fz_context *ctx, void *arg, float x, float y)
{
	struct walk *w = arg;
	fz_point p = fz_make_point(x, y);
	(void)ctx;
	add_seg(w, w->cur, p);
	w->cur = p;
}

static void w_curveto(fz_context *ctx, void *arg, float x1, float y1, float x2, float y2,
		      float x3, float y3)
{
	struct walk *w = arg;
	(void)ctx;
	(void)x1;
	(void)y1;
	(void)x2;
	(void)y2;
	w->curved = true;
	w->cur = fz_make_point(x3, y3);
}

static void w_closepath(fz_context *ctx, void *arg)
{
	struct walk *w = arg;
	(void)ctx;
	if (w->cur.x != w->start.x || w->cur.y != w->start.y)
		add_seg(w, w->cur, w->start);
	w->cur = w->start;
}

static void w_rectto(fz_context *ctx, void *arg, float x0, float y0, float x1, float y1)
{
	struct walk *w = arg;
	(void)ctx;
	fz_point a = {x0, y0}, b = {x1, y0}, c = {x1, y1}, d = {x0, y1};
	add_seg(w, a, b);
	add_seg(w, b, c);
	add_seg(w, c, d);
	add_seg(w, d, a);
	w->start = w->cur = a;
}

static const fz_path_walker walker = {
	.moveto = w_moveto, .lineto = w_lineto, .curveto = w_curveto,
	.closepath = w_closepath, .rectto = w_rectto,
};

/* The axis-aligned box of the walked segments, when they are exactly its edges. */
static bool as_box(const struct walk *w, fz_rect *box)
{
	if (w->npts != 8)
		return false;
	*box = fz_empty_rect;
	for (int i = 0; i < w->npts; i++)
		*box = fz_include_point_in_rect(*box, w->pts[i]);
	for (int i = 0; i < w->npts; i += 2) {
		fz_point p = w->pts[i], q = w->pts[i + 1];
		bool h = fabsf(p.y - q.y) <= SLANT, v = fabsf(p.x - q.x) <= SLANT;
		if (!h && !v)
			return false;
	}
	return true;
}

static void collect(fz_context *ctx, struct rdev *d, const fz_path *path, fz_matrix ctm,
		    bool filled)
{
	struct walk w = {.ctm = ctm, .r = d->r};
	if (d->r->full)
		return;
	fz_walk_path(ctx, path, &walker, &w);
	if (w.curved || w.overflow)
		return;  /* curves and long polylines are drawings */
	fz_rect box;
	if (as_box(&w, &box)) {
		rect(d->r, box, filled);
		return;
	}
	if (filled)
		return;  /* filled polygons other than boxes are shapes */
	for (int i = 0; i < w.npts; i += 2)
		line(d->r, w.pts[i], w.pts[i + 1]);
}

static void r_fill_path(fz_context *ctx, fz_device *dev, const fz_path *path, int even_odd,
			fz_matrix ctm, fz_colorspace *cs, const float *color, float alpha,
			fz_color_params cp)
{
	(void)even_odd;
	(void)cs;
	(void)color;
	(void)cp;
	if (alpha > 0)
		collect(ctx, (struct rdev *)dev, path, ctm, true);
}

static void r_stroke_path(fz_context *ctx, fz_device *dev, const fz_path *path,
			  const fz_stroke_state *ss, fz_matrix ctm, fz_colorspace *cs,
			  const float *color, float alpha, fz_color_params cp)
{
	(void)ss;
	(void)cs;
	(void)color;
	(void)cp;
	if (alpha > 0)
		collect(ctx, (struct rdev *)dev, path, ctm, false);
}

/* ---- forwarding to the text device ----------------------------------------------------- */

static fz_device *tgt(fz_device *dev)
{
	return ((struct rdev *)dev)->target;
}

static void r_fill_text(fz_context *ctx, fz_device *dev, const fz_text *text, fz_matrix ctm,
			fz_colorspace *cs, const float *color, float alpha, fz_color_params cp)
{
	fz_device *t = tgt(dev);
	if (t->fill_text)
		t->fill_text(ctx, t, text, ctm, cs, color, alpha, cp);
}

static void r_stroke_text(fz_context *ctx, fz_device *dev, const fz_text *text,
			  const fz_stroke_state *ss, fz_matrix ctm, fz_colorspace *cs,
			  const float *color, float alpha, fz_color_params cp)
{
	fz_device *t = tgt(dev);
	if (t->stroke_text)
		t->stroke_text(ctx, t, text, ss, ctm, cs, color, alpha, cp);
}

static void r_clip_text(fz_context *ctx, fz_device *dev, const fz_text *text, fz_matrix ctm,
			fz_rect scissor)
{
	fz_device *t = tgt(dev);
	if (t->clip_text)
		t->clip_text(ctx, t, text, ctm, scissor);
}

static void r_clip_stroke_text(fz_context *ctx, fz_device *dev, const fz_text *text,
			       const fz_stroke_state *ss, fz_matrix ctm, fz_rect scissor)
{
	fz_device *t = tgt(dev);
	if (t->clip_stroke_text)
		t->clip_stroke_text(ctx, t, text, ss, ctm, scissor);
}

static void r_ignore_text(fz_context *ctx, fz_device *dev, const fz_text *text, fz_matrix ctm)
{
	fz_device *t = tgt(dev);
	if (t->ignore_text)
		t->ignore_text(ctx, t, text, ctm);
}

static void r_fill_shade(fz_context *ctx, fz_device *dev, fz_shade *shd, fz_matrix ctm,
			 float alpha, fz_color_params cp)
{
	fz_device *t = tgt(dev);
	if (t->fill_shade)
		t->fill_shade(ctx, t, shd, ctm, alpha, cp);
}

static void r_fill_image(fz_context *ctx, fz_device *dev, fz_image *img, fz_matrix ctm,
			 float alpha, fz_color_params cp)
{
	fz_device *t = tgt(dev);
	if (t->fill_image)
		t->fill_image(ctx, t, img, ctm, alpha, cp);
}

static void r_fill_image_mask(fz_context *ctx, fz_device *dev, fz_image *img, fz_matrix ctm,
			      fz_colorspace *cs, const float *color, float alpha,
			      fz_color_params cp)
{
	fz_device *t = tgt(dev);
	if (t->fill_image_mask)
		t->fill_image_mask(ctx, t, img, ctm, cs, color, alpha, cp);
}

/*
 * Only the calls the structured-text device implements are forwarded, straight to its
 * functions: clips and groups do not reach it either way, and going through fz_clip_*
 * would keep a clip stack on it that nothing pops.
 */
fz_device *cw_doc_new_rulings_device(fz_context *ctx, fz_device *target, struct rulings *r)
{
	struct rdev *d = fz_new_derived_device(ctx, struct rdev);
	d->super.hints = target->hints;
	d->super.fill_path = r_fill_path;
	d->super.stroke_path = r_stroke_path;
	d->super.fill_text = r_fill_text;
	d->super.stroke_text = r_stroke_text;
	d->super.clip_text = r_clip_text;
	d->super.clip_stroke_text = r_clip_stroke_text;
	d->super.ignore_text = r_ignore_text;
	d->super.fill_shade = r_fill_shade;
	d->super.fill_image = r_fill_image;
	d->super.fill_image_mask = r_fill_image_mask;
	d->target = target;
	d->r = r;
	return &d->super;
}

void cw_doc_rulings_free(struct rulings *r)
{
	free(r->h);
	free(r->v);
	*r = (struct rulings){0};
}
