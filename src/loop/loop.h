/*
 * The master's event loop: epoll for file descriptors, a binary heap of
 * timers (one-shot and periodic) and before-sleep hooks.  Single threaded;
 * callbacks must not block.
 *
 * One iteration (cw_loop_run_once):
 *   1. before-sleep hooks, in registration order;
 *   2. epoll_wait until the earliest timer is due (or an fd is ready);
 *   3. I/O callbacks of the ready fds;
 *   4. callbacks of the timers due at that point, earliest first (ties in
 *      the order they were armed).  A timer armed during this step does not
 *      fire before the next iteration, even with delay 0.
 * cw_loop_stop() from any callback or hook ends the current iteration early
 * (remaining events and due timers wait for the next run) and makes
 * cw_loop_run() return.
 *
 * Ownership: the loop never owns an fd (unwatch before close) nor any
 * callback argument; it owns only its own tables.
 */
#ifndef CW_LOOP_H
#define CW_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CW_READ 1u
#define CW_WRITE 2u

struct cw_loop;
typedef void (*cw_io_cb)(struct cw_loop *loop, int fd, unsigned events, void *arg);
typedef void (*cw_timer_cb)(struct cw_loop *loop, void *arg);
typedef void (*cw_hook_cb)(struct cw_loop *loop, void *arg);
typedef double (*cw_clock_fn)(void *arg);

struct cw_loop *cw_loop_new(void);
/* Frees the loop's tables; pending timers and hooks are dropped without being called. */
void cw_loop_free(struct cw_loop *loop);

/*
 * Watch fd for the events in mask (CW_READ|CW_WRITE); mask 0 = stop watching.
 * O(1) plus one epoll_ctl; the table indexed by fd grows to the largest fd.
 * Returns 0, or -1 (epoll_ctl failed or out of memory).
 */
int cw_loop_watch(struct cw_loop *loop, int fd, unsigned mask, cw_io_cb cb, void *arg);
/* Current mask of fd (0 if unwatched). */
unsigned cw_loop_mask(struct cw_loop *loop, int fd);

/*
 * Timers.  An id is > 0 and names one timer for the life of the loop: it
 * encodes a slot and the slot's generation, so once the timer fired (one-shot)
 * or was cancelled its id is stale and never matches a timer armed later in
 * the same slot.  Slots are reused; the tables grow by doubling and never
 * shrink.  n is the number of pending timers.
 */
/* One-shot timer after delay seconds (<= 0 or NaN: next iteration); O(log n).  0 on ENOMEM. */
uint64_t cw_loop_timer(struct cw_loop *loop, double delay, cw_timer_cb cb, void *arg);
/*
 * Periodic timer: first fires after interval seconds, then every interval
 * (missed ticks are skipped, not fired in a burst); O(log n).  0 on ENOMEM.
 * Re-arming after each firing happens in place before cb runs, so it never
 * allocates and cannot fail; cb may cancel its own id.  interval <= 0 fires
 * on every iteration.
 */
uint64_t cw_loop_every(struct cw_loop *loop, double interval, cw_timer_cb cb, void *arg);
/* Cancel a pending timer: O(log n); stale, unknown and 0 ids are ignored in O(1). */
void cw_loop_timer_cancel(struct cw_loop *loop, uint64_t id);
/* Number of pending timers. */
size_t cw_loop_timers(const struct cw_loop *loop);

/*
 * Before-sleep hooks (as redis's ae beforesleep): run on every iteration, in
 * registration order, before the loop waits; a hook may stop the loop (the
 * other hooks still run, then the iteration ends without waiting) or arm
 * timers (the wait accounts for them).  A hook added while hooks run first
 * runs on the next iteration.  The same (cb, arg) may be added twice; it then
 * runs twice.  Returns 0 or CW_ENOMEM.
 */
int cw_loop_before_sleep(struct cw_loop *loop, cw_hook_cb cb, void *arg);
/* Remove the first hook registered with (cb, arg), also from inside a hook: 0 or CW_ENOTFOUND. */
int cw_loop_before_sleep_remove(struct cw_loop *loop, cw_hook_cb cb, const void *arg);

/*
 * The loop's clock, monotonic seconds: now(arg) when set (tests step a fake
 * clock), else cw_now().  now NULL restores cw_now().  Timers are due against
 * this clock; the epoll wait is derived from it too, so with a fake clock step
 * with cw_loop_run_once(loop, 0).
 */
void cw_loop_set_clock(struct cw_loop *loop, cw_clock_fn now, void *arg);
double cw_loop_now(const struct cw_loop *loop);

/*
 * One iteration (see the top of this file), waiting at most max_wait_ms
 * (< 0: no limit beyond the next timer).  Returns the number of I/O and
 * timer callbacks run (hooks not counted), or -1 if epoll_wait failed.  An
 * interrupted wait (EINTR) counts as an iteration that ran nothing.
 */
int cw_loop_run_once(struct cw_loop *loop, int max_wait_ms);
/* Run iterations until cw_loop_stop(); returns 0, or -1 if epoll fails. */
int cw_loop_run(struct cw_loop *loop);
void cw_loop_stop(struct cw_loop *loop);

/* Monotonic seconds. */
double cw_now(void);
/* Wall-clock seconds since the epoch. */
double cw_wall(void);

#endif
