"""Shutdown as Celery 5.5 does it, on each broker (conftest `broker`): a cold
shutdown gives every unacknowledged message back at once, running acks_late
tasks included; worker_soft_shutdown_timeout puts a time-limited warm stage
before it; REMAP_SIGTERM=SIGQUIT makes SIGTERM cold; worker_eta_task_limit caps
the messages held for their ETA."""

import re
import signal
import time

import pytest

from conftest import SLOW, meta, wait_for


def ready_and_unacked(broker):
    """(messages waiting in the queue, messages delivered and not acknowledged)."""
    if broker.kind == "redis":
        return broker.queue_len(), broker.unacked()
    return broker.queue_len(), None      # the AMQP count of unacked needs rabbitmqctl (slow)


def start_running(w, app, n, seconds):
    """n long tasks, all started in w's children (acks_late: none acked yet)."""
    rs = [app.send_task("cworker.sleep", args=[seconds * SLOW, i]) for i in range(n)]
    for r in rs:
        w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    wait_for(lambda: len(w.children()) >= n, 10, what=f"{n} children")
    time.sleep(0.4 * SLOW)                 # handed to the children
    return rs


def wait_back(broker, n, within):
    """Poll until n messages wait in the queue again; returns the seconds it took."""
    t0 = time.monotonic()
    wait_for(lambda: broker.queue_len() >= n, within, interval=0.02,
             what=f"{n} messages back in the queue")
    return time.monotonic() - t0


def finish_elsewhere(broker, cworker_factory, rs, values):
    """Another worker takes the given-back messages and completes each of them."""
    cworker_factory(["-c", "2"], redis=broker)
    assert [r.get(timeout=30) for r in rs] == values
    wait_for(lambda: broker.drained(), 10, what="queue drained and nothing unacked")


def test_sigquit_gives_running_acks_late_messages_back(broker, cworker_factory, app_factory):
    w = cworker_factory(["-c", "2", "--acks-late"], redis=broker)
    app = app_factory(broker)
    rs = start_running(w, app, 2, 2.0)
    assert broker.queue_len() == 0
    w.send_signal(signal.SIGQUIT)
    took = wait_back(broker, 2, 3)
    assert took < 1.0 * SLOW, f"messages back after {took:.2f}s"
    rc = w.wait(5)
    assert rc == 1, f"exit status {rc} after a cold shutdown"
    log = w.log()
    assert "worker: Cold shutdown (MainProcess)" in log
    assert "Restoring 2 unacknowledged message(s)" in log
    if broker.kind == "redis":
        assert ready_and_unacked(broker) == (2, 0), "left in `unacked` until the visibility timeout"
    assert all(meta(broker.client(), r.id) is None for r in rs), "a cancelled task stored a state"
    finish_elsewhere(broker, cworker_factory, rs, [0, 1])


def test_cold_shutdown_keeps_an_outcome_already_sent(redis_server, cworker_factory, app):
    """A task that ends in the instant of a cold shutdown: its child stored the result
    and wrote its outcome, which the master has not read yet when SIGQUIT is handled.
    The outcome is read after the children are killed: the message is acknowledged,
    not given back to run a second time. (The master is stopped with SIGSTOP so the
    signal is queued before the outcome: its loop sees them in that order.)"""
    w = cworker_factory(["-c", "1", "--acks-late"], redis=redis_server)
    r, = start_running(w, app, 1, 1.5)
    c = redis_server.client()
    w.send_signal(signal.SIGSTOP)
    try:
        w.send_signal(signal.SIGQUIT)
        wait_for(lambda: (meta(c, r.id) or {}).get("status") == "SUCCESS", 10 * SLOW,
                 what="the child storing its result")
        time.sleep(0.3)                    # and writing its outcome to the master
    finally:
        w.send_signal(signal.SIGCONT)
    assert w.wait(5) == 1
    log = w.log()
    assert "worker: Cold shutdown (MainProcess)" in log
    assert f"Task cworker.sleep[{r.id}] succeeded" in log
    assert "Restoring" not in log
    assert ready_and_unacked(redis_server) == (0, 0), "given back though it had finished"


def test_cold_shutdown_early_acked_running_task_is_lost_as_retry(redis_server, cworker_factory,
                                                                app):
    """Without acks_late the message was acked when the task started: Celery marks the
    cancelled task RETRY 'cancelled by Celery' and nothing comes back."""
    w = cworker_factory(["-c", "1"], redis=redis_server)
    r, = start_running(w, app, 1, 10.0)
    w.send_signal(signal.SIGQUIT)
    assert w.wait(5) == 1
    m = meta(redis_server.client(), r.id)
    assert m and m["status"] == "RETRY", m
    assert ready_and_unacked(redis_server) == (0, 0)


