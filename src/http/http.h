/*
 * A tiny HTTP/1.x server for the master's event loop: GET (and HEAD) only,
 * one request per connection (Connection: close), bounded everything.
 *
 * Costs are capped so hostile clients cannot hurt the master: at most
 * CW_HTTP_MAX_CONNS connections (more are answered 503 and closed at
 * once), request heads of at most CW_HTTP_MAX_HEAD bytes (431), a head
 * must arrive within CW_HTTP_HEAD_TIMEOUT seconds (slowloris: closed), a
 * response must drain within CW_HTTP_WRITE_TIMEOUT seconds.  Nothing here
 * blocks: every socket is non-blocking and driven by the loop.
 */
#ifndef CW_HTTP_H
#define CW_HTTP_H

#include <stddef.h>

#include "http/metrics.h"
#include "util/err.h"

#define CW_HTTP_MAX_CONNS 32
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
void cw_http_free(struct cw_http *h);

#endif
