"""Worker semantics against real Python producers on a real redis-server:
acks_late and reject_on_worker_lost, the redelivery cap, soft and hard time
limits (and their precedence), child recycling and memory limits, ETA,
countdown and expires."""

import datetime
import os
import re
import signal
import time

import pytest

from conftest import SLOW, meta, queue_len, unacked_count, wait_for


def busy_child(worker, timeout=10):
    """PID of the child currently running a task (the only child with -c 1)."""
    kids = wait_for(lambda: worker.children(), timeout, what="worker children")
    return kids[0]


def wait_started(worker, task_id, timeout=10):
    worker.wait_log(rf"Task \S+\[{task_id}\] received", timeout=timeout)
    time.sleep(0.3 * SLOW)  # the child has it


def log_time(line):
    m = re.match(r"\[(\d+-\d+-\d+ \d+:\d+:\d+),(\d+):", line)
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() + int(m.group(2)) / 1000


def log_line(worker, pattern):
    for line in worker.log().splitlines():
        if re.search(pattern, line):
            return line
    raise AssertionError(f"/{pattern}/ not in log")


# -- acks_late ----------------------------------------------------------------

def test_child_killed_without_acks_late_fails_with_workerlosterror(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1"], redis=redis_server)
    r = app.send_task("cworker.sleep", args=[5])
    wait_started(w, r.id)
    os.kill(busy_child(w), signal.SIGKILL)
    from billiard.exceptions import WorkerLostError
    with pytest.raises(WorkerLostError):
        r.get(timeout=10)
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10) == 3


@pytest.mark.parametrize("how", ["cli", "config"])
def test_acks_late_child_killed_task_runs_again(redis_server, cworker_factory, app, tmp_path, how):
    if how == "cli":
        args = ["-c", "1", "--acks-late", "--reject-on-worker-lost"]
    else:
        conf = tmp_path / "cw.conf"
        conf.write_text("[task:cworker.sleep]\nacks_late = true\nreject_on_worker_lost = yes\n")
        args = ["-c", "1", "--config", str(conf)]
    w = cworker_factory(args, redis=redis_server)
    c = redis_server.client()
    r = app.send_task("cworker.sleep", args=[2])
    wait_started(w, r.id)
    assert c.hlen("unacked") == 1, "acks_late: the running message must still be unacked"
    first = busy_child(w)
    os.kill(first, signal.SIGKILL)
    assert r.get(timeout=20) is None           # ran again, to success
    assert meta(c, r.id)["status"] == "SUCCESS"
    assert len(re.findall(rf"Task cworker.sleep\[{r.id}\] received", w.log())) == 2
    wait_for(lambda: unacked_count(c) == 0, 5, what="acked after success")


def test_acks_late_worker_killed_python_worker_gets_message(redis_server, cworker_factory,
                                                            pyworker_factory, app):
    c = redis_server.client()
    w = cworker_factory(["-c", "1", "--acks-late", "--visibility-timeout", "2"], redis=redis_server)
    r = app.send_task("cworker.sleep", args=[3])   # the Python worker runs it in full
    wait_started(w, r.id)
    for pid in [w.pid] + w.children():
        os.kill(pid, signal.SIGKILL)
    w.wait(10)
    assert c.hlen("unacked") == 1 and queue_len(c) == 0
    time.sleep(2.5)                            # past the visibility timeout
    py = pyworker_factory(redis_server, visibility_timeout=2)
    # the Python worker restores it (kombu restore_visible) and runs it
    wait_for(lambda: meta(c, r.id), 60, what="Python worker ran the restored message")
    assert meta(c, r.id)["status"] == "SUCCESS"
    assert r.id in py.log()


def test_held_message_is_not_redelivered_while_its_worker_lives(redis_server, cworker_factory, app):
    """Celery's #1 Redis pain: a task longer than the visibility timeout runs twice.
    cworker keeps the entries it holds fresh, so a second worker's scan leaves it alone."""
    c = redis_server.client()
    a = cworker_factory(["-c", "1", "--acks-late", "--visibility-timeout", "1"], redis=redis_server,
                        name="holder")
    r = app.send_task("cworker.sleep", args=[4])
    wait_started(a, r.id)
    b = cworker_factory(["-c", "1", "--visibility-timeout", "1"], redis=redis_server, name="scanner")
    assert r.get(timeout=20) is None
    assert r.id not in b.log(), "the scanning worker took a message its holder was still running"
    assert len(re.findall(rf"\[{r.id}\] received", a.log())) == 1
    wait_for(lambda: unacked_count(c) == 0, 5, what="acked")


