"""Monitoring compatibility: Debian's own `celery` CLI (status, inspect,
control) and celery.events (EventReceiver + State, what Flower is built on)
against cworker on a real redis-server, and next to a stock Python worker."""

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from conftest import PYTHON, SLOW, descendants, meta, queue_len, wait_for



@pytest.fixture
def redis_server(broker):
    """Every test here runs on each broker (conftest `broker`: redis, amqp)."""
    return broker

def celery_cli(redis, *args, timeout=30):
    """Run `python3 -m celery -b URL <args>`; returns CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    return subprocess.run([PYTHON, "-m", "celery", "-b", redis.url()] + list(args),
                          capture_output=True, text=True, timeout=timeout * SLOW, env=env)


def inspect(redis, node, command, *args, timeout=5):
    p = celery_cli(redis, "inspect", command, *args, "-j", "-d", node,
                   "-t", str(timeout * SLOW))
    assert p.returncode == 0, p.stdout + p.stderr
    replies = json.loads(p.stdout)
    assert node in replies, replies
    return replies[node]


def control(app, node, command, timeout=5, **arguments):
    replies = app.control.broadcast(command, arguments=arguments, destination=[node],
                                    reply=True, timeout=timeout * SLOW)
    assert replies, f"no reply to {command}"
    return replies[0][node]


def node_name(tag="cw"):
    return f"{tag}-{uuid.uuid4().hex[:6]}@testhost"


class Events:
    """celery.events receiver feeding celery.events.state.State in a thread."""

    def __init__(self, app):
        from celery.events.state import State
        self.app = app
        self.state = State()
        self.raw = []
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        # subscribed once our own probe event comes back through the broker
        probe = f"probe-{uuid.uuid4().hex}"
        with app.connection_for_write() as conn:
            disp = app.events.Dispatcher(conn, hostname=probe)
            deadline = time.monotonic() + 15
            while not self.of_type("worker-probe", probe):
                assert time.monotonic() < deadline, "event receiver did not start"
                disp.send("worker-probe")
                time.sleep(0.1)
            disp.close()

    def on_event(self, event):
        with self.lock:
            self.raw.append(event)
            if event["type"] != "worker-probe":
                self.state.event(event)

    def run(self):
        # One consumer for the whole test: re-capturing after an idle timeout would
        # drop the receiver's auto-delete queue on AMQP and lose the events sent in
        # between. kombu's consume loop checks should_stop at least once a second.
        with self.app.connection_for_read() as conn:
            self.recv = self.app.events.Receiver(conn, handlers={"*": self.on_event})
            while not self.stop:
                try:
                    for _ in self.recv.itercapture(limit=None, timeout=None, wakeup=False):
                        if self.stop:
                            return
                except Exception:  # connection trouble: capture again
                    time.sleep(0.1)

    def of_type(self, type_, hostname=None):
        with self.lock:
            return [e for e in self.raw if e["type"] == type_
                    and (hostname is None or e.get("hostname") == hostname)]

    def task(self, task_id):
        with self.lock:
            return self.state.tasks.get(task_id)

    def close(self):
        self.stop = True
        recv = getattr(self, "recv", None)
        if recv is not None:
            recv.should_stop = True
        self.thread.join(5)


@pytest.fixture
def events(app):
    ev = Events(app)
    yield ev
    ev.close()


# -- status / inspect -----------------------------------------------------------

def test_celery_status_and_ping(redis_server, cworker_factory):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    p = celery_cli(redis_server, "status", "-t", str(3 * SLOW))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{node}: OK" in p.stdout and "1 node online" in p.stdout
    assert inspect(redis_server, node, "ping") == {"ok": "pong"}


def test_inspect_stats_is_complete(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["-c", "2", "-n", node, "--prefetch-multiplier", "3",
                         "--max-tasks-per-child", "50"], redis=redis_server)
    assert app.send_task("cworker.add", args=[1, 2]).get(timeout=10) == 3
    s = inspect(redis_server, node, "stats")
    assert s["total"] == {"cworker.add": 1}
    assert s["pid"] == w.pid and isinstance(s["uptime"], int) and int(s["clock"]) > 0
    pool = s["pool"]
    assert pool["max-concurrency"] == 2 and pool["max-tasks-per-child"] == 50
    assert sorted(pool["processes"]) == sorted(w.children())
    assert s["prefetch_count"] == 6
    assert s["broker"]["transport"] == redis_server.kind
    assert s["broker"]["port"] == redis_server.port
    for key in ("utime", "stime", "maxrss", "minflt", "nvcsw"):
        assert key in s["rusage"]


def test_inspect_active_reserved_scheduled_query(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["-c", "1", "-n", node, "--prefetch-multiplier", "3"],
                        redis=redis_server)
    running = app.send_task("cworker.sleep", args=[4 * SLOW])
    waiting = app.send_task("cworker.add", args=[5, 6])
    later = app.send_task("cworker.echo", args=["x"], countdown=60)
    w.wait_log(rf"Task cworker.echo\[{later.id}\] received", timeout=10)
    time.sleep(0.3 * SLOW)
    active = inspect(redis_server, node, "active")
    assert [a["id"] for a in active] == [running.id]
    assert active[0]["name"] == "cworker.sleep" and active[0]["hostname"] == node
    assert active[0]["worker_pid"] in w.children()
    assert active[0]["time_start"] > 0 and active[0]["acknowledged"] is True
    assert active[0]["delivery_info"]["routing_key"] == "celery"
    reserved = inspect(redis_server, node, "reserved")
    assert [r["id"] for r in reserved] == [waiting.id] and reserved[0]["args"] == [5, 6]
    scheduled = inspect(redis_server, node, "scheduled")
    assert [s["request"]["id"] for s in scheduled] == [later.id]
    if redis_server.kind == "redis":
        assert scheduled[0]["eta"] == _eta_from_message(redis_server, later.id)
    else:
        assert scheduled[0]["eta"].startswith(time.strftime("%Y-"))
    q = inspect(redis_server, node, "query_task", running.id, waiting.id, "unknown-id")
    assert q[running.id][0] == "active" and q[waiting.id][0] == "reserved"
    assert "unknown-id" not in q
    # (the sleep is long enough for the inspections under ASan; it need not run out)
    app.control.revoke(running.id, terminate=True)
    assert waiting.get(timeout=20) == 11


def _eta_from_message(redis, task_id):
    c = redis.client()
    for _, item in c.hscan_iter("unacked"):
        e = json.loads(item)[0]
        e = json.loads(e) if isinstance(e, str) else e
        if e["headers"]["id"] == task_id:
            return e["headers"]["eta"]
    return None


def test_inspect_registered_queues_conf_report_clock(redis_server, cworker_factory):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node, "-Q", "celery,docs"], redis=redis_server)
    reg = inspect(redis_server, node, "registered")
    assert "cworker.add" in reg and reg == sorted(reg)
    queues = inspect(redis_server, node, "active_queues")
    assert [q["name"] for q in queues] == ["celery", "docs"]
    assert queues[1]["exchange"] == {"name": "docs", "type": "direct", "arguments": None,
                                     "durable": True, "passive": False, "auto_delete": False,
                                     "delivery_mode": None, "no_declare": False}
    conf = inspect(redis_server, node, "conf")
    # passwords are masked, as Celery's conf reply masks them
    assert conf["broker_url"] == redis_server.url().replace(":guest@", ":**@")
    assert conf["worker_concurrency"] == 1
    assert "software -> cworker" in inspect(redis_server, node, "report")["ok"]
    c1 = inspect(redis_server, node, "clock")["clock"]
    c2 = inspect(redis_server, node, "clock")["clock"]
    assert c2 > c1 > 0
    assert inspect(redis_server, node, "revoked") == []


def test_unknown_command_gets_celerys_error_reply(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    assert control(app, node, "no_such_command") == {"error": "KeyError('no_such_command')"}
    # and the worker carries on
    assert control(app, node, "ping") == {"ok": "pong"}


def test_hello_pool_restart_and_election_replies(redis_server, cworker_factory, app):
    """The replies Celery's own handlers give: hello (mingle) shares revoked ids both ways
    and answers None to itself, pool_restart is refused as with worker_pool_restarts
    off, election answers None (no gossip here)."""
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    app.control.revoke("hello-known-1")
    r = control(app, node, "hello", from_node="other@host",
                revoked={"hello-from-peer": time.time()})
    assert "hello-known-1" in r["revoked"] and "hello-from-peer" in r["revoked"]
    assert int(r["clock"]) > 0
    assert "hello-from-peer" in inspect(redis_server, node, "revoked")
    # from itself: kombu's dispatch still replies, with None
    assert app.control.broadcast("hello", arguments={"from_node": node, "revoked": {}},
                                 destination=[node], reply=True,
                                 timeout=1.5 * SLOW) == [{node: None}]
    assert control(app, node, "pool_restart") == {
        "error": "ValueError('Pool restarts not enabled')"}
    assert app.control.broadcast("election", arguments={"id": "e1", "topic": "t",
                                                        "action": "a"},
                                 destination=[node], reply=True,
                                 timeout=1.5 * SLOW) == [{node: None}]
    assert control(app, node, "ping") == {"ok": "pong"}


def test_task_rejected_event_on_requeue(redis_server, cworker_factory, app, events):
    """acks_late + reject_on_worker_lost: a lost child's message is requeued and the
    worker sends task-rejected (requeue=True), as Celery's Request.reject does."""
    w = cworker_factory(["-c", "1", "--acks-late", "--reject-on-worker-lost", "-E"],
                        redis=redis_server)
    r = app.send_task("cworker.sleep", args=[1.0, "ok"])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.3 * SLOW)
    os.kill(w.children()[0], signal.SIGKILL)
    assert r.get(timeout=30) == "ok"
    rejected = [e for e in events.of_type("task-rejected") if e.get("uuid") == r.id]
    assert rejected and rejected[0]["requeue"] is True
    wait_for(lambda: [e for e in events.raw if e.get("uuid") == r.id
                      and e["type"] == "task-succeeded"], 10, what="task-succeeded after the requeue")


