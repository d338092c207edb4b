/*
 * The prefork pool: N forked children, one task at a time each, fed over a
 * socketpair with length-prefixed frames (JOB: queue + envelope; DONE: the
 * cw_outcome bytes + the outbox), reaped and replaced when they die,
 * recycled after max-tasks / max-memory, grown and shrunk on request.
 * Empty slots are refilled RESPAWN_DELAY seconds later by a one-shot timer;
 * a periodic guard armed at start refills them when arming that timer failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "loop/loop.h"
#include "pool/pool.h"
#include "pool/pool_ops.h"
#include "tasks/canvas.h"
#include "tasks/exec_cancel.h"
#include "util/log.h"

/*
 * master -> child: JOB [u32 queue length, queue, u32 packed length, packed request
 *                  (cw_request_pack; length 0: none), envelope], or JOB_REPORT (the same
 *                  body: the master wants RETURNED)
 * child -> master: EVENT [u32 type length, type, JSON fields] (any number, while running),
 *                  RETURNED [no body] (JOB_REPORT only: the task returned, its result
 *                  store begins), then DONE [struct cw_outcome, outbox bytes]
 */
enum { FRAME_JOB = 1, FRAME_DONE = 2, FRAME_EVENT = 3, FRAME_JOB_REPORT = 4, FRAME_RETURNED = 5 };
/*
 * Or'ed into a JOB's type when worker_max_memory_per_child is set: the child
 * reads its RSS for DONE (one read of /proc/self/statm per task) only then.
 */
#define FRAME_WANT_RSS 0x100u
#define MAX_EVENT_FRAME (1u << 20)

/* seconds before an empty slot is refilled (a child dying at start must not fork in a loop) */
#define RESPAWN_DELAY 1.0
#define MAX_FRAME (256u << 20)

struct frame_hdr {
	uint32_t type;
	uint32_t len;
};

struct buf {
	char *p;
	size_t len, cap, off;
};

struct child {
	pid_t pid;
	int fd;
	int index;        /* ForkPoolWorker-<index> */
	bool busy;
	bool retiring;    /* asked to exit after its task: recycled, not lost */
	bool disabled;    /* slot removed by a shrink: no task, no respawn */
	int ntasks;       /* tasks finished by this process */
	enum cw_lost_reason kill_reason;
	bool signalled;   /* sent a terminating signal on request (revoke terminate) */
	double started;   /* when forked */
	struct buf in, out;
};

struct prefork {
	struct cw_loop *loop;
	bool stopping;
	int n;
	int next_index;
	struct child *c;
	const struct cw_exec_env *env;
	struct cw_pool_handler h;
	uint64_t respawn_timer;
	uint64_t guard_timer;    /* periodic, start to stop: refills when respawn_timer was lost */
	bool respawn_lost;       /* arming respawn_timer failed: the guard respawns */
	long max_tasks, max_kib;
	long recycles[CW_RECYCLE_N];
};

static volatile sig_atomic_t child_cancel;
static volatile sig_atomic_t child_alarm_armed;

static void on_child_io(struct cw_loop *loop, int fd, unsigned ev, void *arg);
static void respawn_cb(struct cw_loop *loop, void *arg);
static void respawn_later(struct prefork *p);
static void respawn_guard(struct cw_loop *loop, void *arg);

static int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return CW_ENOMEM;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return CW_OK;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){0};
}

/* ---- child side --------------------------------------------------------- */

static void on_sigalrm(int sig)
{
	(void)sig;
	/* the task stayed in code that cannot be interrupted past the grace time */
	if (cw_exec_abandon_ok)
		_exit(CW_EXIT_ABANDONED);
}

static void on_sigusr1(int sig)
{
	(void)sig;
	child_cancel = 1;
	cw_exec_cancel_now();
	if (cw_exec_abandon_ok) {
		struct itimerval it = {{0, 0}, {0, CW_ABANDON_GRACE_US}};
		child_alarm_armed = 1;
		setitimer(ITIMER_REAL, &it, NULL);
	}
}

/*
 * The child's own RSS after each task, from /proc/self/statm kept open: one
 * pread() per task instead of open, fstat, read and close.
 */
static long child_rss_kib(void)
{
	static int fd = -1;
	static long page_kib;
	char buf[128];
	long pages, rss;

	if (fd < 0) {
		fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
		page_kib = sysconf(_SC_PAGESIZE) / 1024;
		if (fd < 0)
			return 0;
	}
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%ld %ld", &pages, &rss) != 2)
		return 0;
	return rss * page_kib;
}

