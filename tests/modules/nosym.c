/*
 * nosym: a valid shared object without the cworker_module symbol (a
 * library passed by mistake); loading it must stop the worker with the
 * symbol's name in the reason.
 */
#include <cworker/module.h>

int nosym_answer(void);

__attribute__((visibility("default"))) int nosym_answer(void)
{
	return 42;
}