@pytest.mark.slow
def test_soft_shutdown_expiry_gives_messages_back(broker, cworker_factory, app_factory,
                                                  pyworker_factory):
    w = cworker_factory(["-c", "2", "--acks-late", "--soft-shutdown-timeout", "1"], redis=broker)
    app = app_factory(broker)
    rs = start_running(w, app, 2, 3.0)
    t0 = time.monotonic()
    w.send_signal(signal.SIGQUIT)
    w.wait_log(r"Initiating Soft Shutdown, terminating in 1 seconds", timeout=5)
    time.sleep(0.5)
    assert broker.queue_len() == 0, "soft stage gave running tasks back before its timeout"
    wait_back(broker, 2, 5)
    took = time.monotonic() - t0
    assert 0.9 <= took < 2.0 * SLOW, f"messages back {took:.2f}s after SIGQUIT (timeout 1 s)"
    assert w.wait(5) == 1
    assert "soft shutdown timeout (1s) reached" in w.log()
    # a stock Python Celery worker completes them
    pyworker_factory(broker)
    assert [r.get(timeout=60) for r in rs] == [0, 1]


def test_soft_shutdown_tasks_finish_in_time(broker, cworker_factory, app_factory):
    """Tasks that end within the soft timeout store their results; the messages not
    started go back; the exit status is 0 since nothing was cancelled."""
    w = cworker_factory(["-c", "2", "--acks-late", "--soft-shutdown-timeout", "20"],
                        redis=broker)
    app = app_factory(broker)
    running = start_running(w, app, 2, 1.5)
    waiting = [app.send_task("cworker.add", args=[i, 1]) for i in range(3)]
    wait_for(lambda: broker.queue_len() == 0, 5, what="the worker reserving the rest")
    t0 = time.monotonic()
    w.send_signal(signal.SIGQUIT)
    rc = w.wait(15)
    took = time.monotonic() - t0
    assert rc == 0, f"exit status {rc}; nothing was cancelled"
    assert took < 5 * SLOW, f"waited {took:.1f}s: the soft stage ends with the last task"
    c = broker.client()
    assert [meta(c, r.id)["status"] for r in running] == ["SUCCESS", "SUCCESS"]
    assert broker.queue_len() == 3
    finish_elsewhere(broker, cworker_factory, waiting, [1, 2, 3])


@pytest.mark.slow
def test_remap_sigterm_makes_sigterm_cold(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--acks-late"], redis=redis_server,
                        env={"REMAP_SIGTERM": "SIGQUIT"})
    assert "REMAP_SIGTERM=SIGQUIT without worker_soft_shutdown_timeout" in w.log()
    r, = start_running(w, app, 1, 4.0)     # run to its end by finish_elsewhere
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    assert w.wait(5) == 1, "SIGTERM stayed warm"
    assert time.monotonic() - t0 < 3 * SLOW
    assert "worker: Cold shutdown (MainProcess)" in w.log()
    assert ready_and_unacked(redis_server) == (1, 0)
    finish_elsewhere(redis_server, cworker_factory, [r], [0])


def test_remap_sigterm_with_soft_timeout(redis_server, cworker_factory, app):
    """The Kubernetes/systemd recipe of packaging/: SIGTERM waits the soft timeout, then
    gives the running acks_late message back; any other value of REMAP_SIGTERM is ignored."""
    w = cworker_factory(["-c", "1", "--acks-late", "--soft-shutdown-timeout", "0.5"],
                        redis=redis_server, env={"REMAP_SIGTERM": "SIGQUIT"})
    r, = start_running(w, app, 1, 10.0)
    w.send_signal(signal.SIGTERM)
    assert w.wait(5) == 1
    assert "Initiating Soft Shutdown" in w.log()
    assert ready_and_unacked(redis_server) == (1, 0)
    w2 = cworker_factory(["-c", "1", "--acks-late"], redis=redis_server,
                         env={"REMAP_SIGTERM": "SIGKILL"})
    w2.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.3)
    w2.send_signal(signal.SIGTERM)
    assert w2.wait(1) is None, "SIGTERM without a valid remap must stay warm"
    w2.kill()


def test_eta_task_limit_caps_held_messages(broker, cworker_factory, app_factory):
    w = cworker_factory(["-c", "1", "--prefetch-multiplier", "1", "--eta-task-limit", "3"],
                        redis=broker)
    app = app_factory(broker)
    rs = [app.send_task("cworker.add", args=[i, 0], countdown=60) for i in range(6)]
    wait_for(lambda: len(re.findall(r"received", w.log())) >= 3, 10, what="three ETA tasks")
    time.sleep(1.0 * SLOW)
    assert len(re.findall(r"received", w.log())) == 3, "held more ETA messages than the cap"
    assert broker.queue_len() == 3
    if broker.kind == "amqp":
        assert broker.counts() == (3, 3)
    for r in rs:
        r.revoke()