static int read_full(int fd, void *p, size_t n)
{
	char *q = p;
	while (n) {
		ssize_t r = read(fd, q, n);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		q += r;
		n -= (size_t)r;
	}
	return 1;
}

/* All of iov[0..n) in one writev() when the socket takes it, as it does for a frame. */
static int writev_full(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/*
 * The child's reads from the master: what one read() brings is kept, so a
 * frame's header and body (sent in one write) cost one system call.
 */
static struct {
	char buf[16384];
	size_t off, len;
} cin;

/* n bytes into p: 1, 0 on end of file, -1 on error. */
static int child_read(int fd, void *p, size_t n)
{
	char *q = p;
	while (n) {
		if (cin.off < cin.len) {
			size_t k = cin.len - cin.off < n ? cin.len - cin.off : n;
			memcpy(q, cin.buf + cin.off, k);
			cin.off += k;
			q += k;
			n -= k;
			continue;
		}
		if (n >= sizeof(cin.buf))
			return read_full(fd, q, n); /* a large body goes straight to its buffer */
		ssize_t r = read(fd, cin.buf, sizeof(cin.buf));
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		cin.off = 0;
		cin.len = (size_t)r;
	}
	return 1;
}

static void close_other_fds(int keep)
{
	/* keep stdio and our socket; drop the master's epoll, signalfd, broker sockets */
	if (keep != 3) {
		dup2(keep, 3);
		close(keep);
	}
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4u, ~0u, 0u) == 0)
		return;
#endif
	for (int fd = 4; fd < 65536; fd++)
		close(fd);
}

/* The child's socket (fd 3 after close_other_fds), for events sent while a task runs. */
static int child_fd = -1;

static void child_emit(void *arg, const char *type, const char *fields, size_t len)
{
	(void)arg;
	uint32_t tlen = (uint32_t)strlen(type);
	if (child_fd < 0 || 4 + (size_t)tlen + len > MAX_EVENT_FRAME) {
		cw_log(CW_LOG_WARNING, "pool", "event %s of %zu bytes not sent", type, len);
		return;
	}
	struct frame_hdr h = {FRAME_EVENT, (uint32_t)(4 + tlen + len)};
	struct iovec iov[] = {{&h, sizeof(h)}, {&tlen, 4}, {(void *)type, tlen},
			      {(void *)fields, len}};
	if (writev_full(child_fd, iov, 4) < 0)
		cw_log(CW_LOG_WARNING, "pool", "event %s not sent: the master is gone", type);
}

static void child_returned(void *arg)
{
	(void)arg;
	struct frame_hdr h = {FRAME_RETURNED, 0};
	struct iovec iov[] = {{&h, sizeof(h)}};
	if (child_fd >= 0)
		(void)writev_full(child_fd, iov, 1);
}

