/*
 * dup: a module registering a task name the built-in module already has;
 * loading it must stop the worker, naming the task and the module that has it.
 */
#include <cworker/module.h>

static enum cw_task_status t_noop(struct cw_task_ctx *ctx, json_t *args, json_t *kwargs,
				  json_t **result)
{
	(void)ctx;
	(void)args;
	(void)kwargs;
	*result = json_string("not the real noop");
	return CW_TASK_SUCCESS;
}

static const struct cw_task_def noop = {
	.abi_version = CW_ABI_VERSION, .name = "cworker.noop", .fn = t_noop, .doc = "a second noop",
};
static const struct cw_task_def *const tasks[] = {&noop, NULL};

CW_MODULE = {
	.abi_version = CW_ABI_VERSION,
	.size = sizeof(struct cw_module),
	.name = "dup",
	.version = "0",
	.tasks = tasks,
};
