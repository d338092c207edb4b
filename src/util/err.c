#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

void cw_error_set(struct cw_error *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

const char *cw_strerror(int code)
{
	switch (code) {
	case CW_OK: return "ok";
	case CW_ENOMEM: return "out of memory";
	case CW_EPROTO: return "protocol error";
	case CW_EAGAIN: return "try again";
	case CW_EIO: return "I/O error";
	case CW_EINVAL: return "invalid argument";
	case CW_EDECODE: return "decode error";
	case CW_ECONTENT: return "content type not accepted";
	case CW_EFORMAT: return "unknown message format";
	case CW_EINVALTASK: return "invalid task message";
	case CW_ENOTFOUND: return "not found";
	case CW_ELIMIT: return "over limit";
	case CW_EEXIST: return "already exists";
	}
	return "unknown error";
}
