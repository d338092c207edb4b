/* Status codes shared by every module: 0 or a negative enum cw_err. */
#ifndef CW_ERR_H
#define CW_ERR_H

#include <stddef.h>

#define CW_MUST_CHECK __attribute__((warn_unused_result))

enum cw_err {
	CW_OK = 0,
	CW_ENOMEM = -1,     /* allocation failed */
	CW_EPROTO = -2,     /* malformed bytes from the network */
	CW_EAGAIN = -3,     /* need more bytes / would block */
	CW_EIO = -4,        /* socket or file error */
	CW_EINVAL = -5,     /* bad argument or configuration value */
	CW_EDECODE = -6,    /* payload cannot be decoded (bad JSON/base64) */
	CW_ECONTENT = -7,   /* content type not accepted (pickle, yaml, ...) */
	CW_EFORMAT = -8,    /* not a Celery task message at all */
	CW_EINVALTASK = -9, /* task message with invalid fields (args not a list...) */
	CW_ENOTFOUND = -10, /* missing key / unknown name */
	CW_ELIMIT = -11,    /* input over a configured limit */
	CW_EEXIST = -12,    /* the name is taken already */
};

/* Human-readable detail filled by a callee; msg is always NUL-terminated. */
struct cw_error {
	int code;
	char msg[256];
};

void cw_error_set(struct cw_error *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *cw_strerror(int code);

#endif
