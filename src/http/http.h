/*
 * A tiny HTTP/1.x server for the master's event loop: GET (and HEAD) only,
 * one request per connection (Connection: close), bounded everything.
 *
 * Costs are capped so hostile clients cannot hurt the master, and floods
 * cannot lock the probes out: at most CW_HTTP_MAX_CONNS connections (fewer
 * when the process has under twice that many descriptors); at the cap the
 * oldest connection still waiting for its head (or done with its response)
 * is closed to admit the new one.  Request heads of at most CW_HTTP_MAX_HEAD
 * bytes (431), a head must arrive within CW_HTTP_HEAD_TIMEOUT seconds of the
 * accept (slowloris: closed), a response must drain within
 * CW_HTTP_WRITE_TIMEOUT seconds.  An idle connection costs a small struct;
 * a partial head a buffer grown as it arrives.  Nothing here blocks: every
 * socket is non-blocking and driven by the loop.
 */
#ifndef CW_HTTP_H
#define CW_HTTP_H

#include <stddef.h>

#include "http/metrics.h"
#include "util/err.h"

#define CW_HTTP_MAX_CONNS 4096
#define CW_HTTP_MIN_CONNS 16      /* the cap never drops below this for a low fd limit */
#define CW_HTTP_FD_WANT (2 * CW_HTTP_MAX_CONNS)  /* soft RLIMIT_NOFILE the full cap needs */
#define CW_HTTP_MAX_HEAD 8192
#define CW_HTTP_HEAD_TIMEOUT 2.0
#define CW_HTTP_WRITE_TIMEOUT 10.0

/* ---- request parsing (pure; fuzzed) ------------------------------------- */

struct cw_http_req {
	char method[16];
	char path[256];      /* without the query string */
	size_t head_len;     /* bytes of the request line and headers, blank line included */
};

/*
 * Parse the request head in buf[0..len).  Returns 0 while more bytes are
 * needed, 200 when *r is filled, or the status to refuse with: 400 (not
 * HTTP), 414 (path too long), 431 (head over max bytes), 505 (version).
 */
int cw_http_parse(const char *buf, size_t len, size_t max, struct cw_http_req *r);

/* ---- server ------------------------------------------------------------- */

struct cw_loop;
struct cw_http;

/*
 * Answer a parsed GET: fill body, set *ctype (static string), return the
 * status (200, 404, 503, ...).
 */
typedef int (*cw_http_route)(void *arg, const char *path, struct cw_mbuf *body,
			     const char **ctype);

/* Listen on "HOST:PORT" ("[::1]:PORT" for IPv6, ":PORT" = all addresses). */
struct cw_http *cw_http_new(struct cw_loop *loop, const char *listen, cw_http_route route,
			    void *arg, struct cw_error *err);
/* The bound port (for PORT 0). */
int cw_http_port(const struct cw_http *h);
/*
 * Change the connection cap (default: CW_HTTP_MAX_CONNS, or half the soft
 * RLIMIT_NOFILE at cw_http_new when that is lower, at least
 * CW_HTTP_MIN_CONNS); max < 1 means 1.  Connections over a lowered cap are
 * closed at once, oldest idle first.
 */
void cw_http_set_max_conns(struct cw_http *h, int max);
/* Connections open now. */
int cw_http_conns(const struct cw_http *h);
void cw_http_free(struct cw_http *h);

/*
 * Raise the soft RLIMIT_NOFILE to CW_HTTP_FD_WANT (or to the hard limit when
 * that is lower) if it is below: call once at start, before cw_http_new and
 * before the pool forks.  Never lowers it, never touches the hard limit.
 * Returns the soft limit now in force (LONG_MAX for unlimited), -1 if it
 * cannot be read.
 */
long cw_http_raise_fd_limit(void);

#endif
