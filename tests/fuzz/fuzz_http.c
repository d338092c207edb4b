/*
 * Fuzz target: bytes a client sends to --http go through the request-head
 * parser at every split point a slow client could produce, under small and
 * full size limits.  Whatever it decides must be consistent: a complete head
 * lies inside the bytes, has a GET-style method and a path starting with '/';
 * feeding more bytes never turns a refusal back into "need more".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *buf, size_t len, size_t max)
{
	struct cw_http_req r;
	int st = cw_http_parse(buf, len, max, &r);
	if (st != 0 && st != 200 && st != 400 && st != 414 && st != 431 && st != 505)
		abort();
	if (st == 200) {
		if (r.head_len == 0 || r.head_len > len || r.head_len > max || r.path[0] != '/' ||
		    !r.method[0] || strlen(r.path) >= sizeof(r.path))
			abort();
		for (const char *m = r.method; *m; m++)
			if (*m < 'A' || *m > 'Z')
				abort();
	}
	if (st == 0 && len >= max)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 3 * CW_HTTP_MAX_HEAD)
		return 0;
	/* a private copy: the parser must not read past len (ASan sees the end) */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	check(buf, size, CW_HTTP_MAX_HEAD);
	check(buf, size, 64);
	int prev = -1;
	for (size_t cut = 0; cut <= size && cut < 512; cut++) {
		struct cw_http_req r;
		int st = cw_http_parse(buf, cut, CW_HTTP_MAX_HEAD, &r);
		if (prev > 0 && prev != 200 && st == 0)
			abort();
		if (prev > 0)
			break;
		prev = st;
	}
	free(buf);
	return 0;
}
