/*
 * docconv as a cworker task module: the descriptor the worker's loader
 * registers (the docconv.* tasks, their settings, engine teardown).
 * Built-in: the worker links it and lists it in its table of built-in
 * modules; it uses nothing of the worker but include/cworker/.
 */
#ifndef CW_DOCCONV_MODULE_H
#define CW_DOCCONV_MODULE_H

#include "cworker/module.h"

extern const struct cw_module cw_docconv_module;

#endif
