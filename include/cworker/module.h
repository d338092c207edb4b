/*
 * cworker public API: task modules.
 *
 * A module is a shared object that defines one `struct cw_module` named
 * cworker_module (CW_MODULE below).  The worker dlopen()s it in the master,
 * before the pool children fork, from --task-module PATH, the
 * worker_task_modules config key or the modules directory
 * (worker_task_modules_dir).  A module built against another ABI version,
 * missing the symbol, naming a task that is already registered, or whose
 * configure hook fails stops the worker at start (exit 1) with the reason.
 *
 * Life cycle:
 *   configure  once, in the master, before fork, with the module's settings
 *   init       once in every pool child (and in the master with --pool solo),
 *              before its first task
 *   exit       when such a process ends normally (only processes that ran init:
 *              with prefork the master never does, so what configure allocated is
 *              process-lifetime memory: keep it in static storage)
 * A crash in a task (SIGSEGV, abort) costs that task: it ends FAILURE
 * WorkerLostError (or is requeued with acks_late + reject_on_worker_lost) and
 * a new child takes the slot; the worker keeps serving.
 */
#ifndef CWORKER_MODULE_H
#define CWORKER_MODULE_H

#include <stddef.h>

#include "cworker/task.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cw_settings;

/*
 * The value of key for this module: the [module:NAME] section of the config
 * file first, then the worker's own setting of that name (e.g.
 * "docconv_roots", "result_backend"), as text; NULL when neither is set.
 * Only during configure: the strings are freed when it returns (copy what
 * you keep).
 */
const char *cw_setting(const struct cw_settings *s, const char *key);

struct cw_module {
	unsigned abi_version;      /* CW_ABI_VERSION */
	size_t size;               /* sizeof(struct cw_module) when the module was built */
	const char *name;          /* [a-z0-9_]+; its config section is [module:NAME] */
	const char *version;       /* the module's own version, logged when the module is loaded */
	const struct cw_task_def *const *tasks;   /* NULL-terminated */
	/* 0 or nonzero with a reason in err (errlen bytes); NULL = nothing to do */
	int (*configure)(const struct cw_settings *s, char *err, size_t errlen);
	/* 0 or nonzero (the child then exits and is replaced after a pause); NULL = nothing */
	int (*init)(void);
	void (*exit)(void);
	/* fields added by later ABI versions go here; the worker reads them only if size says so */
};

#define CW_MODULE_SYMBOL "cworker_module"
/* Define the module's descriptor: CW_MODULE = { CW_ABI_VERSION, sizeof(struct cw_module), ... }; */
#define CW_MODULE \
	__attribute__((visibility("default"))) const struct cw_module cworker_module

#ifdef __cplusplus
}
#endif

#endif
