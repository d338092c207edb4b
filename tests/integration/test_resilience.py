"""Failures around the worker: Redis restarts, warm and cold shutdown with tasks
in flight, and children dying under it."""

import json
import os
import signal
import time

import pytest

from conftest import (SLOW, make_app, close_app, meta, queue_len, unacked_count,
                      wait_for)


def collect(client, ids, timeout):
    """Poll the raw result keys (independent of any producer connection)."""
    deadline = time.monotonic() + timeout * SLOW
    got = {}
    while time.monotonic() < deadline:
        missing = [t for t in ids if t not in got]
        if not missing:
            break
        vals = client.mget([f"celery-task-meta-{t}" for t in missing])
        for t, v in zip(missing, vals):
            if v is not None:
                got[t] = json.loads(v)
        time.sleep(0.1)
    return got


@pytest.mark.slow
def test_redis_restart_mid_run(redis_factory, cworker_factory):
    srv = redis_factory(aof=True)
    w = cworker_factory(["-c", "2"], redis=srv)
    app = make_app(srv.url())
    plan = []              # (task id, expected result)
    try:
        for i in range(150):
            if i % 10 == 0:
                r = app.send_task("cworker.sleep", args=[0.3])
                plan.append((r.id, None))
            else:
                r = app.send_task("cworker.add", args=[i, 1000])
                plan.append((r.id, i + 1000))
    finally:
        close_app(app)
    c = srv.client()
    # restart while the worker is in the middle of the batch
    wait_for(lambda: sum(1 for k in c.scan_iter("celery-task-meta-*", count=1000)) >= 20, 30,
             what="the first results")
    assert queue_len(c) > 0, "batch finished before the restart; the test proves nothing"
    srv.restart(downtime=2.0)
    app2 = make_app(srv.url())
    try:
        for i in range(150, 200):
            r = app2.send_task("cworker.add", args=[i, 1000])
            plan.append((r.id, i + 1000))
    finally:
        close_app(app2)
    c = srv.client()
    got = collect(c, [t for t, _ in plan], timeout=120)
    missing = [t for t, _ in plan if t not in got]
    assert not missing, f"{len(missing)} of 200 tasks never completed after the restart"
    wrong = [(t, exp, got[t].get("result")) for t, exp in plan
             if got[t].get("status") != "SUCCESS" or got[t].get("result") != exp]
    assert not wrong, f"{len(wrong)} wrong results, e.g. {wrong[:5]}"
    wait_for(lambda: queue_len(c) == 0 and unacked_count(c) == 0, 30,
             what="queue and unacked empty after the restart")
    assert w.alive(), "worker exited because redis went away"
    # it is still consuming
    app3 = make_app(srv.url())
    try:
        assert app3.send_task("cworker.add", args=[1, 1]).get(timeout=20) == 2
    finally:
        close_app(app3)


def test_worker_waits_for_redis_at_startup(redis_factory, cworker_factory):
    srv = redis_factory(aof=True)
    srv.stop()
    w = cworker_factory(["-c", "1"], redis=srv, wait_ready=False)
    time.sleep(1.5)
    assert w.alive(), "worker gave up while redis was down"
    srv.start()
    w.ready(timeout=30)
    app = make_app(srv.url())
    try:
        assert app.send_task("cworker.add", args=[2, 2]).get(timeout=20) == 4
    finally:
        close_app(app)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_warm_shutdown_with_tasks_in_flight(redis_server, cworker_factory, app, sig):
    c = redis_server.client()
    w = cworker_factory(["-c", "2"], redis=redis_server)      # prefetch 4 -> holds 8
    rs = [app.send_task("cworker.sleep", args=[1.5]) for _ in range(10)]
    # (exact prefetch is test_redis_semantics.py::test_prefetch_limit; here: whatever it holds)
    wait_for(lambda: queue_len(c) <= 8 and c.hlen("unacked") >= 2, 10,
             what="worker holding messages")
    time.sleep(0.4)                  # the two running ones have started; reservations settle
    waiting_before = queue_len(c)
    kids = w.children()
    t0 = time.monotonic()
    w.send_signal(sig)
    rc = w.wait(15)
    elapsed = time.monotonic() - t0
    assert rc is not None, "warm shutdown did not finish within 15 s"
    assert rc == 0, f"exit status {rc} after warm shutdown"
    assert elapsed >= 0.5, f"exited after {elapsed:.2f}s: did not wait for running tasks"
    for k in kids:
        assert not os.path.exists(f"/proc/{k}") or \
            open(f"/proc/{k}/stat").read().split(")")[-1].split()[0] == "Z", \
            f"child {k} outlived the master"
    done = [r for r in rs if meta(c, r.id)]
    assert len(done) == 2, f"{len(done)} tasks finished; expected the 2 that were running"
    assert all(meta(c, r.id)["status"] == "SUCCESS" for r in done)
    assert queue_len(c) == 8, \
        f"{queue_len(c)} messages in the queue; expected the {8 - waiting_before} reserved " \
        f"ones given back + {waiting_before} never fetched = 8"
    assert unacked_count(c) == 0, "reserved messages left in unacked after warm shutdown"
    # a new worker completes every one: none lost (eight children: one round of sleeps)
    cworker_factory(["-c", "8"], redis=redis_server)
    for r in rs:
        r.get(timeout=30)
    assert all(meta(c, r.id)["status"] == "SUCCESS" for r in rs)


