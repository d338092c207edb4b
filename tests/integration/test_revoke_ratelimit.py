"""Revoke (control messages from app.control.revoke, the revoked set, the
state db) and per-task rate limits, with stock Python producers."""

import json
import os
import signal
import time

import pytest

from conftest import SLOW, meta, queue_len, run_cworker, unacked_count, wait_for


def revoke(app, worker, task_id, **kw):
    app.control.revoke(task_id, **kw)
    worker.wait_log(rf"Tasks flagged as revoked: {task_id}", timeout=10)


def revoked_error():
    from celery.exceptions import TaskRevokedError
    return TaskRevokedError


@pytest.fixture
def redis_server(broker):
    """Every test here runs on each broker (conftest `broker`: redis, amqp)."""
    return broker


# -- revoke -------------------------------------------------------------------

def test_revoked_before_arrival_is_skipped(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1"], redis=redis_server)
    tid = "revoked-early-0001"
    revoke(app, w, tid)
    r = app.send_task("cworker.add", args=[1, 2], task_id=tid)
    with pytest.raises(revoked_error()):
        r.get(timeout=10)
    m = meta(redis_server.client(), tid)
    assert m["status"] == "REVOKED"
    assert m["result"]["exc_type"] == "TaskRevokedError" and m["result"]["exc_message"] == ["revoked"]
    wait_for(lambda: redis_server.drained(), 5, what="message acked")
    # the worker goes on serving
    assert app.send_task("cworker.add", args=[2, 2]).get(timeout=10) == 4


def test_revoke_of_a_reserved_task(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "--prefetch-multiplier", "2"], redis=redis_server)
    busy = app.send_task("cworker.sleep", args=[1.5 * SLOW])
    waiting = app.send_task("cworker.add", args=[1, 1])
    w.wait_log(rf"Task cworker.add\[{waiting.id}\] received", timeout=10)
    revoke(app, w, waiting.id)
    busy.get(timeout=20)
    with pytest.raises(revoked_error()):
        waiting.get(timeout=10)
    assert "Discarding revoked task: cworker.add[%s]" % waiting.id in w.log()


def test_revoke_does_not_touch_other_workers_when_addressed(redis_server, cworker_factory, app):
    w = cworker_factory(["-c", "1", "-n", "mine@host"], redis=redis_server)
    tid = "not-for-me-0001"
    app.control.revoke(tid, destination=["someone-else@host"])
    # a revoke addressed to us afterwards proves the first one was read and ignored
    revoke(app, w, "marker-0001", destination=["mine@host"])
    assert f"flagged as revoked: {tid}" not in w.log()
    assert app.send_task("cworker.add", args=[3, 4], task_id=tid).get(timeout=10) == 7


@pytest.mark.parametrize("sig", [None, "SIGKILL"])
def test_revoke_terminate_kills_the_running_task(redis_server, cworker_factory, app, sig):
    w = cworker_factory(["-c", "1"], redis=redis_server)
    before = app.send_task("cworker.getpid").get(timeout=10)
    r = app.send_task("cworker.sleep", args=[60])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.3 * SLOW)
    t0 = time.monotonic()
    kw = {"terminate": True}
    if sig:
        kw["signal"] = sig
    revoke(app, w, r.id, **kw)
    with pytest.raises(revoked_error()):
        r.get(timeout=10)
    assert time.monotonic() - t0 < 5 * SLOW
    assert meta(redis_server.client(), r.id)["result"]["exc_message"] == ["terminated"]
    wait_for(lambda: not os.path.exists(f"/proc/{before}"), 5, what="terminated child gone")
    # a new child takes the slot
    after = app.send_task("cworker.getpid").get(timeout=10)
    assert after != before
    wait_for(lambda: redis_server.drained(), 5, what="message acked")


def test_statedb_keeps_revokes_across_restarts(redis_server, cworker_factory, app, tmp_path):
    db = tmp_path / "worker.state"
    w1 = cworker_factory(["-c", "1", "--statedb", str(db)], redis=redis_server)
    tid = "persisted-revoke-0001"
    revoke(app, w1, tid)
    w1.stop(signal.SIGTERM, timeout=15)
    assert db.exists()
    saved = json.loads(db.read_text())
    assert [e[0] for e in saved["revoked"]] == [tid]
    cworker_factory(["-c", "1", "--statedb", str(db)], redis=redis_server)
    with pytest.raises(revoked_error()):
        app.send_task("cworker.add", args=[1, 2], task_id=tid).get(timeout=10)


