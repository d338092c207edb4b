/*
 * Execution pools, chosen by name (pool.c dispatches to an ops table).
 * prefork (prefork.c): N forked children, one task at a time each, fed over
 * a socketpair with length-prefixed frames, replaced when they die.
 * solo (solo.c): one slot; tasks run in the master itself from a loop
 * callback (debugging only: the event loop stops while a task runs).
 * Either way a submitted task's end is reported later, from the loop, never
 * from inside cw_pool_submit().
 */
#ifndef CW_POOL_H
#define CW_POOL_H

#include <stdbool.h>
#include <sys/types.h>

#include "tasks/exec.h"

struct cw_loop;
struct cw_pool;

/* Why a busy child died. */
enum cw_lost_reason {
	CW_LOST_CRASH,       /* died on its own (signal or exit) */
	CW_LOST_TIMEOUT,     /* killed at its hard time limit */
	CW_LOST_MEMORY,      /* killed over the per-child memory limit */
	CW_LOST_TERMINATED,  /* killed on request (revoke terminate) */
};

/* Why a process was replaced (metrics); shrinks and shutdown are not replacements. */
enum cw_recycle_reason {
	CW_RECYCLE_MAX_TASKS,     /* max-tasks-per-child */
	CW_RECYCLE_MAX_MEMORY,    /* max-memory-per-child, after a task */
	CW_RECYCLE_MEMORY_LIMIT,  /* child-memory-limit, killed while running */
	CW_RECYCLE_TIME_LIMIT,    /* killed at a hard time limit */
	CW_RECYCLE_TERMINATED,    /* revoke(terminate=True) */
	CW_RECYCLE_CRASH,         /* died on its own */
	CW_RECYCLE_N
};

struct cw_pool_handler {
	/* slot finished its task; publish: o->publish_len bytes of a serialised cw_outbox */
	void (*on_done)(void *arg, int slot, const struct cw_outcome *o, const char *publish);
	/* the process in slot died while running a task (wstatus from waitpid) */
	void (*on_lost)(void *arg, int slot, pid_t pid, int wstatus, enum cw_lost_reason why);
	/*
	 * the task in slot returned and its result is being stored (only for a
	 * submission that asked for it): its place in the prefetch budget can go
	 * to the next message while the store is out.  NULL = not wanted.
	 */
	void (*on_returned)(void *arg, int slot);
	/* a slot became free for work (new child, or finished task) */
	void (*on_idle)(void *arg);
	/* the task in slot sent an event (update_state); fields: JSON object text. NULL = drop */
	void (*on_event)(void *arg, int slot, const char *type, const char *fields, size_t len);
	void *arg;
};

/*
 * A pool of kind "prefork" (n processes) or "solo" (n is ignored: one slot);
 * NULL for an unknown kind or ENOMEM.  loop and env are borrowed.
 */
struct cw_pool *cw_pool_new(struct cw_loop *loop, const char *kind, int n,
			    const struct cw_exec_env *env, const struct cw_pool_handler *h);
/* Fork the children (prefork; solo only becomes ready); CW_OK or CW_EIO. */
int cw_pool_start(struct cw_pool *p);
/* An idle slot, or -1. */
int cw_pool_idle_slot(const struct cw_pool *p);
int cw_pool_busy(const struct cw_pool *p);
/* Processes the pool keeps (slots not removed by a shrink). */
int cw_pool_size(const struct cw_pool *p);
/* Slot numbers in use are 0 .. cw_pool_slots()-1 (some may be shrunk away). */
int cw_pool_slots(const struct cw_pool *p);
/* Pids of the pool's live processes; returns how many were written. */
int cw_pool_processes(const struct cw_pool *p, pid_t *pids, int max);
/* Add n processes (prefork); CW_OK, CW_EINVAL (solo) or CW_ENOMEM. */
int cw_pool_grow(struct cw_pool *p, int n);
/* Retire up to n idle processes (never the last); CW_EAGAIN if fewer than n were idle. */
int cw_pool_shrink(struct cw_pool *p, int n);
pid_t cw_pool_pid(const struct cw_pool *p, int slot);
/*
 * One message for a slot: the queue it came from, the envelope as received
 * and, optionally, the request the master decoded (cw_request_pack), which
 * spares a child decoding the envelope again.
 */
struct cw_job {
	const char *queue;
	const char *raw;
	size_t len;
	const char *packed;      /* NULL: the envelope is decoded where the task runs */
	size_t packed_len;
	bool report_return;      /* prefork: on_returned when the task function returns */
};
/*
 * Give an idle slot one message to run; CW_OK, CW_ELIMIT, CW_ENOMEM or
 * CW_EINVAL (slot not idle).  on_done/on_lost report its end later, from the
 * loop; with report_return (prefork), on_returned comes first, when the task
 * has returned and its result store begins.
 */
int cw_pool_submit(struct cw_pool *p, int slot, const struct cw_job *job);
/*
 * Replace children after max_tasks tasks / when RSS passed max_kib after a task
 * (0 = off; prefork only).
 */
void cw_pool_set_recycling(struct cw_pool *p, long max_tasks, long max_kib);
/* Send sig to the child in slot (prefork only); CW_OK or CW_EINVAL. */
int cw_pool_signal(struct cw_pool *p, int slot, int sig);
/* SIGKILL the child in slot (prefork only); on_lost reports why. */
void cw_pool_kill_slot(struct cw_pool *p, int slot, enum cw_lost_reason why);
/* Resident set size of the child in slot, KiB (0 if unknown). */
long cw_pool_rss_kib(const struct cw_pool *p, int slot);
/* Resident set size of a process, KiB (0 if unknown). */
long cw_proc_rss_kib(pid_t pid);
/* Processes replaced so far for why. */
long cw_pool_recycles(const struct cw_pool *p, enum cw_recycle_reason why);
/* Reap exited children (call on SIGCHLD). */
void cw_pool_reap(struct cw_pool *p);
/* Ask idle children to exit and wait for them (up to `wait` seconds, then SIGKILL). */
void cw_pool_stop(struct cw_pool *p, double wait);
/* SIGKILL every child now (cold shutdown). */
void cw_pool_kill(struct cw_pool *p);
void cw_pool_free(struct cw_pool *p);

#endif
