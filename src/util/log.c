#include "util/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum cw_log_level cw_log_threshold = CW_LOG_WARNING;
static char role[32] = "MainProcess";

static const char *const level_names[] = {"ERROR", "WARNING", "INFO", "DEBUG"};

int cw_log_parse_level(const char *s)
{
	static const struct { const char *name; int lvl; } map[] = {
		{"debug", CW_LOG_DEBUG}, {"info", CW_LOG_INFO},
		{"warning", CW_LOG_WARNING}, {"warn", CW_LOG_WARNING},
		{"error", CW_LOG_ERROR}, {"critical", CW_LOG_ERROR},
		{"fatal", CW_LOG_ERROR},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcasecmp(s, map[i].name) == 0)
			return map[i].lvl;
	return -1;
}

void cw_log_set_role(const char *r)
{
	snprintf(role, sizeof(role), "%s", r);
}

void cw_log_write(enum cw_log_level lvl, const char *component, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	size_t n;
	va_list ap;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "[%Y-%m-%d %H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ",%03ld: %s/%s %s/%d] ",
			      (long)(tv.tv_usec / 1000), level_names[lvl], role,
			      component, (int)getpid());
	if (n < sizeof(line)) {
		va_start(ap, fmt);
		int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
		if (k > 0)
			n += (size_t)k;
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line keeps lines from different processes whole. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}