static __attribute__((noreturn)) void child_main(struct prefork *p, int fd, int index)
{
	sigset_t all;
	char role[32];
	struct sigaction sa = {0};

	snprintf(role, sizeof(role), "ForkPoolWorker-%d", index);
	cw_log_set_role(role);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGINT, SIG_IGN);   /* Ctrl-C reaches the whole group: the master decides */
	signal(SIGTERM, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	sa.sa_handler = on_sigusr1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_sigalrm;
	sigaction(SIGALRM, &sa, NULL);
	close_other_fds(fd);
	fd = 3;
	cw_backend_reset(p->env->backend);
	cw_backend_retry_cap(-1); /* the master's cap is not for task results */

	struct cw_exec_env env = *p->env;
	env.cancel = &child_cancel;
	env.emit = child_emit;
	child_fd = fd;
	if (env.process_init && env.process_init() != CW_OK)
		_exit(1);   /* reported by the reaper; the pool replaces it after a pause */
	for (;;) {
		struct frame_hdr h;
		int r = child_read(fd, &h, sizeof(h));
		if (r <= 0)
			break; /* master closed the socket: exit quietly */
		bool want_rss = h.type & FRAME_WANT_RSS;
		h.type &= ~FRAME_WANT_RSS;
		if ((h.type != FRAME_JOB && h.type != FRAME_JOB_REPORT) || h.len > MAX_FRAME ||
		    h.len < 8)
			break;
		env.returned = h.type == FRAME_JOB_REPORT ? child_returned : NULL;
		char *msg = malloc(h.len + 1);
		if (!msg || child_read(fd, msg, h.len) <= 0) {
			free(msg);
			break;
		}
		msg[h.len] = '\0';
		uint32_t qlen, plen;
		memcpy(&qlen, msg, 4);
		if (qlen > h.len - 8) {
			free(msg);
			break;
		}
		memcpy(&plen, msg + 4 + qlen, 4);
		if (plen > h.len - 8 - qlen) {
			free(msg);
			break;
		}
		char *queue = strndup(msg + 4, qlen);
		const char *packed = msg + 8 + qlen;
		const char *raw = packed + plen;
		size_t rawlen = h.len - 8 - qlen - plen;
		struct cw_outcome o;
		struct cw_outbox ob = {0};
		child_cancel = 0;
		cw_exec_abandon_ok = 0;
		cw_exec_message(&env, raw, rawlen, plen ? packed : NULL, plen, queue ? queue : "", &o, &ob);
		free(queue);
		free(msg);
		cw_exec_abandon_ok = 0;
		if (child_alarm_armed) {
			/* only a cancel arms it, and none can arm it past this point */
			setitimer(ITIMER_REAL, &(struct itimerval){{0, 0}, {0, 0}}, NULL);
			child_alarm_armed = 0;
		}
		o.rss_kib = want_rss ? child_rss_kib() : 0;
		o.publish_len = ob.len;
		if (o.publish_len > MAX_FRAME - sizeof(o)) {
			cw_log(CW_LOG_ERROR, "pool", "follow-up messages of %zu bytes are over the "
			       "frame limit; dropped", o.publish_len);
			o.publish_len = 0;
		}
		struct frame_hdr d = {FRAME_DONE, (uint32_t)(sizeof(o) + o.publish_len)};
		struct iovec iov[] = {{&d, sizeof(d)}, {&o, sizeof(o)}, {ob.buf, o.publish_len}};
		int wr = writev_full(fd, iov, o.publish_len ? 3 : 2) < 0;
		cw_outbox_free(&ob);
		if (wr)
			break;
	}
	if (env.process_exit)
		env.process_exit();
	cw_backend_close(p->env->backend);
	_exit(0);
}

/* ---- master side -------------------------------------------------------- */

static int spawn(struct prefork *p, int slot)
{
	int sv[2];
	struct child *c = &p->c[slot];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		cw_log(CW_LOG_ERROR, "pool", "socketpair: %s", strerror(errno));
		return CW_EIO;
	}
	int index = ++p->next_index;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		cw_log(CW_LOG_ERROR, "pool", "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return CW_EIO;
	}
	if (pid == 0) {
		close(sv[0]);
		child_main(p, sv[1], index);
	}
	close(sv[1]);
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	buf_free(&c->in);
	buf_free(&c->out);
	*c = (struct child){.pid = pid, .fd = sv[0], .index = index, .started = cw_now()};
	cw_loop_watch(p->loop, c->fd, CW_READ, on_child_io, p);
	cw_log(CW_LOG_DEBUG, "pool", "started ForkPoolWorker-%d pid %d", index, (int)pid);
	return CW_OK;
}

static int slot_of_fd(const struct prefork *p, int fd)
{
	for (int i = 0; i < p->n; i++)
		if (p->c[i].fd == fd)
			return i;
	return -1;
}

static void child_close(struct prefork *p, struct child *c)
{
	if (c->fd >= 0) {
		cw_loop_watch(p->loop, c->fd, 0, NULL, NULL);
		close(c->fd);
		c->fd = -1;
	}
}

static void flush_out(struct prefork *p, struct child *c)
{
	while (c->out.off < c->out.len) {
		ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			child_close(p, c); /* the child is gone; the reaper reports it */
			return;
		}
		c->out.off += (size_t)w;
	}
	if (c->out.off == c->out.len) {
		c->out.len = c->out.off = 0;
		cw_loop_watch(p->loop, c->fd, CW_READ, on_child_io, p);
	} else {
		cw_loop_watch(p->loop, c->fd, CW_READ | CW_WRITE, on_child_io, p);
	}
}

/* Ask an idle child to exit (EOF on its socket); the reaper replaces it. */
static void retire(struct prefork *p, struct child *c)
{
	c->retiring = true;
	child_close(p, c);
}