def test_lamport_clock_merges_received_clocks(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    # kombu's Mailbox stamps requests with its own Lamport clock
    app.control.mailbox.clock.adjust(100000)
    # the request carries the producer's clock; the worker must move past it
    replies = app.control.broadcast("clock", destination=[node], reply=True, timeout=5 * SLOW)
    assert replies[0][node]["clock"] > 100000


def test_mailbox_ignores_other_destinations_and_patterns(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    assert app.control.broadcast("ping", destination=["other@host"], reply=True,
                                 timeout=1) == []
    r = app.control.broadcast("ping", pattern=node.split("@")[0][:4] + "*", matcher="glob",
                              reply=True, timeout=3 * SLOW)
    assert r == [{node: {"ok": "pong"}}]


# -- control ----------------------------------------------------------------------

def test_revoke_reply_and_revoked_list(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    assert control(app, node, "revoke", task_id="abc") == {"ok": "tasks abc flagged as revoked"}
    assert control(app, node, "revoke", task_id=["x1", "x2"], terminate=True) == \
        {"ok": "terminate: tasks unknown"}
    assert sorted(inspect(redis_server, node, "revoked")) == ["abc", "x1", "x2"]


def test_terminate_command_kills_the_running_task(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    r = app.send_task("cworker.sleep", args=[60])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.3 * SLOW)
    assert control(app, node, "terminate", task_id=r.id, signal="SIGKILL") == \
        {"ok": f"terminate: {r.id}"}
    from celery.exceptions import TaskRevokedError
    with pytest.raises(TaskRevokedError):
        r.get(timeout=10)


def test_rate_limit_and_time_limit_commands(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    assert control(app, node, "rate_limit", task_name="cworker.add", rate_limit="2/s") == \
        {"ok": "new rate limit set successfully"}
    assert "cworker.add [rate_limit=2/s]" in inspect(redis_server, node, "registered")
    t0 = time.monotonic()
    rs = [app.send_task("cworker.add", args=[i, i]) for i in range(5)]
    assert [r.get(timeout=20) for r in rs] == [0, 2, 4, 6, 8]
    assert time.monotonic() - t0 >= 1.8  # 1 at once, then one per 500 ms
    assert control(app, node, "rate_limit", task_name="cworker.add", rate_limit=0) == \
        {"ok": "rate limit disabled successfully"}
    assert control(app, node, "rate_limit", task_name="nope.task", rate_limit="1/s") == \
        {"error": "unknown task"}
    assert "error" in control(app, node, "rate_limit", task_name="cworker.add",
                              rate_limit="fast")
    assert control(app, node, "time_limit", task_name="cworker.sleep", soft=0.5, hard=1) == \
        {"ok": "time limits set successfully"}
    from celery.exceptions import SoftTimeLimitExceeded
    with pytest.raises(SoftTimeLimitExceeded):
        app.send_task("cworker.sleep", args=[10]).get(timeout=10)
    assert control(app, node, "time_limit", task_name="nope.task", soft=1) == \
        {"error": "unknown task"}


def test_pool_grow_and_shrink(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["-c", "2", "-n", node], redis=redis_server)
    assert control(app, node, "pool_grow", n=2) == {"ok": "pool will grow"}
    wait_for(lambda: len(inspect(redis_server, node, "stats")["pool"]["processes"]) == 4, 10,
             what="4 processes")
    assert inspect(redis_server, node, "stats")["prefetch_count"] == 16
    # four tasks run at once now
    rs = [app.send_task("cworker.sleep", args=[1.5 * SLOW]) for _ in range(4)]
    t0 = time.monotonic()
    [r.get(timeout=20) for r in rs]
    assert time.monotonic() - t0 < 2.9 * SLOW
    assert control(app, node, "pool_shrink", n=3) == {"ok": "pool will shrink"}
    wait_for(lambda: len(inspect(redis_server, node, "stats")["pool"]["processes"]) == 1, 10,
             what="1 process left")
    wait_for(lambda: len(w.children()) == 1, 10, what="retired children gone")
    # shrinking while every process is busy is refused, as billiard does
    r = app.send_task("cworker.sleep", args=[2 * SLOW])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.3 * SLOW)
    assert control(app, node, "pool_shrink") == \
        {"error": "ValueError(\"Can't shrink pool. All processes busy!\")"}
    r.get(timeout=20)
    assert control(app, node, "autoscale", max=3, min=1) == \
        {"error": "ValueError('Autoscale not enabled')"}


def test_add_and_cancel_consumer(redis_server, cworker_factory, app):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    assert control(app, node, "add_consumer", queue="extra") == {"ok": "add consumer extra"}
    assert [q["name"] for q in inspect(redis_server, node, "active_queues")] == \
        ["celery", "extra"]
    assert app.send_task("cworker.add", args=[1, 1], queue="extra").get(timeout=10) == 2
    assert control(app, node, "cancel_consumer", queue="extra") == \
        {"ok": "no longer consuming from extra"}
    assert [q["name"] for q in inspect(redis_server, node, "active_queues")] == ["celery"]
    time.sleep(1.5)  # a BRPOP started before the cancel has timed out
    app.send_task("cworker.add", args=[1, 1], queue="extra")
    time.sleep(1.5 * SLOW)
    assert redis_server.queue_len("extra") == 1


def test_shutdown_command_stops_the_worker_warm(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    r = app.send_task("cworker.sleep", args=[1.0 * SLOW, "done"])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    time.sleep(0.2)
    app.control.broadcast("shutdown", destination=[node])
    assert w.wait(15 * SLOW) == 0
    assert r.get(timeout=5) == "done"  # the running task finished first


def test_autoscale_grows_under_load_and_shrinks_when_idle(redis_server, cworker_factory, app):
    node = node_name()
    w = cworker_factory(["--autoscale", "3,1", "-n", node], redis=redis_server,
                        env={"AUTOSCALE_KEEPALIVE": "2"})
    assert len(w.children()) == 1
    stats = inspect(redis_server, node, "stats")
    assert stats["autoscaler"] == {"max": 3, "min": 1, "current": 1, "qty": 0}
    assert stats["prefetch_count"] == 12  # sized for max, as Celery
    rs = [app.send_task("cworker.sleep", args=[3 * SLOW]) for _ in range(3)]
    wait_for(lambda: len(w.children()) == 3, 10 * SLOW, what="grown to 3")
    [r.get(timeout=30) for r in rs]
    wait_for(lambda: len(w.children()) == 1, 15 * SLOW, what="shrunk back to 1")
    assert "Scaling up" in w.log() and "Scaling down" in w.log()
    assert control(app, node, "autoscale", max=5, min=2) == {"ok": "autoscale now max=5 min=2"}
    wait_for(lambda: len(w.children()) == 2, 10, what="grown to the new min")
    assert control(app, node, "pool_grow") == {
        "error": "pool_grow is not supported with autoscale. Adjust autoscale range instead."}


# -- events -------------------------------------------------------------------------

def test_worker_events_and_heartbeats_while_busy(redis_server, cworker_factory, app, events):
    node = node_name()
    w = cworker_factory(["-c", "1", "-n", node, "--heartbeat-interval", "0.5"],
                        redis=redis_server)
    wait_for(lambda: events.of_type("worker-online", node), 10, what="worker-online")
    online = events.of_type("worker-online", node)[0]
    for key in ("hostname", "utcoffset", "pid", "clock", "freq", "sw_ident", "sw_ver", "sw_sys",
                "active", "processed", "loadavg", "timestamp"):
        assert key in online, key
    assert online["pid"] == w.pid and online["freq"] == 0.5
    # the only child is busy for 3 s: heartbeats keep coming, with active == 1
    r = app.send_task("cworker.sleep", args=[3])
    w.wait_log(rf"Task cworker.sleep\[{r.id}\] received", timeout=10)
    n0 = len(events.of_type("worker-heartbeat", node))
    time.sleep(2)
    beats = events.of_type("worker-heartbeat", node)[n0:]
    assert len(beats) >= 3 and all(b["active"] == 1 for b in beats[1:])
    with events.lock:
        worker = events.state.workers[node]
        assert worker.alive
    # no -E: no task events
    assert not [e for e in events.raw if e["type"].startswith("task-")]
    r.get(timeout=10)
    w.stop(signal.SIGTERM, timeout=15)
    wait_for(lambda: events.of_type("worker-offline", node), 10, what="worker-offline")
    with events.lock:
        assert not events.state.workers[node].alive


def test_task_events_reach_their_states(redis_server, cworker_factory, app, events):
    node = node_name()
    w = cworker_factory(["-c", "2", "-n", node, "-E", "--diagnostic-tasks"], redis=redis_server)
    ok = app.send_task("cworker.add", args=[20, 22])
    bad = app.send_task("cworker.fail", args=["ValueError", "nope"])
    retried = app.send_task("cworker.retry_until", args=[1])
    assert ok.get(timeout=10) == 42
    with pytest.raises(ValueError):
        bad.get(timeout=10)
    assert retried.get(timeout=20) == 1
    revoked_id = "evt-revoked-0001"
    app.control.revoke(revoked_id)
    w.wait_log(f"flagged as revoked: {revoked_id}", timeout=10)
    app.send_task("cworker.add", args=[1, 1], task_id=revoked_id)

    def states():
        t = [events.task(i) for i in (ok.id, bad.id, revoked_id)]
        return all(t) and [x.state for x in t] == ["SUCCESS", "FAILURE", "REVOKED"]
    wait_for(states, 15, what="task states in celery.events.state")
    t_ok, t_bad = events.task(ok.id), events.task(bad.id)
    assert t_ok.name == "cworker.add" and t_ok.args == "[20, 22]" and t_ok.result == "42"
    assert t_ok.runtime is not None and t_ok.runtime >= 0 and t_ok.worker.hostname == node
    assert t_ok.received and t_ok.started and t_ok.succeeded
    assert t_bad.exception == "ValueError('nope')" and "ValueError" in t_bad.traceback
    wait_for(lambda: events.of_type("task-retried", node), 10, what="task-retried")
    assert "Retry" in events.of_type("task-retried", node)[0]["exception"]
    rv = [e for e in events.of_type("task-revoked", node) if e["uuid"] == revoked_id][0]
    assert rv["expired"] is False and rv["terminated"] is False
    # clocks go forward
    clocks = [e["clock"] for e in events.raw if e.get("hostname") == node]
    assert clocks == sorted(clocks)


def test_enable_and_disable_events_remotely(redis_server, cworker_factory, app, events):
    node = node_name()
    cworker_factory(["-c", "1", "-n", node], redis=redis_server)
    app.send_task("cworker.add", args=[1, 1]).get(timeout=10)
    assert control(app, node, "enable_events") == {"ok": "task events enabled"}
    assert control(app, node, "enable_events") == {"ok": "task events already enabled"}
    r = app.send_task("cworker.add", args=[2, 2])
    r.get(timeout=10)
    wait_for(lambda: events.task(r.id) and events.task(r.id).state == "SUCCESS", 10,
             what="task events after enable_events")
    assert control(app, node, "disable_events") == {"ok": "task events disabled"}
    r2 = app.send_task("cworker.add", args=[3, 3])
    r2.get(timeout=10)
    time.sleep(0.5)
    assert events.task(r2.id) is None
    assert control(app, node, "heartbeat") is None
    wait_for(lambda: [e for e in events.of_type("worker-heartbeat", node) if e["freq"] == 5], 5,
             what="requested heartbeat")


def test_python_and_c_workers_side_by_side(redis_server, cworker_factory, pyworker_factory,
                                           app, events):
    cnode, pnode = node_name("cw"), node_name("py")
    cworker_factory(["-c", "1", "-n", cnode, "-E"], redis=redis_server)
    pyworker_factory(redis_server, pool="prefork", concurrency=1, name=pnode, extra=["-E"])
    p = celery_cli(redis_server, "status", "-t", str(3 * SLOW))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{cnode}: OK" in p.stdout and f"{pnode}: OK" in p.stdout
    assert "2 nodes online" in p.stdout
    rs = [app.send_task("cworker.add", args=[i, i]) for i in range(20)]
    assert [r.get(timeout=30) for r in rs] == [2 * i for i in range(20)]
    wait_for(lambda: all(events.task(r.id) and events.task(r.id).state == "SUCCESS"
                         for r in rs), 15, what="all tasks seen in the one event stream")
    hosts = {events.task(r.id).worker.hostname for r in rs}
    assert hosts <= {cnode, pnode}
    with events.lock:
        assert events.state.workers[cnode].alive and events.state.workers[pnode].alive
    # both answer the same inspect call with the same shapes
    both = app.control.inspect(timeout=3 * SLOW).stats()
    assert set(both) == {cnode, pnode}
    assert set(both[pnode]) - set(both[cnode]) <= {"autoscaler"}
    assert set(both[pnode]["pool"]) == set(both[cnode]["pool"])
