/* Logging: one line per event, level-checked before arguments are built. */
#ifndef CW_LOG_H
#define CW_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "cworker/log.h"   /* levels, cw_log(), cw_log_write(), cw_log_threshold */

/* Parse "DEBUG"/"info"/"warning"/"warn"/"error"/"critical"/"fatal"; -1 if unknown. */
int cw_log_parse_level(const char *s);
/* Prefix written before every line, e.g. "MainProcess" or "Child-3". */
void cw_log_set_role(const char *role);
/* true: one JSON object per line (--log-format json); false: the text format. */
void cw_log_set_json(bool json);
/*
 * The task this process is running (a pool child around one task), named in
 * JSON lines; NULLs clear it.  Without one, a JSON line about a task found in
 * the message as NAME[ID] gets the fields from there.
 */
void cw_log_set_task(const char *name, const char *id);

#endif