/* The master reads counter names as strings: keep a broken child's bytes inside the table. */
static void sanitize(struct cw_outcome *o)
{
	if (o->ncounters < 0 || o->ncounters > CW_OUTCOME_COUNTERS)
		o->ncounters = 0;
	for (int i = 0; i < CW_OUTCOME_COUNTERS; i++)
		o->counters[i].name[CW_COUNTER_NAME_MAX - 1] = '\0';
}

static void on_child_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct prefork *p = arg;
	int slot = slot_of_fd(p, fd);
	(void)loop;
	if (slot < 0)
		return;
	struct child *c = &p->c[slot];
	if (ev & CW_WRITE)
		flush_out(p, c);
	if (!(ev & CW_READ) || c->fd < 0)
		return;
	char tmp[4096];
	ssize_t r = read(fd, tmp, sizeof(tmp));
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
		child_close(p, c);
		return;
	}
	if (r < 0 || buf_append(&c->in, tmp, (size_t)r) != CW_OK)
		return;
	while (c->in.len >= sizeof(struct frame_hdr)) {
		struct frame_hdr h;
		memcpy(&h, c->in.p, sizeof(h));
		if (h.type == FRAME_EVENT && h.len >= 4 && h.len <= MAX_EVENT_FRAME) {
			if (c->in.len < sizeof(h) + h.len)
				break;
			const char *b = c->in.p + sizeof(h);
			uint32_t tlen;
			memcpy(&tlen, b, 4);
			if (tlen > 0 && tlen < 80 && tlen <= h.len - 4 && p->h.on_event) {
				char type[80];
				memcpy(type, b + 4, tlen);
				type[tlen] = '\0';
				p->h.on_event(p->h.arg, slot, type, b + 4 + tlen, h.len - 4 - tlen);
			}
			memmove(c->in.p, c->in.p + sizeof(h) + h.len, c->in.len - sizeof(h) - h.len);
			c->in.len -= sizeof(h) + h.len;
			continue;
		}
		if (h.type == FRAME_RETURNED && h.len == 0) {
			memmove(c->in.p, c->in.p + sizeof(h), c->in.len - sizeof(h));
			c->in.len -= sizeof(h);
			if (c->busy && p->h.on_returned)
				p->h.on_returned(p->h.arg, slot);
			if (c->fd < 0)
				return;
			continue;
		}
		if (h.type != FRAME_DONE || h.len < sizeof(struct cw_outcome) || h.len > MAX_FRAME) {
			cw_log(CW_LOG_ERROR, "pool", "ForkPoolWorker-%d sent a bad frame; replacing it",
			       c->index);
			kill(c->pid, SIGKILL);
			child_close(p, c);
			return;
		}
		if (c->in.len < sizeof(h) + h.len)
			break;
		struct cw_outcome o;
		memcpy(&o, c->in.p + sizeof(h), sizeof(o));
		if (o.publish_len != h.len - sizeof(o))
			o.publish_len = 0;
		sanitize(&o);
		c->busy = false;
		c->ntasks++;
		p->h.on_done(p->h.arg, slot, &o, c->in.p + sizeof(h) + sizeof(o));
		memmove(c->in.p, c->in.p + sizeof(h) + h.len, c->in.len - sizeof(h) - h.len);
		c->in.len -= sizeof(h) + h.len;
		if (p->max_tasks && c->ntasks >= p->max_tasks) {
			cw_log(CW_LOG_INFO, "pool", "ForkPoolWorker-%d pid:%d reached max-tasks-per-child "
			       "(%d); replacing it", c->index, (int)c->pid, c->ntasks);
			p->recycles[CW_RECYCLE_MAX_TASKS]++;
			retire(p, c);
		} else if (p->max_kib && o.rss_kib > p->max_kib) {
			cw_log(CW_LOG_WARNING, "pool", "ForkPoolWorker-%d pid:%d RSS %ld KiB is over "
			       "max-memory-per-child (%ld KiB); replacing it", c->index, (int)c->pid,
			       o.rss_kib, p->max_kib);
			p->recycles[CW_RECYCLE_MAX_MEMORY]++;
			retire(p, c);
		}
		if (c->fd < 0)
			return;
		if (p->h.on_idle)
			p->h.on_idle(p->h.arg);
	}
}

