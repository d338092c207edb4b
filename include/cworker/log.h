/*
 * cworker public API: logging.  Lines go to the worker's log in its format
 * (text or --log-format json), tagged with the component and, inside a
 * task, the task's name and id.
 */
#ifndef CWORKER_LOG_H
#define CWORKER_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum cw_log_level {
	CW_LOG_ERROR = 0,
	CW_LOG_WARNING = 1,
	CW_LOG_INFO = 2,
	CW_LOG_DEBUG = 3,
};

/* Lines above this level are dropped (set from --loglevel); read it, don't write it. */
extern enum cw_log_level cw_log_threshold;

void cw_log_write(enum cw_log_level lvl, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Log one line; the arguments are only evaluated when the level is enabled. */
#define cw_log(lvl, component, ...)                                    \
	do {                                                           \
		if ((lvl) <= cw_log_threshold)                         \
			cw_log_write((lvl), (component), __VA_ARGS__); \
	} while (0)

#ifdef __cplusplus
}
#endif

#endif