@pytest.mark.parametrize("how", ["SIGQUIT", "double-SIGINT"])
def test_cold_shutdown(redis_server, cworker_factory, app, how):
    c = redis_server.client()
    w = cworker_factory(["-c", "2"], redis=redis_server)
    for _ in range(6):
        app.send_task("cworker.sleep", args=[20])
    wait_for(lambda: queue_len(c) == 0, 10, what="worker holding all 6")
    time.sleep(0.3)
    kids = w.children()
    assert len(kids) >= 2
    t0 = time.monotonic()
    if how == "SIGQUIT":
        w.send_signal(signal.SIGQUIT)
    else:
        w.send_signal(signal.SIGINT)
        time.sleep(0.3)
        w.send_signal(signal.SIGINT)
    rc = w.wait(10)
    assert rc is not None and time.monotonic() - t0 < 10, "cold shutdown waited for the tasks"
    assert rc == 1, f"exit status {rc}; docs/configuration.md: 1 after a cold shutdown"
    for k in kids:
        wait_for(lambda: not os.path.exists(f"/proc/{k}"), 5, what=f"child {k} gone")
    # the 4 reserved, unstarted messages are back; the 2 running ones were acked early
    assert queue_len(c) == 4, f"{queue_len(c)} messages back in the queue, expected 4"
    assert unacked_count(c) == 0


def test_child_crash_replaced(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "2", "--diagnostic-tasks"], redis=redis_server)
    before = set(wait_for(lambda: len(w.children()) == 2 and w.children(), 10,
                          what="2 children"))
    r = app.send_task("cworker.crash")
    with pytest.raises(Exception) as ei:
        r.get(timeout=30)
    assert type(ei.value).__name__ == "WorkerLostError", \
        f"crash stored {type(ei.value).__name__}: {ei.value}"
    assert w.alive(), "master died with its child"
    after = set(wait_for(lambda: len(w.children()) == 2 and w.children(), 10,
                         what="pool back to 2 children"))
    assert len(before & after) == 1, f"children before {before}, after {after}"
    rs = [app.send_task("cworker.add", args=[i, i]) for i in range(20)]
    assert [x.get(timeout=30) for x in rs] == [2 * i for i in range(20)]
    assert {app.send_task("cworker.getpid").get(timeout=30) for _ in range(10)} <= after


def test_repeated_crashes(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "2", "--diagnostic-tasks"], redis=redis_server)
    rs = [app.send_task("cworker.crash") for _ in range(10)]
    for r in rs:
        with pytest.raises(Exception):
            r.get(timeout=60)
    assert w.alive()
    wait_for(lambda: len(w.children()) == 2, 10, what="pool back to 2 children")
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=20) == 3
    c = redis_server.client()
    assert queue_len(c) == 0 and unacked_count(c) == 0


def test_spin_does_not_block_other_children(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2", "--diagnostic-tasks"], redis=redis_server)
    spin = app.send_task("cworker.spin", args=[3])
    time.sleep(0.3)
    t0 = time.monotonic()
    assert [app.send_task("cworker.add", args=[i, 0]).get(timeout=20) for i in range(10)] \
        == list(range(10))
    assert time.monotonic() - t0 < 2.5, "other tasks waited for the busy child"
    spin.get(timeout=20)
