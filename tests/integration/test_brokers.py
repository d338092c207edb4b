"""Core worker behaviour on each broker (conftest `broker`: redis-server, and a
virtual host on rabbitmq-server with results in redis), with Debian's Python
Celery producers: value round trips, failures, bad messages, prefetch windows,
time limits, ETA, worker-lost requeue, mixed Python + C workers, priorities."""

import os
import re
import signal
import time

import pytest
from celery.exceptions import NotRegistered, SoftTimeLimitExceeded

from conftest import SLOW, meta, wait_for

VALUES = [None, True, False, 0, -7, 2 ** 53, 3.25, "", "héllo wörld ✓", [1, [2, [3]]],
          {"a": {"b": [None, 1.5, "x"]}}]


def busy_children(w):
    """PIDs of w's children that run a task now (in state R or S with a task)."""
    return w.children()


def wait_started(w, task_id, timeout=10):
    w.wait_log(rf"Task [\w.]+\[{task_id}\] received", timeout=timeout)
    time.sleep(0.2 * SLOW)


def test_values_round_trip(broker, cworker_factory, app_factory):
    cworker_factory(["-c", "2"], redis=broker)
    app = app_factory(broker)
    rs = [app.send_task("cworker.echo", args=[v]) for v in VALUES]
    assert [r.get(timeout=20) for r in rs] == VALUES
    assert app.send_task("cworker.add", kwargs={"a": 2, "b": 40}).get(timeout=10) == 42
    many = [app.send_task("cworker.add", args=[i, 1]) for i in range(300)]
    assert [r.get(timeout=60) for r in many] == [i + 1 for i in range(300)]
    wait_for(lambda: broker.drained(), 10, what="queue drained and nothing unacked")


def test_failures_unknown_tasks_and_garbage(broker, cworker_factory, app_factory):
    w = cworker_factory(["-c", "1"], redis=broker)
    app = app_factory(broker)
    with pytest.raises(ValueError, match="bad value"):
        app.send_task("cworker.fail", args=["ValueError", "bad value"]).get(timeout=10)
    with pytest.raises(NotRegistered):
        app.send_task("no.such.task", args=[1]).get(timeout=10)
    broker_publish_garbage(broker)
    w.wait_log(r"Can't decode message body|Received and deleted unknown message", timeout=10)
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10) == 3
    wait_for(lambda: broker.drained(), 10, what="nothing left behind")


def broker_publish_garbage(broker):
    body = b"\x00\xffnot json at all"
    if broker.kind == "redis":
        import base64
        import json
        env = {"body": base64.b64encode(body).decode(), "content-type": "application/json",
               "content-encoding": "utf-8", "headers": {},
               "properties": {"body_encoding": "base64", "delivery_tag": "garbage-1",
                              "delivery_info": {"exchange": "", "routing_key": "celery"}}}
        c = broker.client()
        c.lpush("celery", json.dumps(env))
        c.close()
    else:
        broker.publish_raw("celery", body, headers={})


@pytest.mark.parametrize("acks_late,disable", [(False, False), (True, False), (False, True)])
def test_prefetch_window(broker, cworker_factory, app_factory, acks_late, disable):
    """-c 2 --prefetch-multiplier 1 with eight long tasks queued: both brokers count
    unacknowledged messages, as Celery does; --disable-prefetch is Redis only (Celery 5.6)."""
    args = ["-c", "2", "--prefetch-multiplier", "1"] + (["--acks-late"] if acks_late else []) + \
        (["--disable-prefetch"] if disable else [])
    w = cworker_factory(args, redis=broker)
    app = app_factory(broker)
    # long enough that the first two are still running when the window is read,
    # on a busy machine too (RabbitMQ's counts come from stats sampled every 0.5 s)
    rs = [app.send_task("cworker.sleep", args=[6.0 * SLOW, i]) for i in range(8)]
    wait_for(lambda: len(re.findall(r"received", w.log())) >= 2, 10, what="two tasks taken")
    time.sleep(0.8 * SLOW)
    if broker.kind == "redis":
        # early-acked running tasks free their place: two run, two more wait reserved
        # (unacknowledged); under acks_late or --disable-prefetch only the two running
        c = broker.client()
        ready, unacked = broker.queue_len(), c.hlen("unacked")
        c.close()
        if disable:
            assert (ready, unacked) == (6, 0)
        else:
            assert (ready, unacked) == ((6, 2) if acks_late else (4, 2))
    else:
        # RabbitMQ's basic.qos counts the same way; --disable-prefetch is ignored, as Celery
        ready, unacked = broker.counts()
        assert (ready, unacked) == ((6, 2) if acks_late else (4, 2))
        if disable:
            assert "worker_disable_prefetch is only supported for Redis brokers" in w.log()
    for r in rs:
        r.revoke()
    # cold: a warm stop would wait out the two running sleeps (18 s under ASan)
    w.stop(signal.SIGQUIT)


