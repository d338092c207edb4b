/*
 * Loading task modules (see modules.h and include/cworker/module.h).
 *
 * Order: the built-in modules, then worker_task_modules in the order given,
 * then the *.so files of worker_task_modules_dir in name order (a file
 * already named explicitly is not loaded twice).  Shared objects are opened
 * with RTLD_NOW | RTLD_LOCAL: every symbol a module needs must resolve at
 * start (the cw_* API comes from the cworker executable itself), and two
 * modules never see each other's symbols.
 */
#include "tasks/modules.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cworker/module.h"
#include "util/log.h"

/* A refused module: the worker does not start (exit 1), unlike a usage error (64). */
#define CW_EMODULE CW_EIO

#ifdef CW_HAVE_DOCCONV
#include "docconv/module.h"
#endif

extern const struct cw_module cw_builtin_module;

/* Modules linked into this build, loaded before any shared object. */
static const struct cw_module *const builtin_modules[] = {
	&cw_builtin_module,
#ifdef CW_HAVE_DOCCONV
	&cw_docconv_module,
#endif
};

struct loaded {
	const struct cw_module *m;
	void *handle;              /* NULL for a built-in module */
	char *path;
};

static struct loaded *mods;
static int nmods;

/* cw_setting()'s view: the module's section, then the worker's settings. */
struct cw_settings {
	const struct cw_config *cfg;
	const char *module;
	char **texts;              /* values formatted for this configure call */
	int ntexts;
};

const char *cw_setting(const struct cw_settings *s, const char *key)
{
	struct cw_settings *w = (struct cw_settings *)s;
	char buf[4096];
	if (!s || !key)
		return NULL;
	const char *v = cw_config_module_value(s->cfg, s->module, key);
	if (v)
		return v;
	if (cw_config_value_text(s->cfg, key, buf, sizeof(buf)) != CW_OK)
		return NULL;
	char **t = realloc(w->texts, (size_t)(w->ntexts + 1) * sizeof(*t));
	if (!t)
		return NULL;
	w->texts = t;
	if (!(t[w->ntexts] = strdup(buf)))
		return NULL;
	return t[w->ntexts++];
}

static bool name_ok(const char *name)
{
	size_t n = 0;
	for (; name && name[n]; n++)
		if (!((name[n] >= 'a' && name[n] <= 'z') || (name[n] >= '0' && name[n] <= '9') ||
		      name[n] == '_'))
			return false;
	return n > 0 && n < 64;
}

/* The fields of struct cw_module this worker reads must be inside the module's descriptor. */
#define NEEDED_SIZE (offsetof(struct cw_module, exit) + sizeof(((struct cw_module *)0)->exit))

static int check_descriptor(const struct cw_module *m, const char *where, struct cw_error *err)
{
	if (m->abi_version != CW_ABI_VERSION) {
		cw_error_set(err, CW_EMODULE, "%s: built for cworker ABI version %u; this worker "
			     "speaks version %d", where, m->abi_version, CW_ABI_VERSION);
		return CW_EMODULE;
	}
	if (m->size < NEEDED_SIZE) {
		cw_error_set(err, CW_EMODULE, "%s: module descriptor of %zu bytes is too small (this "
			     "worker reads %zu)", where, m->size, (size_t)NEEDED_SIZE);
		return CW_EMODULE;
	}
	if (!name_ok(m->name)) {
		cw_error_set(err, CW_EMODULE, "%s: module name '%.60s' is not [a-z0-9_]+", where,
			     m->name ? m->name : "(null)");
		return CW_EMODULE;
	}
	for (int i = 0; i < nmods; i++)
		if (!strcmp(mods[i].m->name, m->name)) {
			cw_error_set(err, CW_EMODULE, "%s: a module named '%s' is already loaded (%s)",
				     where, m->name, mods[i].path);
			return CW_EMODULE;
		}
	return CW_OK;
}

static int register_tasks(struct cw_registry *r, const struct cw_module *m, const char *where,
			  bool diagnostic, struct cw_error *err)
{
	for (const struct cw_task_def *const *t = m->tasks; t && *t; t++) {
		if ((*t)->diagnostic && !diagnostic)
			continue;
		int rc = cw_registry_add_from(r, *t, m->name);
		if (rc == CW_EEXIST) {
			cw_error_set(err, CW_EMODULE, "%s: task name '%.100s' is already registered "
				     "(by module %s)", where, (*t)->name,
				     cw_registry_module(r, (*t)->name));
			return CW_EMODULE;
		}
		if (rc != CW_OK) {
			cw_error_set(err, CW_EMODULE, "%s: task '%.100s' has another ABI version or no "
				     "name or function", where, (*t)->name ? (*t)->name : "(null)");
			return CW_EMODULE;
		}
	}
	return CW_OK;
}

static int configure(const struct cw_module *m, const struct cw_config *cfg, const char *where,
		     struct cw_error *err)
{
	if (!m->configure)
		return CW_OK;
	struct cw_settings s = {.cfg = cfg, .module = m->name};
	char why[200] = "";
	int rc = m->configure(&s, why, sizeof(why));
	for (int i = 0; i < s.ntexts; i++)
		free(s.texts[i]);
	free(s.texts);
	if (rc != 0) {
		why[sizeof(why) - 1] = '\0';
		cw_error_set(err, CW_EMODULE, "%s: configure failed: %s", where,
			     why[0] ? why : "no reason given");
		return CW_EMODULE;
	}
	return CW_OK;
}

