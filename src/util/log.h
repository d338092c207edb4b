/* Logging: one line per event, level-checked before arguments are built. */
#ifndef CW_LOG_H
#define CW_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum cw_log_level {
	CW_LOG_ERROR = 0,
	CW_LOG_WARNING = 1,
	CW_LOG_INFO = 2,
	CW_LOG_DEBUG = 3,
};

extern enum cw_log_level cw_log_threshold;

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
void cw_log_write(enum cw_log_level lvl, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define cw_log(lvl, component, ...)                                    \
	do {                                                           \
		if ((lvl) <= cw_log_threshold)                         \
			cw_log_write((lvl), (component), __VA_ARGS__); \
	} while (0)

#endif
