/* Signals and the warm/cold shutdown state machine (see shutdown.h). */
#include "consumer/shutdown.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "loop/loop.h"
#include "util/log.h"
#include "util/sdnotify.h"

#define COLD_GRACE 2.0     /* seconds the broker gets after a cold shutdown */
#define WARM_GRACE 10.0    /* ... after the last task of a warm shutdown */

struct cw_shutdown {
	struct cw_loop *loop;
	struct cw_shutdown_handler h;
	int sigfd;
	enum cw_phase phase;
	double deadline;           /* monotonic; 0 = not set yet */
	uint64_t wake;             /* timer that wakes the loop at the deadline */
	double wake_at;            /* ... and when it fires */
	int exit_code;
	double soft_timeout;       /* worker_soft_shutdown_timeout; 0 = none */
	bool remap_sigterm;        /* REMAP_SIGTERM=SIGQUIT */
	bool soft;                 /* a cold request started the soft stage */
	double soft_until;         /* monotonic end of the soft stage */
	uint64_t soft_wake;        /* timer that wakes the loop then */
};

bool cw_shutdown_remap_sigterm(const char *value)
{
	/* Celery compares the variable with "SIGQUIT" and nothing else */
	return value && !strcmp(value, "SIGQUIT");
}

static void on_wake(struct cw_loop *loop, void *arg)
{
	struct cw_shutdown *s = arg;
	(void)loop;
	s->wake = 0;   /* nothing to do: the before-sleep hook decides */
}

/* Make sure the loop wakes up at the deadline even when nothing else happens. */
static void wake_at_deadline(struct cw_shutdown *s, double now)
{
	if (s->wake && s->wake_at == s->deadline)
		return;
	if (s->wake)
		cw_loop_timer_cancel(s->loop, s->wake);
	s->wake_at = s->deadline;
	s->wake = cw_loop_timer(s->loop, s->deadline - now, on_wake, s);
	if (!s->wake)
		cw_log(CW_LOG_ERROR, "worker", "out of memory arming the shutdown deadline; "
		       "leaving when the broker is done");
}

static void on_soft_wake(struct cw_loop *loop, void *arg)
{
	struct cw_shutdown *s = arg;
	(void)loop;
	s->soft_wake = 0;   /* the before-sleep hook turns the soft stage cold */
}

/*
 * Before the loop sleeps: leave when shutting down and nothing is in
 * flight, or when the broker had its grace period.  The deadline starts at
 * the first look (2 s after a cold shutdown, none while a warm one waits for
 * tasks) and is at most 10 s once no task runs.
 */
static void before_sleep(struct cw_loop *loop, void *arg)
{
	struct cw_shutdown *s = arg;
	if (s->phase == CW_RUNNING)
		return;
	double now = cw_loop_now(loop);
	if (s->deadline == 0)
		s->deadline = s->phase == CW_COLD ? now + COLD_GRACE : HUGE_VAL;
	bool tasks = s->phase == CW_WARM && s->h.tasks_running(s->h.arg);
	if (tasks && s->soft && now >= s->soft_until) {
		cw_log(CW_LOG_WARNING, "worker", "soft shutdown timeout (%gs) reached: cancelling the "
		       "running tasks", s->soft_timeout);
		cw_shutdown_request(s, true);
		tasks = false;
		now = cw_loop_now(loop);
		s->deadline = now + COLD_GRACE;
	}
	if (tasks)
		return;
	if (!s->h.broker_pending(s->h.arg) || now > s->deadline) {
		cw_loop_stop(loop);
		return;
	}
	if (s->deadline > now + WARM_GRACE)
		s->deadline = now + WARM_GRACE;
	wake_at_deadline(s, now);
}

/*
 * A cold request with worker_soft_shutdown_timeout set: first a warm
 * shutdown with a deadline (Celery's wait_for_soft_shutdown, which starts
 * only when tasks are running).  Unlike Celery, which sleeps the whole
 * timeout, the stage ends as soon as the last task finishes.
 */