def test_redelivery_cap_turns_crash_loop_into_failure(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--diagnostic-tasks", "--acks-late", "--reject-on-worker-lost",
                         "--max-redeliveries", "3"], redis=redis_server)
    c = redis_server.client()
    r = app.send_task("cworker.crash")
    with pytest.raises(Exception) as ei:
        r.get(timeout=30)
    assert type(ei.value).__name__ == "RedeliveryLimitExceeded"
    assert len(re.findall(rf"cworker.crash\[{r.id}\] received", w.log())) == 3
    wait_for(lambda: unacked_count(c) == 0 and queue_len(c) == 0, 5, what="message gone")
    assert c.hlen("cworker.deliveries") == 0
    assert app.send_task("cworker.add", args=[2, 2]).get(timeout=10) == 4


# -- time limits ----------------------------------------------------------------

def test_soft_time_limit_raises_softtimelimitexceeded(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--soft-time-limit", "0.5"], redis=redis_server)
    from celery.exceptions import SoftTimeLimitExceeded
    t0 = time.monotonic()
    r = app.send_task("cworker.sleep", args=[10])
    with pytest.raises(SoftTimeLimitExceeded):
        r.get(timeout=10)
    assert time.monotonic() - t0 < 3
    fired = log_time(log_line(w, rf"Soft time limit \(0.5s\) exceeded for cworker.sleep\[{r.id}\]"))
    started = log_time(log_line(w, rf"cworker.sleep\[{r.id}\] received"))
    assert 0.5 <= fired - started < 0.6, f"soft limit fired after {fired - started:.3f}s"
    assert app.send_task("cworker.add", args=[1, 1]).get(timeout=10) == 2


def test_hard_time_limit_kills_child_and_next_task_runs(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--diagnostic-tasks", "--time-limit", "1"], redis=redis_server)
    pid_before = app.send_task("cworker.getpid").get(timeout=10)
    r = app.send_task("cworker.spin", args=[30])
    from billiard.exceptions import TimeLimitExceeded
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=15)
    fired = log_time(log_line(w, rf"Hard time limit \(1s\) exceeded for cworker.spin\[{r.id}\]"))
    started = log_time(log_line(w, rf"cworker.spin\[{r.id}\] received"))
    assert 1.0 <= fired - started < 1.1, f"hard limit fired after {fired - started:.3f}s"
    stored = meta(redis_server.client(), r.id)
    assert stored["result"]["exc_type"] == "TimeLimitExceeded"
    assert stored["result"]["exc_message"] == [1.0]
    pid_after = app.send_task("cworker.getpid").get(timeout=10)
    assert pid_after != pid_before
    assert app.send_task("cworker.add", args=[3, 4]).get(timeout=10) == 7


def test_message_timelimit_header_wins_over_config(redis_server, cworker_factory, app, tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("task_time_limit = 30\n[task:cworker.sleep]\nsoft_time_limit = 20\n")
    cworker_factory(["-c", "1", "--diagnostic-tasks", "--config", str(conf)], redis=redis_server)
    from billiard.exceptions import TimeLimitExceeded
    from celery.exceptions import SoftTimeLimitExceeded
    t0 = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        app.send_task("cworker.spin", args=[30], time_limit=1).get(timeout=15)
    with pytest.raises(SoftTimeLimitExceeded):
        app.send_task("cworker.sleep", args=[30], soft_time_limit=0.5).get(timeout=15)
    assert time.monotonic() - t0 < 6


def test_task_section_soft_limit_applies_to_that_task_only(redis_server, cworker_factory, app,
                                                            tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[task:cworker.sleep]\nsoft_time_limit = 0.3\n")
    cworker_factory(["-c", "1", "--diagnostic-tasks", "--config", str(conf)], redis=redis_server)
    from celery.exceptions import SoftTimeLimitExceeded
    with pytest.raises(SoftTimeLimitExceeded):
        app.send_task("cworker.sleep", args=[5]).get(timeout=10)
    assert app.send_task("cworker.spin", args=[0.6]).get(timeout=10) is None


# -- recycling and memory ----------------------------------------------------------

def test_max_tasks_per_child_replaces_children(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--max-tasks-per-child", "3"], redis=redis_server)
    pids = [app.send_task("cworker.getpid").get(timeout=10) for _ in range(9)]
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] == pids[5]
    assert pids[6] == pids[7] == pids[8]
    assert len(set(pids)) == 3, pids
    assert "exited with" not in w.log(), "a recycled child is not an error"


def test_max_memory_per_child_replaces_after_the_task(redis_server, cworker_factory, app):
    cworker_factory(["-c", "1", "--diagnostic-tasks", "--max-memory-per-child", "40000"],
                    redis=redis_server)
    pid = app.send_task("cworker.getpid").get(timeout=10)
    assert app.send_task("cworker.getpid").get(timeout=10) == pid     # small: kept
    # (whether freed memory leaves the RSS depends on the allocator: ASan keeps it)
    # a leaky task completes, then its child (RSS now > 40000 KiB) is replaced
    assert app.send_task("cworker.alloc", args=[80, 0, True]).get(timeout=20) == 80
    assert app.send_task("cworker.getpid").get(timeout=10) != pid


def test_child_memory_limit_kills_runaway_task_only(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "2", "--diagnostic-tasks", "--child-memory-limit", "100000"],
                        redis=redis_server)
    other = app.send_task("cworker.sleep", args=[2])
    hog = app.send_task("cworker.alloc", args=[400, 5])
    with pytest.raises(Exception) as ei:
        hog.get(timeout=20)
    assert type(ei.value).__name__ == "MemoryLimitExceeded"
    assert other.get(timeout=10) is None
    assert w.alive()
    assert app.send_task("cworker.alloc", args=[20, 0]).get(timeout=10) == 20


# -- ETA, countdown, expires -----------------------------------------------------------

def test_countdown_runs_on_time_without_blocking_others(redis_server, cworker_factory, app):
    c = redis_server.client()
    cworker_factory(["-c", "1", "--prefetch-multiplier", "1"], redis=redis_server)
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    late = app.send_task("cworker.noop", eta=eta)
    quick = [app.send_task("cworker.add", args=[i, i]) for i in range(5)]
    assert [q.get(timeout=10) for q in quick] == [0, 2, 4, 6, 8]
    assert meta(c, late.id) is None, "the ETA task ran early"
    assert late.get(timeout=10) is None
    done = datetime.datetime.fromisoformat(meta(c, late.id)["date_done"]).replace(
        tzinfo=datetime.timezone.utc)
    lag = (done - eta).total_seconds()
    assert 0 <= lag < 0.1, f"ETA task finished {lag:.3f}s after its ETA"


def test_expired_task_is_revoked(redis_server, cworker_factory, app):
    from celery.exceptions import TaskRevokedError
    c = redis_server.client()
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    r = app.send_task("cworker.add", args=[1, 2], expires=past)
    cworker_factory(["-c", "1"], redis=redis_server)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=10)
    assert meta(c, r.id)["status"] == "REVOKED"
    # expires while waiting for its ETA
    r2 = app.send_task("cworker.add", args=[1, 2], countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        r2.get(timeout=10)
    wait_for(lambda: unacked_count(c) == 0, 5, what="revoked messages acked")


def test_eta_messages_go_back_on_warm_shutdown(redis_server, cworker_factory, app):
    c = redis_server.client()
    w = cworker_factory(["-c", "1"], redis=redis_server)
    rs = [app.send_task("cworker.noop", countdown=60) for _ in range(3)]
    wait_for(lambda: queue_len(c) == 0, 10, what="ETA messages taken")
    w.stop(signal.SIGTERM, timeout=15)
    assert w.proc.returncode == 0
    assert queue_len(c) == 3 and unacked_count(c) == 0
    assert all(meta(c, r.id) is None for r in rs)


# -- retries -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [1, 2])
def test_retry_until_publishes_retries_like_task_retry(redis_server, cworker_factory, app_factory,
                                                        redis_monitor, protocol):
    mon = redis_monitor(redis_server)
    cworker_factory(["-c", "2", "--diagnostic-tasks"], redis=redis_server)
    papp = app_factory(redis_server, protocol=protocol)
    r = papp.send_task("cworker.retry_until", args=[3])
    assert r.get(timeout=20) == 3
    c = redis_server.client()
    assert meta(c, r.id)["status"] == "SUCCESS"
    # three retry messages were published (same id, retries 1..3, with an ETA)
    pushes = [cmd for cmd in mon.commands()
              if cmd and cmd[0].upper() == "LPUSH" and r.id in " ".join(cmd)]
    assert len(pushes) == 4, pushes          # the producer's message + 3 retries


def test_retry_states_and_same_id(redis_server, cworker_factory, app):
    c = redis_server.client()
    cworker_factory(["-c", "1", "--diagnostic-tasks"], redis=redis_server)
    seen = set()
    r = app.send_task("cworker.retry_until", args=[5])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = meta(c, r.id)
        if m:
            seen.add(m["status"])
            if m["status"] == "SUCCESS":
                break
        time.sleep(0.01)
    assert "SUCCESS" in seen and r.get(timeout=1) == 5
    assert "RETRY" in seen, f"RETRY state never stored: {seen}"


def test_retry_past_max_retries_fails(redis_server, cworker_factory, app):
    from celery.exceptions import MaxRetriesExceededError
    cworker_factory(["-c", "1", "--diagnostic-tasks"], redis=redis_server)
    with pytest.raises(MaxRetriesExceededError):
        app.send_task("cworker.retry_max", args=[2]).get(timeout=20)
    with pytest.raises(ValueError):
        app.send_task("cworker.retry_max", args=[1, "ValueError"]).get(timeout=20)
