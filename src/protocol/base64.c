/* Standard base64 (RFC 4648 section 4) with '=' padding, strict on input. */
#include <stdlib.h>

#include "protocol/protocol.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int cw_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
	size_t o = 0;

	if (len % 4)
		return CW_EDECODE;
	for (size_t i = 0; i < len; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad) /* data after padding */
				return CW_EDECODE;
			v[k] = value(c);
			if (v[k] < 0)
				return CW_EDECODE;
		}
		unsigned n = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 |
			     (unsigned)v[3];
		out[o++] = (unsigned char)(n >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(n >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)n;
	}
	*out_len = o;
	return CW_OK;
}

char *cw_base64_encode(const unsigned char *in, size_t len, size_t *out_len)
{
	size_t n = (len + 2) / 3 * 4;
	char *out = malloc(n + 1), *w = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		*w++ = alphabet[(v >> 18) & 63];
		*w++ = alphabet[(v >> 12) & 63];
		*w++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		*w++ = i + 2 < len ? alphabet[v & 63] : '=';
	}
	*w = '\0';
	if (out_len)
		*out_len = n;
	return out;
}