def test_without_statedb_revokes_are_forgotten_on_restart(redis_server, cworker_factory, app):
    w1 = cworker_factory(["-c", "1"], redis=redis_server)
    tid = "forgotten-revoke-0001"
    revoke(app, w1, tid)
    w1.stop(signal.SIGTERM, timeout=15)
    cworker_factory(["-c", "1"], redis=redis_server)
    assert app.send_task("cworker.add", args=[1, 2], task_id=tid).get(timeout=10) == 3


def test_corrupt_statedb_is_reported_and_set_aside(redis_server, cworker_factory, app, tmp_path):
    db = tmp_path / "worker.state"
    db.write_text("{not json")
    w = cworker_factory(["-c", "1", "--statedb", str(db)], redis=redis_server)
    assert "state db unusable" in w.log()
    assert (tmp_path / "worker.state.corrupt").read_text() == "{not json"
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10) == 3
    revoke(app, w, "after-corrupt-0001")
    wait_for(db.exists, 5, what="state db rewritten")
    assert json.loads(db.read_text())["revoked"][0][0] == "after-corrupt-0001"


# -- rate limits ----------------------------------------------------------------

def done_times(client, ids):
    import datetime
    out = []
    for i in ids:
        d = meta(client, i)["date_done"]
        out.append(datetime.datetime.fromisoformat(d).timestamp())
    return sorted(out)


def test_rate_limit_spaces_tasks(redis_server, cworker_factory, app, tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[task:cworker.add]\nrate_limit = 5/s\n")
    cworker_factory(["-c", "2", "--config", str(conf)], redis=redis_server)
    rs = [app.send_task("cworker.add", args=[i, i]) for i in range(10)]
    assert [r.get(timeout=30) for r in rs] == [2 * i for i in range(10)]
    t = done_times(redis_server.client(), [r.id for r in rs])
    # a full bucket gives one at once, then one every 200 ms: 9 gaps
    span = t[-1] - t[0]
    assert 1.6 <= span <= 1.8 + 1.0 * SLOW, span
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert min(gaps) >= 0.15, gaps


def test_rate_limit_per_minute_does_not_block_other_tasks(redis_server, cworker_factory, app,
                                                          tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[task:cworker.add]\nrate_limit = 6/m\n")
    cworker_factory(["-c", "1", "--prefetch-multiplier", "1", "--config", str(conf)],
                    redis=redis_server)
    adds = [app.send_task("cworker.add", args=[i, 0]) for i in range(4)]
    echos = [app.send_task("cworker.echo", args=[i]) for i in range(5)]
    t0 = time.monotonic()
    assert [e.get(timeout=10) for e in echos] == list(range(5))
    assert time.monotonic() - t0 < 3 * SLOW
    # one add ran at once (full bucket); the next is due 10 s later
    assert adds[0].get(timeout=10) == 0
    assert [a.state for a in adds[1:]] == ["PENDING"] * 3
    # the waiting adds are held by the worker (unacked), not lost
    assert redis_server.queue_len() == 0 and redis_server.unacked() == 3


def test_rate_limited_messages_go_back_on_shutdown(redis_server, cworker_factory, app, tmp_path):
    conf = tmp_path / "cw.conf"
    conf.write_text("[task:cworker.add]\nrate_limit = 1/h\n")
    w = cworker_factory(["-c", "1", "--config", str(conf)], redis=redis_server)
    rs = [app.send_task("cworker.add", args=[i, 0]) for i in range(3)]
    rs[0].get(timeout=10)
    wait_for(lambda: redis_server.unacked() == 2, 10, what="two adds held")
    w.stop(signal.SIGTERM, timeout=15)
    wait_for(lambda: redis_server.queue_len() == 2 and redis_server.unacked() == 0, 10,
             what="held adds back on the queue")


@pytest.mark.parametrize("bad", ["fast", "10/d", "-1/s", "5/sec"])
def test_bad_rate_limit_is_a_usage_error(tmp_path, bad):
    conf = tmp_path / "cw.conf"
    conf.write_text(f"[task:cworker.add]\nrate_limit = {bad}\n")
    p = run_cworker(["--config", str(conf), "-b", "redis://127.0.0.1:1/0"])
    assert p.returncode == 64
    assert "rate_limit" in p.stderr