static void *pf_create(struct cw_loop *loop, int n, const struct cw_exec_env *env,
		       const struct cw_pool_handler *h)
{
	struct prefork *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->loop = loop;
	p->n = n;
	p->env = env;
	p->h = *h;
	p->c = calloc((size_t)p->n, sizeof(struct child));
	if (!p->c) {
		free(p);
		return NULL;
	}
	for (int i = 0; i < p->n; i++)
		p->c[i].fd = -1;
	return p;
}

static int pf_start(void *self)
{
	struct prefork *p = self;
	/* created before any fork: a pool that could be stranded with empty slots does not start */
	if (!p->guard_timer)
		p->guard_timer = cw_loop_every(p->loop, RESPAWN_DELAY, respawn_guard, p);
	if (!p->guard_timer) {
		cw_log(CW_LOG_ERROR, "pool", "cannot arm the respawn guard timer (out of memory)");
		return CW_ENOMEM;
	}
	for (int i = 0; i < p->n; i++)
		if (spawn(p, i) != CW_OK)
			return CW_EIO;
	return CW_OK;
}

static int pf_idle_slot(const void *self)
{
	const struct prefork *p = self;
	for (int i = 0; i < p->n; i++)
		if (!p->c[i].busy && !p->c[i].disabled && p->c[i].pid > 0 && p->c[i].fd >= 0)
			return i;
	return -1;
}

static int pf_slots(const void *self)
{
	const struct prefork *p = self;
	return p->n;
}

static int pf_processes(const void *self, pid_t *pids, int max)
{
	const struct prefork *p = self;
	int k = 0;
	for (int i = 0; i < p->n && k < max; i++)
		if (!p->c[i].disabled && p->c[i].pid > 0)
			pids[k++] = p->c[i].pid;
	return k;
}

static int pf_busy(const void *self)
{
	const struct prefork *p = self;
	int n = 0;
	for (int i = 0; i < p->n; i++)
		n += p->c[i].busy;
	return n;
}

static int pf_size(const void *self)
{
	const struct prefork *p = self;
	int n = 0;
	for (int i = 0; i < p->n; i++)
		n += !p->c[i].disabled;
	return n;
}

static int pf_grow(void *self, int n)
{
	struct prefork *p = self;
	if (n < 1)
		return CW_EINVAL;
	/* first bring back slots a shrink took away */
	for (int i = 0; i < p->n && n > 0; i++)
		if (p->c[i].disabled) {
			p->c[i].disabled = false;
			n--;
			if (p->c[i].pid == 0 && spawn(p, i) != CW_OK)
				respawn_later(p);
		}
	if (n == 0)
		return CW_OK;
	struct child *c = realloc(p->c, (size_t)(p->n + n) * sizeof(*c));
	if (!c)
		return CW_ENOMEM;
	p->c = c;
	for (int i = p->n; i < p->n + n; i++)
		c[i] = (struct child){.fd = -1};
	int first = p->n;
	p->n += n;
	for (int i = first; i < p->n; i++)
		if (spawn(p, i) != CW_OK)
			respawn_later(p);
	return CW_OK;
}

static int pf_shrink(void *self, int n)
{
	struct prefork *p = self;
	if (n < 1)
		return CW_EINVAL;
	/* like billiard: only idle processes go, newest slots first */
	for (int i = p->n - 1; i >= 0 && n > 0; i--) {
		struct child *c = &p->c[i];
		if (c->disabled || c->busy || c->pid <= 0 || pf_size(p) <= 1)
			continue;
		c->disabled = true;
		retire(p, c);
		cw_log(CW_LOG_INFO, "pool", "ForkPoolWorker-%d pid:%d leaves the pool (shrink)",
		       c->index, (int)c->pid);
		n--;
	}
	return n == 0 ? CW_OK : CW_EAGAIN;
}

static pid_t pf_pid(const void *self, int slot)
{
	const struct prefork *p = self;
	return slot >= 0 && slot < p->n ? p->c[slot].pid : -1;
}

