/*
 * systemd notifications (see sdnotify.h): the datagram protocol, the
 * watchdog interval from the environment, and the periodic watchdog ping.
 */
#include "util/sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "loop/loop.h"
#include "util/err.h"
#include "util/log.h"

/* Fill addr from $NOTIFY_SOCKET; returns the address length, 0 = unset, -1 = unusable. */
static socklen_t notify_address(struct sockaddr_un *addr)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t n;

	if (!path || !*path)
		return 0;
	n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n >= sizeof(addr->sun_path)) {
		errno = EINVAL;
		return (socklen_t)-1;
	}
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, n);
	if (path[0] == '@') {
		/* abstract namespace: a leading NUL and no terminator counted */
		addr->sun_path[0] = '\0';
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

int cw_sd_notify(const char *state)
{
	struct sockaddr_un addr;
	socklen_t len = notify_address(&addr);
	int fd, saved;
	ssize_t sent;

	if (len == 0)
		return 0;
	if (len == (socklen_t)-1)
		return -1;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&addr, len);
	saved = errno;
	close(fd);
	if (sent < 0) {
		errno = saved;
		return -1;
	}
	return 1;
}

int cw_sd_notifyf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return cw_sd_notify(buf);
}

double cw_sd_watchdog_interval(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	char *end;
	unsigned long long us;

	if (!usec || !*usec)
		return 0;
	errno = 0;
	us = strtoull(usec, &end, 10);
	if (errno || *end || us == 0)
		return 0;
	if (pid && *pid) {
		errno = 0;
		unsigned long long p = strtoull(pid, &end, 10);
		if (errno || *end || p != (unsigned long long)getpid())
			return 0;
	}
	return (double)us / 2e6;
}

static bool wd_warned;

static void watchdog_tick(struct cw_loop *loop, void *arg)
{
	(void)loop;
	(void)arg;
	if (cw_sd_notify("WATCHDOG=1") < 0 && !wd_warned) {
		wd_warned = true;
		cw_log(CW_LOG_WARNING, "systemd", "watchdog notification failed: %s", strerror(errno));
	}
}

int cw_sd_watchdog_start(struct cw_loop *loop)
{
	double interval = cw_sd_watchdog_interval();

	if (interval <= 0 || !getenv("NOTIFY_SOCKET"))
		return CW_OK;
	/* a periodic timer re-arms in place, so once created the pings cannot stop for want of memory */
	if (!cw_loop_every(loop, interval, watchdog_tick, NULL)) {
		cw_log(CW_LOG_ERROR, "systemd", "cannot arm the watchdog timer: out of memory; "
		       "systemd would kill this worker after WatchdogSec");
		return CW_ENOMEM;
	}
	cw_log(CW_LOG_DEBUG, "systemd", "watchdog: pinging every %.3f s", interval);
	watchdog_tick(loop, NULL);
	return CW_OK;
}