def test_time_limits(broker, cworker_factory, app_factory):
    cworker_factory(["-c", "1"], redis=broker)
    app = app_factory(broker)
    with pytest.raises(SoftTimeLimitExceeded):
        app.send_task("cworker.sleep", args=[10], soft_time_limit=0.5).get(timeout=15)
    from billiard.exceptions import TimeLimitExceeded
    t0 = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        app.send_task("cworker.sleep", args=[30], time_limit=1).get(timeout=15)
    assert time.monotonic() - t0 < 5 * SLOW
    assert app.send_task("cworker.add", args=[2, 2]).get(timeout=10) == 4


def test_eta_does_not_hold_the_prefetch_window(broker, cworker_factory, app_factory):
    cworker_factory(["-c", "1", "--prefetch-multiplier", "1"], redis=broker)
    app = app_factory(broker)
    t0 = time.time()
    later = app.send_task("cworker.echo", args=["late"], countdown=2)
    quick = [app.send_task("cworker.add", args=[i, i]) for i in range(5)]
    assert [r.get(timeout=10) for r in quick] == [0, 2, 4, 6, 8]
    assert time.time() - t0 < 2, "ETA message blocked the window"
    assert later.get(timeout=10) == "late"
    assert time.time() - t0 >= 1.9


def test_acks_late_lost_child_requeues(broker, cworker_factory, app_factory):
    w = cworker_factory(["-c", "1", "--acks-late", "--reject-on-worker-lost"], redis=broker)
    app = app_factory(broker)
    r = app.send_task("cworker.sleep", args=[1.5, "again"])
    wait_started(w, r.id)
    os.kill(busy_children(w)[0], signal.SIGKILL)
    assert r.get(timeout=30) == "again"
    assert len(re.findall(rf"Task cworker.sleep\[{r.id}\] received", w.log())) == 2
    wait_for(lambda: broker.drained(), 10, what="acked after the second run")


def test_python_and_c_workers_share_a_queue(broker, cworker_factory, pyworker_factory,
                                            app_factory):
    cw = cworker_factory(["-c", "1", "-Q", "celery,docs"], redis=broker)
    py = pyworker_factory(broker, queues="celery,docs")
    app = app_factory(broker)
    rs = [app.send_task("cworker.sleep", args=[0.05, i], queue="docs" if i % 2 else "celery")
          for i in range(40)]
    assert [r.get(timeout=60) for r in rs] == list(range(40))
    # each worker logs a task after storing its result: wait for the last lines
    def ran():
        return (len(re.findall(r"succeeded", cw.log())),
                len(re.findall(r"succeeded in", py.log())))
    wait_for(lambda: sum(ran()) >= 40, 10 * SLOW, what="every task in a worker's log")
    ran_c, ran_py = ran()
    assert ran_c > 0 and ran_py > 0 and ran_c + ran_py == 40, (ran_c, ran_py)
    for log in (cw.log(), py.log()):
        assert "PRECONDITION_FAILED" not in log and "inequivalent" not in log


def test_amqp_priority_queue(amqp_broker, cworker_factory, pyworker_factory, app_factory):
    """x-max-priority queues: declared like Celery's task_queue_max_priority; the
    highest priority waiting message runs first."""
    b = amqp_broker
    app = app_factory(b, task_queue_max_priority=10)
    # the producer declares the queue (priority 10) and queues the work first
    order = [("low", 1), ("high", 9), ("mid", 5)]
    rs = [app.send_task("cworker.echo", args=[name], priority=p) for name, p in order]
    w = cworker_factory(["-c", "1", "--prefetch-multiplier", "1",
                         "--task-queue-max-priority", "10"], redis=b)
    assert [r.get(timeout=20) for r in rs] == ["low", "high", "mid"]
    ran = re.findall(r"Task cworker.echo\[[^\]]+\] succeeded in [\d.]+s: '(\w+)'", w.log())
    assert ran == ["high", "mid", "low"], ran
    q = b.server.api("GET", f"/api/queues/{b.vhost}/celery")
    assert q["arguments"] == {"x-max-priority": 10}
    # a Python worker with the same setting declares the same queue without error
    py = pyworker_factory(b, env={"CW_TEST_QUEUE_MAX_PRIORITY": "10"})
    assert "PRECONDITION_FAILED" not in py.log()