static int pf_submit(void *self, int slot, const struct cw_job *job)
{
	struct prefork *p = self;
	if (slot < 0 || slot >= p->n || p->c[slot].busy)
		return CW_EINVAL;
	struct child *c = &p->c[slot];
	uint32_t qlen = (uint32_t)strlen(job->queue);
	uint32_t plen = job->packed ? (uint32_t)job->packed_len : 0;
	if (job->len > MAX_FRAME || (size_t)qlen + plen + 8 > MAX_FRAME - job->len)
		return CW_ELIMIT;
	struct frame_hdr h = {(job->report_return ? FRAME_JOB_REPORT : FRAME_JOB) |
				      (p->max_kib ? FRAME_WANT_RSS : 0),
			      (uint32_t)(8 + qlen + plen + job->len)};
	if (buf_append(&c->out, &h, sizeof(h)) || buf_append(&c->out, &qlen, 4) ||
	    buf_append(&c->out, job->queue, qlen) || buf_append(&c->out, &plen, 4) ||
	    (job->packed && buf_append(&c->out, job->packed, plen)) ||
	    buf_append(&c->out, job->raw, job->len))
		return CW_ENOMEM;
	c->busy = true;
	flush_out(p, c);
	return CW_OK;
}

/* Refill the empty slots in RESPAWN_DELAY seconds: one pending timer serves them all. */
static void respawn_later(struct prefork *p)
{
	if (p->respawn_timer)
		return;
	p->respawn_timer = cw_loop_timer(p->loop, RESPAWN_DELAY, respawn_cb, p);
	if (!p->respawn_timer && !p->respawn_lost) {
		p->respawn_lost = true;
		cw_log(CW_LOG_ERROR, "pool", "cannot arm the respawn timer (out of memory): empty "
		       "pool slots are refilled by the guard within %.0f s", RESPAWN_DELAY);
	}
}

/* Periodic from start to stop; idle unless a respawn timer could not be armed. */
static void respawn_guard(struct cw_loop *loop, void *arg)
{
	struct prefork *p = arg;
	if (p->respawn_lost && !p->respawn_timer) {
		p->respawn_lost = false;
		respawn_cb(loop, p);
	}
}

static void respawn_cb(struct cw_loop *loop, void *arg)
{
	struct prefork *p = arg;
	(void)loop;
	p->respawn_timer = 0;
	bool spawned = false;
	for (int i = 0; i < p->n && !p->stopping; i++)
		if (p->c[i].pid == 0 && !p->c[i].disabled) {
			if (spawn(p, i) == CW_OK)
				spawned = true;
			else
				respawn_later(p);
		}
	if (spawned && p->h.on_idle)
		p->h.on_idle(p->h.arg);
}

static void describe(int st, char *out, size_t n)
{
	if (WIFSIGNALED(st))
		snprintf(out, n, "signal %d (%s)", WTERMSIG(st), sigabbrev_np(WTERMSIG(st)) ?
			 sigabbrev_np(WTERMSIG(st)) : "?");
	else
		snprintf(out, n, "exitcode %d", WEXITSTATUS(st));
}

static void pf_reap(void *self)
{
	struct prefork *p = self;
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		int slot = -1;
		for (int i = 0; i < p->n; i++)
			if (p->c[i].pid == pid)
				slot = i;
		if (slot < 0)
			continue;
		struct child *c = &p->c[slot];
		char how[64];
		describe(st, how, sizeof(how));
		bool was_busy = c->busy, retired = c->retiring && !c->busy;
		enum cw_lost_reason why = c->kill_reason;
		bool signalled = c->signalled;
		double lived = cw_now() - c->started;
		child_close(p, c);
		buf_free(&c->in);
		buf_free(&c->out);
		c->busy = false;
		c->pid = 0;
		c->retiring = false;
		c->kill_reason = CW_LOST_CRASH;
		c->signalled = false;
		if (p->stopping || c->disabled)
			continue;
		if (!retired) {
			static const enum cw_recycle_reason by_lost[] = {
				[CW_LOST_CRASH] = CW_RECYCLE_CRASH, [CW_LOST_TIMEOUT] = CW_RECYCLE_TIME_LIMIT,
				[CW_LOST_MEMORY] = CW_RECYCLE_MEMORY_LIMIT,
				[CW_LOST_TERMINATED] = CW_RECYCLE_TERMINATED};
			p->recycles[why == CW_LOST_CRASH && signalled ? CW_RECYCLE_TERMINATED
								      : by_lost[why]]++;
			cw_log(was_busy ? CW_LOG_ERROR : CW_LOG_WARNING, "pool",
			       "Process 'ForkPoolWorker-%d' pid:%d exited with '%s'", c->index,
			       (int)pid, how);
		}
		if (was_busy)
			p->h.on_lost(p->h.arg, slot, pid, st, why);
		/* a child that dies right after start would make us fork in a loop */
		if (lived < 1.0 && !was_busy && !retired) {
			respawn_later(p);
		} else if (spawn(p, slot) == CW_OK) {
			if (p->h.on_idle)
				p->h.on_idle(p->h.arg);
		} else {
			respawn_later(p);
		}
	}
}

