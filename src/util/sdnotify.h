/*
 * systemd's service notification protocol without libsystemd: one datagram
 * per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
 * abstract name written with a leading '@').  Everything is a no-op when the
 * variable is unset, so the same binary runs under systemd, in a container
 * and in a terminal.
 *
 *   READY=1     once the broker connection is up and consuming has begun
 *   STOPPING=1  when a warm (or cold) shutdown begins
 *   WATCHDOG=1  every WatchdogSec/2 from the event loop, when $WATCHDOG_USEC
 *               is set (and $WATCHDOG_PID, if set, names this process)
 */
#ifndef CW_SDNOTIFY_H
#define CW_SDNOTIFY_H

struct cw_loop;

/*
 * Send state (newline-separated VAR=value assignments) to $NOTIFY_SOCKET.
 * Returns 1 when sent, 0 when there is no socket to notify, -1 on error
 * (errno set).  Never blocks.
 */
int cw_sd_notify(const char *state);

/* printf-style cw_sd_notify(); the text is cut at 1 KiB. */
int cw_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Seconds between watchdog pings (half of $WATCHDOG_USEC), or 0 when the
 * watchdog is off for this process.
 */
double cw_sd_watchdog_interval(void);

/*
 * If the watchdog is on: ping now and then every interval from a periodic
 * timer on loop, for as long as the loop runs.  A stuck loop stops the pings,
 * which is the point.  Returns CW_OK (also when the watchdog is off), or
 * CW_ENOMEM when the timer cannot be created (logged): the caller must fail
 * its start-up, since systemd would kill a worker that never pings.  Call once.
 */
int cw_sd_watchdog_start(struct cw_loop *loop);

#endif
