/*
 * Redis transport, the plain link (redis://, and sentinel:// without TLS):
 * hiredis's async client on the event loop; redis_tls.c is the other link
 * behind the same ops.
 *
 * Writes wait for the end of the loop iteration (a before-sleep hook, as
 * redis's server does with its replies): the commands queued in one
 * iteration (a take, several acks, a publish) leave in one write(), and
 * EPOLLOUT is watched only while connecting or when the socket is full.
 */
#include <stdlib.h>

#include "broker/redis_int.h"
#include "loop/loop.h"
#include "util/log.h"

static void on_io(struct cw_loop *loop, int fd, unsigned ev, void *arg)
{
	struct rconn *c = arg;
	(void)loop;
	(void)fd;
	if ((ev & CW_READ) && c->link)
		redisAsyncHandleRead(c->link);
	if ((ev & CW_WRITE) && c->link)
		redisAsyncHandleWrite(c->link);
}

static void set_mask(struct rconn *c, unsigned m)
{
	if (m == c->mask)
		return;
	c->mask = m;
	cw_loop_watch(c->b->loop, c->fd, m, on_io, c);
}

static void ev_add_read(void *p) { struct rconn *c = p; set_mask(c, c->mask | CW_READ); }
static void ev_del_read(void *p) { struct rconn *c = p; set_mask(c, c->mask & ~CW_READ); }
static void ev_add_write(void *p)
{
	struct rconn *c = p;
	redisAsyncContext *ac = c->link;
	if (c->flushing || !c->hooked || !ac || !(ac->c.flags & REDIS_CONNECTED))
		set_mask(c, c->mask | CW_WRITE);
	else
		c->dirty = true;
}
static void ev_del_write(void *p) { struct rconn *c = p; set_mask(c, c->mask & ~CW_WRITE); }

static void flush_hook(struct cw_loop *loop, void *arg)
{
	struct rconn *c = arg;
	(void)loop;
	if (!c->dirty)
		return;
	c->dirty = false;
	if (!c->link)
		return;
	c->flushing = true;
	redisAsyncHandleWrite(c->link); /* may drop the link: on_disconnect runs */
	c->flushing = false;
}
static void ev_cleanup(void *p)
{
	struct rconn *c = p;
	/* forget the fd outright: hiredis closes it next, and the number gets reused */
	cw_loop_watch(c->b->loop, c->fd, 0, NULL, NULL);
	c->mask = 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback */
		c->link = NULL;
		rb_conn_failed(c, ac->errstr);
	}
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	(void)status;
	c->link = NULL; /* hiredis frees it; its cleanup hook unwatches the fd */
	rb_conn_lost(c, ac->errstr[0] ? ac->errstr : "closed");
}

static int hi_open(struct rconn *c, const char *host, int port)
{
	redisAsyncContext *ac = redisAsyncConnect(host, port);
	if (!ac)
		return CW_ENOMEM;
	if (ac->err) {
		cw_log(CW_LOG_DEBUG, "broker", "connect %s: %s", c->name, ac->errstr);
		redisAsyncFree(ac);
		return CW_EIO;
	}
	c->link = ac;
	ac->data = c;
	c->fd = ac->c.fd;
	c->mask = 0;
	c->dirty = false;
	if (!c->hooked && cw_loop_before_sleep(c->b->loop, flush_hook, c) == 0)
		c->hooked = true; /* else every write waits for EPOLLOUT, as before */
	ac->ev.data = c;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	return CW_OK;
}

static int hi_command(struct rconn *c, redisCallbackFn *fn, void *priv, int argc,
		      const char **argv, const size_t *lens)
{
	if (!c->link)
		return CW_EIO;
	return redisAsyncCommandArgv(c->link, fn, priv, argc, argv, lens) == REDIS_OK ? CW_OK
										    : CW_EIO;
}

static void hi_disconnect(struct rconn *c)
{
	if (c->link)
		redisAsyncDisconnect(c->link);
}

static void hi_free(struct rconn *c)
{
	redisAsyncContext *ac = c->link;
	if (c->hooked) {
		cw_loop_before_sleep_remove(c->b->loop, flush_hook, c);
		c->hooked = false;
	}
	c->dirty = false;
	if (!ac)
		return;
	c->link = NULL;
	redisAsyncFree(ac); /* its disconnect callback, if any, finds the broker closing */
}

const struct rlink_ops rb_hiredis_link = {
	.open = hi_open,
	.command = hi_command,
	.disconnect = hi_disconnect,
	.free = hi_free,
};
