/*
 * docconv as a cworker task module: the descriptor the worker's loader
 * registers (the docconv.* tasks, their settings, engine teardown).
 * Built-in: the worker links it and lists it in its table of built-in
 * modules; it uses nothing of the worker but include/cworker/.  The
 * conversion code itself is cworker-docconv.so, loaded by the first
 * docconv task a process runs (impl.h).
 */
#ifndef CW_DOCCONV_MODULE_H
#define CW_DOCCONV_MODULE_H

#include "cworker/module.h"

extern const struct cw_module cw_docconv_module;

/*
 * `cworker batch ...` (argv[0] = "batch"): loads cworker-docconv.so (from
 * CWORKER_DOCCONV_LIBRARY, beside the executable or the install directory)
 * and runs its document store command; the exit status.
 */
int cw_docconv_batch_main(int argc, char **argv);

#endif
