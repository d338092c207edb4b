/* Libraries opened on first use (see lazylib.h). */
#include "util/lazylib.h"

#include <dlfcn.h>
#include <stdio.h>

int cw_lazylib_open(struct cw_lazylib *lib, struct cw_error *err)
{
	if (!lib->tried) {
		lib->tried = true;
		dlerror();
		void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			const char *why = dlerror();
			snprintf(lib->error, sizeof(lib->error), "cannot load %s: %s", lib->soname,
				 why ? why : "unknown error");
		}
		for (size_t i = 0; h && lib->names[i]; i++) {
			lib->addr[i] = dlsym(h, lib->names[i]);
			if (!lib->addr[i]) {
				snprintf(lib->error, sizeof(lib->error), "cannot load %s: no symbol %s",
					 lib->soname, lib->names[i]);
				dlclose(h);
				h = NULL;
			}
		}
		lib->handle = h;
	}
	if (lib->handle)
		return CW_OK;
	if (err)
		cw_error_set(err, CW_EIO, "%s", lib->error);
	return CW_EIO;
}
