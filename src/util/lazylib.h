/*
 * Shared libraries some configurations need and most do not (libpq for the
 * db+postgresql:// result backend, libcurl for http(s):// and s3:// storage):
 * dlopen()ed by soname the first time they are needed instead of linked, so
 * a worker that never uses them never maps them, nor what they pull in
 * (GnuTLS, Kerberos, LDAP, SASL, ...), and pays nothing for them at start or
 * in its idle children.
 *
 * The user lists the functions it calls; the library is opened once per
 * process, every symbol resolved at once (a missing one is a load failure),
 * and the outcome, good or bad, is kept for later calls.
 */
#ifndef CW_UTIL_LAZYLIB_H
#define CW_UTIL_LAZYLIB_H

#include <stdbool.h>

#include "util/err.h"

struct cw_lazylib {
	const char *soname;          /* "libpq.so.5" */
	const char *const *names;    /* the symbols, NULL-terminated */
	void **addr;                 /* where their addresses go, one slot per name */
	/* state */
	bool tried;
	void *handle;                /* NULL: not loaded (see error) */
	char error[200];
};

/*
 * Open lib (first call; later calls repeat the first outcome) and fill
 * lib->addr.  CW_OK, or CW_EIO with "cannot load SONAME: reason" in *err
 * (err may be NULL).  Never unloaded.
 */
int cw_lazylib_open(struct cw_lazylib *lib, struct cw_error *err) CW_MUST_CHECK;

#endif