/* Check, configure and register m; on success it joins the list. */
static int add(struct cw_registry *r, const struct cw_config *cfg, bool conf,
	       const struct cw_module *m, void *handle, const char *path, struct cw_error *err)
{
	char where[PATH_MAX + 32];
	snprintf(where, sizeof(where), "task module %s", path);
	if (check_descriptor(m, where, err) != CW_OK)
		return CW_EMODULE;
	struct loaded *v = realloc(mods, (size_t)(nmods + 1) * sizeof(*v));
	if (!v) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	mods = v;
	mods[nmods] = (struct loaded){.m = m, .handle = handle, .path = strdup(path)};
	if (!mods[nmods].path) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	nmods++;
	if ((conf && configure(m, cfg, where, err) != CW_OK) ||
	    register_tasks(r, m, where, cfg->diagnostic_tasks, err) != CW_OK)
		return CW_EMODULE;
	cw_log(handle ? CW_LOG_INFO : CW_LOG_DEBUG, "worker", "task module %s %s (%s)", m->name,
	       m->version ? m->version : "", path);
	return CW_OK;
}

static bool loaded_path(const char *path)
{
	char real[PATH_MAX];
	if (!realpath(path, real))
		return false;
	for (int i = 0; i < nmods; i++) {
		char other[PATH_MAX];
		if (mods[i].handle && realpath(mods[i].path, other) && !strcmp(other, real))
			return true;
	}
	return false;
}

static int load_path(struct cw_registry *r, const struct cw_config *cfg, bool conf,
		     const char *path, struct cw_error *err)
{
	dlerror();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		cw_error_set(err, CW_EMODULE, "task module %s: cannot load it: %s (not a shared object "
			     "built for this system, or a symbol it needs is missing)", path,
			     why ? why : "unknown error");
		return CW_EMODULE;
	}
	const struct cw_module *m = dlsym(h, CW_MODULE_SYMBOL);
	if (!m) {
		cw_error_set(err, CW_EMODULE, "task module %s: missing symbol %s (define it with "
			     "CW_MODULE from <cworker/module.h>)", path, CW_MODULE_SYMBOL);
		dlclose(h);
		return CW_EMODULE;
	}
	int rc = add(r, cfg, conf, m, h, path, err);
	if (rc != CW_OK && (nmods == 0 || mods[nmods - 1].handle != h))
		dlclose(h);   /* not on the list: nobody else will close it */
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.so in dir, in name order; a missing dir is no error. */
static int load_dir(struct cw_registry *r, const struct cw_config *cfg, bool conf,
		    const char *dir, struct cw_error *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return CW_OK;
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;
	int rc = CW_OK;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < 4 || strcmp(e->d_name + len - 3, ".so") || e->d_name[0] == '.')
			continue;
		char **v = realloc(names, (n + 1) * sizeof(*v));
		if (!v || !(v[n] = malloc(strlen(dir) + len + 2))) {
			names = v ? v : names;
			rc = CW_ENOMEM;
			break;
		}
		names = v;
		sprintf(names[n++], "%s/%s", dir, e->d_name);
	}
	closedir(d);
	if (rc == CW_OK)
		if (n > 1)
			qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (rc == CW_OK && !loaded_path(names[i]))
			rc = load_path(r, cfg, conf, names[i], err);
		free(names[i]);
	}
	free(names);
	if (rc == CW_ENOMEM)
		cw_error_set(err, CW_ENOMEM, "out of memory");
	return rc;
}

int cw_modules_load(struct cw_registry *r, const struct cw_config *cfg, bool conf,
		    struct cw_error *err)
{
	for (size_t i = 0; i < sizeof(builtin_modules) / sizeof(builtin_modules[0]); i++)
		if (add(r, cfg, conf, builtin_modules[i], NULL, "(built in)", err) != CW_OK)
			return CW_EMODULE;
	if (cfg->task_modules && *cfg->task_modules) {
		char *list = strdup(cfg->task_modules), *save = NULL;
		if (!list) {
			cw_error_set(err, CW_ENOMEM, "out of memory");
			return CW_ENOMEM;
		}
		int rc = CW_OK;
		for (char *p = strtok_r(list, ",", &save); p && rc == CW_OK;
		     p = strtok_r(NULL, ",", &save)) {
			while (*p == ' ')
				p++;
			size_t len = strlen(p);
			while (len && p[len - 1] == ' ')
				p[--len] = '\0';
			if (*p)
				rc = load_path(r, cfg, conf, p, err);
		}
		free(list);
		if (rc != CW_OK)
			return rc;
	}
	if (cfg->task_modules_dir && *cfg->task_modules_dir)
		return load_dir(r, cfg, conf, cfg->task_modules_dir, err);
	return CW_OK;
}

int cw_modules_init(void)
{
	for (int i = 0; i < nmods; i++)
		if (mods[i].m->init && mods[i].m->init() != 0) {
			cw_log(CW_LOG_ERROR, "worker", "task module %s: init failed in this process",
			       mods[i].m->name);
			return CW_EIO;
		}
	return CW_OK;
}

void cw_modules_exit(void)
{
	for (int i = nmods - 1; i >= 0; i--)
		if (mods[i].m->exit)
			mods[i].m->exit();
}

void cw_modules_unload(void)
{
	for (int i = nmods - 1; i >= 0; i--) {
		if (mods[i].handle)
			dlclose(mods[i].handle);
		free(mods[i].path);
	}
	free(mods);
	mods = NULL;
	nmods = 0;
}

int cw_modules_count(void)
{
	return nmods;
}

const struct cw_module *cw_modules_at(int i)
{
	return i >= 0 && i < nmods ? mods[i].m : NULL;
}