static void begin_soft(struct cw_shutdown *s)
{
	enum cw_phase was = s->phase;
	s->soft = true;
	s->phase = CW_WARM;
	cw_log(CW_LOG_WARNING, "worker", "worker: Hitting Ctrl+C again will terminate all running "
	       "tasks!");
	if (s->h.tasks_running(s->h.arg)) {
		cw_log(CW_LOG_WARNING, "worker", "Initiating Soft Shutdown, terminating in %g seconds",
		       s->soft_timeout);
		s->soft_until = cw_loop_now(s->loop) + s->soft_timeout;
		s->soft_wake = cw_loop_timer(s->loop, s->soft_timeout, on_soft_wake, s);
		if (!s->soft_wake)
			cw_log(CW_LOG_ERROR, "worker", "out of memory arming the soft shutdown timeout; "
			       "the next SIGQUIT cancels the tasks");
	} else {
		s->soft_until = cw_loop_now(s->loop);
	}
	cw_sd_notify("STOPPING=1\nSTATUS=soft shutdown");
	if (was == CW_RUNNING)
		s->h.begin(s->h.arg, CW_WARM);
}

void cw_shutdown_request(struct cw_shutdown *s, bool cold)
{
	if (cold && s->phase != CW_COLD && s->soft_timeout > 0 && !s->soft) {
		begin_soft(s);
		return;
	}
	if (cold) {
		if (s->phase != CW_COLD) {
			cw_log(CW_LOG_WARNING, "worker", "worker: Cold shutdown (MainProcess)");
			s->deadline = 0;   /* the broker's grace restarts: 2 s from now */
		}
		if (s->soft_wake)
			cw_loop_timer_cancel(s->loop, s->soft_wake);
		s->soft_wake = 0;
		s->phase = CW_COLD;
		s->exit_code = 1;
	} else if (s->phase == CW_RUNNING) {
		cw_log(CW_LOG_WARNING, "worker", "worker: Warm shutdown (MainProcess)");
		s->phase = CW_WARM;
	} else {
		return;
	}
	cw_sd_notify(cold ? "STOPPING=1\nSTATUS=cold shutdown" : "STOPPING=1\nSTATUS=warm shutdown");
	s->h.begin(s->h.arg, s->phase);
}

static void on_signal(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct cw_shutdown *s = arg;
	struct signalfd_siginfo si;
	(void)loop;
	(void)ev;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			s->h.child_exited(s->h.arg);
			break;
		case SIGTERM:
			cw_shutdown_request(s, s->remap_sigterm);
			break;
		case SIGINT:
			/* like Celery: the second Ctrl-C turns warm into cold (or soft) */
			if (s->phase == CW_RUNNING)
				cw_log(CW_LOG_WARNING, "worker", "worker: Hitting Ctrl+C again will "
				       "initiate cold shutdown, terminating all running tasks!");
			cw_shutdown_request(s, s->phase != CW_RUNNING);
			break;
		case SIGQUIT:
			cw_shutdown_request(s, true);
			break;
		default:
			break;
		}
	}
}

struct cw_shutdown *cw_shutdown_new(struct cw_loop *loop, const struct cw_shutdown_handler *h,
				    const struct cw_shutdown_opts *o, struct cw_error *err)
{
	struct cw_shutdown *s = calloc(1, sizeof(*s));
	sigset_t set;

	if (!s) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return NULL;
	}
	*s = (struct cw_shutdown){.loop = loop, .h = *h, .sigfd = -1, .phase = CW_RUNNING,
				  .soft_timeout = o ? o->soft_timeout : 0,
				  .remap_sigterm = o && o->remap_sigterm};
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	signal(SIGPIPE, SIG_IGN);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
	    (s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
	    cw_loop_watch(loop, s->sigfd, CW_READ, on_signal, s) < 0 ||
	    cw_loop_before_sleep(loop, before_sleep, s) != CW_OK) {
		cw_error_set(err, CW_EIO, "signal setup failed: %s", strerror(errno));
		cw_shutdown_free(s);
		return NULL;
	}
	return s;
}

void cw_shutdown_free(struct cw_shutdown *s)
{
	if (!s)
		return;
	if (s->wake)
		cw_loop_timer_cancel(s->loop, s->wake);
	if (s->soft_wake)
		cw_loop_timer_cancel(s->loop, s->soft_wake);
	cw_loop_before_sleep_remove(s->loop, before_sleep, s);
	if (s->sigfd >= 0) {
		cw_loop_watch(s->loop, s->sigfd, 0, NULL, NULL);
		close(s->sigfd);
	}
	free(s);
}

enum cw_phase cw_shutdown_phase(const struct cw_shutdown *s)
{
	return s->phase;
}

int cw_shutdown_exit_code(const struct cw_shutdown *s)
{
	return s->exit_code;
}