static long pf_recycles(const void *self, enum cw_recycle_reason why)
{
	const struct prefork *p = self;
	return p->recycles[why];
}

static void pf_set_recycling(void *self, long max_tasks, long max_kib)
{
	struct prefork *p = self;
	p->max_tasks = max_tasks;
	p->max_kib = max_kib;
}

static int pf_signal(void *self, int slot, int sig)
{
	struct prefork *p = self;
	if (slot < 0 || slot >= p->n || p->c[slot].pid <= 0)
		return CW_EINVAL;
	if (sig != SIGUSR1)
		p->c[slot].signalled = true;
	return kill(p->c[slot].pid, sig) == 0 ? CW_OK : CW_EINVAL;
}

static void pf_kill_slot(void *self, int slot, enum cw_lost_reason why)
{
	struct prefork *p = self;
	if (slot < 0 || slot >= p->n || p->c[slot].pid <= 0)
		return;
	p->c[slot].kill_reason = why;
	kill(p->c[slot].pid, SIGKILL);
}

static long pf_rss_kib(const void *self, int slot)
{
	const struct prefork *p = self;
	if (slot < 0 || slot >= p->n || p->c[slot].pid <= 0)
		return 0;
	return cw_proc_rss_kib(p->c[slot].pid);
}

/*
 * Cold shutdown: SIGKILL every child, then read what each wrote before it
 * died.  A task that finished in the same instant has its outcome in the
 * socket: it is reported (result stored, message acknowledged) instead of the
 * message going back to the queue and the task running a second time.
 */
static void pf_kill(void *self)
{
	struct prefork *p = self;
	p->stopping = true;
	for (int i = 0; i < p->n; i++) {
		struct child *c = &p->c[i];
		if (c->pid <= 0)
			continue;
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
		int avail = 0;
		while (c->fd >= 0 && ioctl(c->fd, FIONREAD, &avail) == 0 && avail > 0)
			on_child_io(p->loop, c->fd, CW_READ, p);
		child_close(p, c);
	}
}

static void pf_stop(void *self, double wait)
{
	struct prefork *p = self;
	p->stopping = true;
	if (p->respawn_timer)
		cw_loop_timer_cancel(p->loop, p->respawn_timer);
	cw_loop_timer_cancel(p->loop, p->guard_timer);
	p->respawn_timer = p->guard_timer = 0;
	for (int i = 0; i < p->n; i++)
		child_close(p, &p->c[i]);
	double end = cw_now() + wait;
	for (;;) {
		int alive = 0;
		for (int i = 0; i < p->n; i++) {
			if (p->c[i].pid <= 0)
				continue;
			if (waitpid(p->c[i].pid, NULL, WNOHANG) == p->c[i].pid)
				p->c[i].pid = 0;
			else
				alive++;
		}
		if (!alive)
			break;
		if (cw_now() > end) {
			pf_kill(p);
			break;
		}
		struct timespec ts = {0, 10000000L};
		nanosleep(&ts, NULL);
	}
}

static void pf_destroy(void *self)
{
	struct prefork *p = self;
	cw_loop_timer_cancel(p->loop, p->respawn_timer);
	cw_loop_timer_cancel(p->loop, p->guard_timer);
	for (int i = 0; i < p->n; i++) {
		child_close(p, &p->c[i]);
		buf_free(&p->c[i].in);
		buf_free(&p->c[i].out);
	}
	free(p->c);
	free(p);
}

const struct cw_pool_ops cw_pool_prefork_ops = {
	.name = "prefork",
	.create = pf_create,
	.destroy = pf_destroy,
	.start = pf_start,
	.idle_slot = pf_idle_slot,
	.busy = pf_busy,
	.size = pf_size,
	.slots = pf_slots,
	.processes = pf_processes,
	.pid = pf_pid,
	.rss_kib = pf_rss_kib,
	.submit = pf_submit,
	.reap = pf_reap,
	.stop = pf_stop,
	.kill = pf_kill,
	.grow = pf_grow,
	.shrink = pf_shrink,
	.set_recycling = pf_set_recycling,
	.signal = pf_signal,
	.kill_slot = pf_kill_slot,
	.recycles = pf_recycles,
};
