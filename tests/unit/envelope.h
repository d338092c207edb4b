/* Unit tests' one way to build a task message: a kombu envelope around a protocol-2 body. */
#ifndef CW_TEST_ENVELOPE_H
#define CW_TEST_ENVELOPE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

/* The envelope of task(*args, **kwargs) (JSON texts), as a Python producer sends it; malloc'd. */
static inline char *test_envelope(const char *task, const char *args, const char *kwargs)
{
	char body[512], *out = NULL;
	snprintf(body, sizeof(body), "[%s, %s, {\"callbacks\": null, \"errbacks\": null, "
		 "\"chain\": null, \"chord\": null}]", args, kwargs);
	char *b64 = cw_base64_encode((const unsigned char *)body, strlen(body), NULL);
	if (asprintf(&out, "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", "
		     "\"content-type\": \"application/json\", \"headers\": {\"lang\": \"py\", "
		     "\"task\": \"%s\", \"id\": \"6d6392f1-d723-4ebe-a5bc-5e9a1f900542\", "
		     "\"retries\": 0}, \"properties\": {\"delivery_tag\": \"t1\", "
		     "\"body_encoding\": \"base64\", \"delivery_info\": {\"exchange\": \"\", "
		     "\"routing_key\": \"celery\"}}}", b64, task) < 0)
		out = NULL;
	free(b64);
	return out;
}

#endif
