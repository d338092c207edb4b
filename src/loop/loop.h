/*
 * The master's event loop: epoll for file descriptors plus a binary heap of
 * one-shot timers (positions tracked, so cancel is O(log n)).  Single
 * threaded; callbacks must not block.
 */
#ifndef CW_LOOP_H
#define CW_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#define CW_READ 1u
#define CW_WRITE 2u

struct cw_loop;
typedef void (*cw_io_cb)(struct cw_loop *loop, int fd, unsigned events, void *arg);
typedef void (*cw_timer_cb)(struct cw_loop *loop, void *arg);

struct cw_loop *cw_loop_new(void);
void cw_loop_free(struct cw_loop *loop);

/* Watch fd for the events in mask (CW_READ|CW_WRITE); mask 0 = stop watching. */
int cw_loop_watch(struct cw_loop *loop, int fd, unsigned mask, cw_io_cb cb, void *arg);
/* Current mask of fd (0 if unwatched). */
unsigned cw_loop_mask(struct cw_loop *loop, int fd);

/* One-shot timer after delay seconds; returns an id > 0 (0 on ENOMEM). */
uint64_t cw_loop_timer(struct cw_loop *loop, double delay, cw_timer_cb cb, void *arg);
/* Cancel a pending timer; unknown/expired ids are ignored. */
void cw_loop_timer_cancel(struct cw_loop *loop, uint64_t id);

/* Run until cw_loop_stop(); returns 0, or -1 if epoll fails. */
int cw_loop_run(struct cw_loop *loop);
void cw_loop_stop(struct cw_loop *loop);

/* Monotonic seconds. */
double cw_now(void);
/* Wall-clock seconds since the epoch. */
double cw_wall(void);

#endif
