#include "util/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum cw_log_level cw_log_threshold = CW_LOG_WARNING;
static char role[32] = "MainProcess";
static bool json_lines;
static char cur_task[256], cur_id[80];

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

void cw_log_set_json(bool json)
{
	json_lines = json;
}

void cw_log_set_task(const char *name, const char *id)
{
	snprintf(cur_task, sizeof(cur_task), "%s", name && id ? name : "");
	snprintf(cur_id, sizeof(cur_id), "%s", name && id ? id : "");
}

/* Bytes of one well-formed UTF-8 sequence at s[0..n), 0 if malformed. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t k = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
		 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
	if (!k || k > n)
		return 0;
	for (size_t i = 1; i < k; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
		return 0;
	return k;
}

/* Append s[0..n) as JSON string contents to out (at *len, capacity cap - 1 kept for NUL). */
static void json_escape(char *out, size_t *len, size_t cap, const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t o = *len;
	for (size_t i = 0; i < n;) {
		char esc[8];
		const char *put = esc;
		size_t k = 1, pn;
		if (s[i] == '"' || s[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)s[i];
			pn = 2;
		} else if (s[i] == '\n') {
			memcpy(esc, "\\n", 2);
			pn = 2;
		} else if (s[i] < 0x20 || s[i] == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
			pn = 6;
		} else if ((k = utf8_len(s + i, n - i)) == 0) {
			memcpy(esc, "\\ufffd", 6);
			pn = 6;
			k = 1;
		} else {
			put = (const char *)s + i;
			pn = k;
		}
		if (o + pn >= cap)
			break;
		memcpy(out + o, put, pn);
		o += pn;
		i += k;
	}
	*len = o;
}

/* A task named in the message as NAME[ID] (ID: letters, digits, '-'). */
static bool find_task(const char *msg, const char **name, size_t *nlen, const char **id,
		      size_t *ilen)
{
	for (const char *b = strchr(msg, '['); b; b = strchr(b + 1, '[')) {
		const char *e = b + 1;
		while ((*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
		       *e == '-')
			e++;
		if (*e != ']' || e == b + 1 || e - b > 65)
			continue;
		const char *n = b;
		while (n > msg && n[-1] != ' ' && n[-1] != '(' && n[-1] != ':')
			n--;
		if (n == b)
			continue;
		*name = n;
		*nlen = (size_t)(b - n);
		*id = b + 1;
		*ilen = (size_t)(e - b - 1);
		return true;
	}
	return false;
}

static void write_json(enum cw_log_level lvl, const char *component, const struct timeval *tv,
		       const char *msg)
{
	char line[4096];
	struct tm tm;
	size_t n;

	gmtime_r(&tv->tv_sec, &tm);
	n = strftime(line, sizeof(line), "{\"ts\":\"%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n,
			      ".%03ldZ\",\"level\":\"%s\",\"process\":\"", (long)(tv->tv_usec / 1000),
			      level_names[lvl]);
	json_escape(line, &n, sizeof(line) - 600, role, strlen(role));
	n += (size_t)snprintf(line + n, sizeof(line) - n, "\",\"pid\":%d,\"component\":\"",
			      (int)getpid());
	json_escape(line, &n, sizeof(line) - 600, component, strlen(component));
	const char *tname = cur_task, *tid = cur_id;
	size_t tnl = strlen(cur_task), til = strlen(cur_id);
	if (!tnl && !find_task(msg, &tname, &tnl, &tid, &til))
		tnl = til = 0;
	if (tnl) {
		memcpy(line + n, "\",\"task_name\":\"", 15);
		n += 15;
		json_escape(line, &n, sizeof(line) - 400, tname, tnl);
		memcpy(line + n, "\",\"task_id\":\"", 13);
		n += 13;
		json_escape(line, &n, sizeof(line) - 300, tid, til);
	}
	memcpy(line + n, "\",\"message\":\"", 13);
	n += 13;
	json_escape(line, &n, sizeof(line) - 4, msg, strlen(msg));
	memcpy(line + n, "\"}\n", 3);
	n += 3;
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void cw_log_write(enum cw_log_level lvl, const char *component, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	size_t n;
	va_list ap;

	gettimeofday(&tv, NULL);
	if (json_lines) {
		char msg[2048];
		va_start(ap, fmt);
		int k = vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (k < 0)
			msg[0] = '\0';
		write_json(lvl, component, &tv, msg);
		return;
	}
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
