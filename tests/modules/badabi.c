/*
 * badabi: a module that claims an ABI version this worker does not speak;
 * loading it must stop the worker (exit 1) with the two versions named.
 */
#include <cworker/module.h>

static const struct cw_task_def *const tasks[] = {NULL};

CW_MODULE = {
	.abi_version = 999,
	.size = sizeof(struct cw_module),
	.name = "badabi",
	.version = "0",
	.tasks = tasks,
};
