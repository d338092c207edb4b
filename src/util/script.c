#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "util/script.h"

const char *cw_script_sha(struct cw_script *s)
{
	if (!s->sha[0]) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int n = 0;
		if (EVP_Digest(s->text, strlen(s->text), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
			return NULL;
		for (unsigned int i = 0; i < n; i++)
			snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
	}
	return s->sha;
}

bool cw_script_missing(const char *err)
{
	return err && !strncmp(err, "NOSCRIPT", 8);
}
