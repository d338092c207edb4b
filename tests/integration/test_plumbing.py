"""Self-tests of the harness: these need no cworker binary.

They prove the redis fixture, restarts with AOF, the stock Python worker and
process cleanup work, so a failure elsewhere points at cworker, not here."""

import os
import signal

import pytest

from conftest import descendants, queue_len, wait_for


def test_redis_fixture_serves_and_restarts_with_aof(redis_factory):
    srv = redis_factory(aof=True)
    c = srv.client()
    c.lpush("celery", b"x", b"y")
    port, pid = srv.port, srv.mp.pid
    srv.restart(downtime=0.2)
    assert srv.port == port and srv.mp.pid != pid
    c2 = srv.client()
    assert c2.llen("celery") == 2, "AOF did not keep the list across a restart"
    # stop() reaps the old server (Popen.wait): no process, not even a zombie
    assert not os.path.exists(f"/proc/{pid}")


def test_redis_password(redis_factory):
    srv = redis_factory(password="s3cr3t")
    assert srv.client().ping()
    assert srv.url().startswith("redis://:s3cr3t@127.0.0.1:")


def test_python_worker_runs_cworker_task_names(redis_server, app, pyworker_factory):
    w = pyworker_factory(redis_server, pool="prefork", concurrency=2)
    assert len(descendants(w.pid)) >= 2
    assert app.send_task("cworker.echo", args=[{"a": [1, "é"]}]).get(timeout=30) == {"a": [1, "é"]}
    assert app.send_task("cworker.add", args=[2, 3]).get(timeout=30) == 5
    with pytest.raises(ValueError):
        app.send_task("cworker.fail", args=["ValueError", "boom"]).get(timeout=30)
    kids = w.children()
    w.stop()
    # The pool children exit on their own once the parent is gone; on a
    # loaded machine that can take a moment after the parent is reaped.
    for k in kids:
        wait_for(lambda: _gone(k), 10, what=f"child {k} gone after stop()")
    assert queue_len(redis_server.client()) == 0


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_kill_cleans_up_children(redis_server, pyworker_factory):
    w = pyworker_factory(redis_server, pool="prefork", concurrency=2)
    kids = wait_for(lambda: w.children(), 10, what="prefork children")
    w.stop(sig=signal.SIGKILL)
    for k in kids:
        wait_for(lambda: not os.path.exists(f"/proc/{k}"), 5, what=f"child {k} gone")
