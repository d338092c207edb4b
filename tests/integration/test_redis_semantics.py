"""kombu's Redis transport semantics: priority sub-queues (0 = highest),
several queues, the unacked/unacked_index bookkeeping, and visibility-timeout
restores in both directions between cworker and stock Python workers."""

import json
import re
import signal
import socket
import threading
import time
import uuid

import pytest

from conftest import (PRIORITY_SEP, capture_envelope, meta, queue_len, unacked_count,
                      wait_for)


def result_order(monitor, ids):
    """Task ids in the order their results were written (SET/SETEX on the server)."""
    wanted = set(ids)
    order = []
    for cmd in monitor.commands():
        if cmd and cmd[0].upper() in ("SET", "SETEX", "PSETEX") and len(cmd) > 1:
            key = cmd[1]
            if key.startswith("celery-task-meta-"):
                tid = key[len("celery-task-meta-"):]
                if tid in wanted and tid not in order:
                    order.append(tid)
    return order


def test_priority_order(redis_server, cworker_factory, app, redis_monitor):
    # queued before any worker runs; priorities interleaved in send order
    sent = []
    for rnd in range(3):
        for pri in (9, 3, 0, 6):
            r = app.send_task("cworker.echo", args=[f"p{pri}-{rnd}"], priority=pri)
            sent.append((pri, rnd, r.id))
    c = redis_server.client()
    assert c.llen("celery") == 3 and c.llen(f"celery{PRIORITY_SEP}9") == 3, \
        "producer did not use kombu's priority lists"
    mon = redis_monitor(redis_server)
    cworker_factory(["-c", "1", "--prefetch-multiplier", "1"], redis=redis_server)
    ids = [tid for _, _, tid in sent]
    wait_for(lambda: all(meta(c, t) for t in ids), 30, what="all 12 results")
    time.sleep(0.3)
    got = result_order(mon, ids)
    expected = [tid for _, _, tid in sorted(sent, key=lambda s: (s[0], s[1]))]
    by_id = {tid: f"p{pri}-{rnd}" for pri, rnd, tid in sent}
    assert [by_id[t] for t in got] == [by_id[t] for t in expected], \
        "execution order does not follow kombu priorities (0 first, FIFO within a priority)"


def test_priority_higher_jumps_queue_while_running(redis_server, cworker_factory, app):
    """With one slot busy and nothing reserved (--disable-prefetch), a later priority-0 task
    runs before earlier priority-9 ones."""
    c = redis_server.client()
    cworker_factory(["-c", "1", "--prefetch-multiplier", "1", "--disable-prefetch", "-P",
                     "prefork"], redis=redis_server)
    blocker = app.send_task("cworker.sleep", args=[1.0])
    wait_for(lambda: queue_len(c) == 0, 10, what="blocker taken")
    low = [app.send_task("cworker.noop", priority=9) for _ in range(3)]
    high = app.send_task("cworker.noop", priority=0)
    for r in [blocker, high] + low:
        r.get(timeout=30)
    t_high = high.date_done
    assert all(t_high <= r.date_done for r in low), \
        f"priority 0 finished at {t_high}, after some priority 9: {[r.date_done for r in low]}"


@pytest.mark.parametrize("c,m,disable", [(1, 1, False), (2, 1, False), (2, 4, False),
                                         (2, 1, True), (2, 4, True)])
def test_prefetch_limit(redis_server, cworker_factory, app, c, m, disable):
    """By default the worker holds concurrency x prefetch-multiplier unacknowledged messages,
    as kombu's QoS counts them: the running tasks were acked as they started, so c x m more
    wait reserved in `unacked`.  With --disable-prefetch (Celery 5.6) it takes a message only
    when a process is free: c messages, all running, none reserved (docs/semantics.md)."""
    r = redis_server.client()
    cworker_factory(["-c", str(c), "--prefetch-multiplier", str(m)] +
                    (["--disable-prefetch"] if disable else []), redis=redis_server)
    for _ in range(12):
        app.send_task("cworker.sleep", args=[3])
    reserved = 0 if disable else c * m
    taken = c + reserved
    wait_for(lambda: queue_len(r) <= 12 - taken, 10, what=f"worker holding {taken}")
    time.sleep(1.0)
    assert queue_len(r) == 12 - taken, \
        f"holds {12 - queue_len(r)} messages with -c {c} --prefetch-multiplier {m}"
    assert r.hlen("unacked") == reserved, \
        f"{r.hlen('unacked')} unacked (reserved, not started); expected {reserved}"


def test_multiple_queues(redis_server, cworker_factory, app):
    cworker_factory(["-c", "2", "-Q", "alpha,beta"], redis=redis_server)
    c = redis_server.client()
    # the worker declares its queues as Celery does (before any producer did); the SADDs
    # leave with its first write on the command connection, which can come just after the
    # "ready" line this factory waits for
    for q in ("alpha", "beta"):
        wait_for(lambda: any(m.decode().endswith(f"{PRIORITY_SEP}{q}")
                             for m in c.smembers(f"_kombu.binding.{q}")), 5,
                 what=f"_kombu.binding.{q}")
    ra = [app.send_task("cworker.add", args=[i, 1], queue="alpha") for i in range(10)]
    rb = [app.send_task("cworker.add", args=[i, 2], queue="beta") for i in range(10)]
    rc = app.send_task("cworker.add", args=[0, 0], queue="gamma")
    assert [r.get(timeout=30) for r in ra] == [i + 1 for i in range(10)]
    assert [r.get(timeout=30) for r in rb] == [i + 2 for i in range(10)]
    time.sleep(0.5)
    assert c.llen("gamma") == 1, "consumed a queue it was not told to"
    assert rc.state == "PENDING"


def test_queues_are_taken_in_turn(redis_server, cworker_factory, app):
    """Two queues with ten messages each, taken one at a time (-c 1, --disable-prefetch):
    after a message from one queue the next take starts at the other, as kombu's cycle does,
    so the two alternate instead of draining the first queue before the second."""
    ids = {}
    for i in range(10):
        for q in ("alpha", "beta"):
            ids[app.send_task("cworker.echo", args=[i], queue=q).id] = q
    w = cworker_factory(["-c", "1", "--prefetch-multiplier", "1", "--disable-prefetch",
                         "-Q", "alpha,beta"], redis=redis_server)
    for tid in ids:
        app.AsyncResult(tid).get(timeout=30)
    order = [ids[m] for m in re.findall(r"Task cworker\.echo\[([0-9a-f-]+)\] received", w.log())
             if m in ids]
    assert len(order) == 20
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches >= 17, f"queues not taken in turn: {order}"


def test_unacked_bookkeeping_format(redis_server, cworker_factory, app):
    """While held, reserved messages sit in `unacked` as [envelope, exchange, routing_key]
    with the same tags in `unacked_index`; afterwards both are empty."""
    c = redis_server.client()
    cworker_factory(["-c", "1", "--prefetch-multiplier", "4"], redis=redis_server)
    blocker = app.send_task("cworker.sleep", args=[2.0])
    held = [app.send_task("cworker.echo", args=[i]) for i in range(3)]
    wait_for(lambda: queue_len(c) == 0 and c.hlen("unacked") >= 3, 10,
             what="3 reserved messages in unacked")
    entries = c.hgetall("unacked")
    index = {k: v for k, v in c.zrange("unacked_index", 0, -1, withscores=True)}
    ids = set()
    for tag, raw in entries.items():
        val = json.loads(raw)
        assert isinstance(val, list) and len(val) == 3, val
        envelope, exchange, routing_key = val
        assert envelope["properties"]["delivery_tag"] == tag.decode()
        assert routing_key == "celery" and exchange in ("celery", ""), (exchange, routing_key)
        assert tag in index, "tag in unacked but not in unacked_index"
        assert abs(index[tag] - time.time()) < 60, "unacked_index score is not a unix time"
        ids.add(envelope["headers"]["id"])
    assert {r.id for r in held} <= ids
    for r in [blocker] + held:
        r.get(timeout=30)
    wait_for(lambda: unacked_count(c) == 0, 10, what="bookkeeping emptied after acks")


def fake_unacked(app, c, value, age):
    """Leave a message in the unacked bookkeeping exactly as kombu's QoS.append does
    for a consumer of the default queue (delivery_info exchange '' and routing key
    'celery'), `age` seconds ago; returns (task id, delivery tag)."""
    tid, env = capture_envelope(app, c, "cworker.echo", args=[value])
    env["properties"]["delivery_info"] = {"exchange": "", "routing_key": "celery"}
    tag = env["properties"]["delivery_tag"]
    c.hset("unacked", tag, json.dumps([env, "", "celery"]))
    c.zadd("unacked_index", {tag: time.time() - age})
    return tid, tag


def test_visibility_timeout_restore_by_cworker(redis_server, cworker_factory, app):
    """A message a dead consumer left in `unacked` (score in the past) is restored by
    cworker's scan and executed."""
    c = redis_server.client()
    tid, tag = fake_unacked(app, c, "restored", age=100)
    cworker_factory(["-c", "1", "--visibility-timeout", "1"], redis=redis_server)
    wait_for(lambda: meta(c, tid), 30, what="restored task executed")
    assert meta(c, tid)["result"] == "restored"
    wait_for(lambda: unacked_count(c) == 0, 10, what="bookkeeping emptied")
    assert queue_len(c) == 0


def test_visibility_timeout_restore_keeps_big_integers(redis_server, cworker_factory, app):
    """An entry holding an integer beyond 64 bits (a header a Python producer set) is
    restored and run, not dropped as malformed."""
    c = redis_server.client()
    tid, env = capture_envelope(app, c, "cworker.echo", args=["big"])
    env["headers"]["x-big"] = 10**30
    env["properties"]["delivery_info"] = {"exchange": "", "routing_key": "celery"}
    tag = env["properties"]["delivery_tag"]
    c.hset("unacked", tag, json.dumps([env, "", "celery"]))
    c.zadd("unacked_index", {tag: time.time() - 100})
    cworker_factory(["-c", "1", "--visibility-timeout", "1"], redis=redis_server)
    wait_for(lambda: meta(c, tid), 30, what="restored task executed")
    assert meta(c, tid)["result"] == "big"


def test_given_back_message_keeps_big_integers(redis_server, cworker_factory, app):
    """A message given back to its list is written from its text again, marked redelivered
    as kombu does: an integer beyond 64 bits in its headers stays that integer."""
    c = redis_server.client()
    w = cworker_factory(["-c", "1", "--acks-late"], redis=redis_server)
    r = app.send_task("cworker.sleep", args=[10.0], headers={"x-big": 10**30})
    wait_for(lambda: queue_len(c) == 0 and c.hlen("unacked") == 1, 10,
             what="the message held")
    w.send_signal(signal.SIGQUIT)
    w.wait(10)
    wait_for(lambda: queue_len(c) == 1, 10, what="the message given back")
    env = json.loads(c.lindex("celery", 0))
    assert env["headers"]["id"] == r.id
    assert env["headers"]["x-big"] == 10**30
    assert env["headers"]["redelivered"] is True


def test_visibility_timeout_not_restored_when_fresh(redis_server, cworker_factory, app):
    """An entry younger than the visibility timeout is left alone."""
    c = redis_server.client()
    tid, tag = fake_unacked(app, c, "fresh", age=0)
    cworker_factory(["-c", "1", "--visibility-timeout", "3600"], redis=redis_server)
    time.sleep(2)
    assert meta(c, tid) is None, "restored an entry that had not timed out"
    assert c.hexists("unacked", tag)


def test_restore_honours_mutex(redis_server, cworker_factory, app):
    """While another consumer holds `unacked_mutex`, cworker does not restore."""
    c = redis_server.client()
    tid, tag = fake_unacked(app, c, "locked", age=100)
    c.set("unacked_mutex", "someone-else", ex=4)
    cworker_factory(["-c", "1", "--visibility-timeout", "1"], redis=redis_server)
    time.sleep(2)
    assert meta(c, tid) is None, "restored while unacked_mutex was held by another consumer"
    assert c.get("unacked_mutex") == b"someone-else", "cworker overwrote someone else's mutex"
    # after the mutex expires the message comes back
    wait_for(lambda: meta(c, tid), 30, what="restore after the mutex expired")


def test_sigkilled_cworker_messages_restored_by_python_worker(
        redis_server, cworker_factory, pyworker_factory, app):
    c = redis_server.client()
    w = cworker_factory(["-c", "1", "--prefetch-multiplier", "4"], redis=redis_server)
    app.send_task("cworker.sleep", args=[30])      # runs, acked early: not restorable
    held = [app.send_task("cworker.getpid") for _ in range(3)]
    wait_for(lambda: queue_len(c) == 0 and c.hlen("unacked") >= 3, 10,
             what="cworker holding 3 reserved messages")
    held_ids = {r.id for r in held}
    w.stop(sig=signal.SIGKILL)
    assert held_ids <= {json.loads(v)[0]["headers"]["id"] for v in c.hvals("unacked")}
    time.sleep(1.5)     # older than the Python worker's visibility timeout
    py = pyworker_factory(redis_server, visibility_timeout=1)
    pids = [r.get(timeout=60) for r in held]
    assert pids == [py.pid] * 3, f"restored tasks should run in the Python worker {py.pid}: {pids}"
    wait_for(lambda: unacked_count(c) == 0, 10, what="bookkeeping emptied")


def test_mixed_python_and_c_workers(redis_server, cworker_factory, pyworker_factory, app):
    """One broker, a Python worker on queue `py` and cworker on `c`: each runs its own."""
    cw = cworker_factory(["-P", "solo", "-Q", "c"], redis=redis_server)
    py = pyworker_factory(redis_server, queues="py")
    rc = [app.send_task("cworker.getpid", queue="c") for _ in range(10)]
    rp = [app.send_task("cworker.getpid", queue="py") for _ in range(10)]
    assert {r.get(timeout=30) for r in rc} == {cw.pid}
    assert {r.get(timeout=30) for r in rp} == {py.pid}
    # same queue, both consuming: everything completes exactly once
    cw2 = cworker_factory(["-P", "solo", "-Q", "py"], redis=redis_server)
    rs = [app.send_task("cworker.echo", args=[i], queue="py") for i in range(100)]
    assert [r.get(timeout=60) for r in rs] == list(range(100))
    assert cw2.alive() and py.alive()


class ReplyDropProxy:
    """A TCP relay in front of Redis that, the first time a reply from Redis
    carries `marker`, closes that connection on both sides without passing the
    reply on: the message was taken by Redis and its answer never arrived."""

    def __init__(self, port, marker):
        self.port, self.marker = port, marker
        self.dropped = threading.Event()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lport = self.lsock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                cli, _ = self.lsock.accept()
            except OSError:
                return
            srv = socket.create_connection(("127.0.0.1", self.port))
            self.conns += [cli, srv]
            threading.Thread(target=self._pump, args=(cli, srv, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(srv, cli, True), daemon=True).start()

    def _forward(self, data, from_redis):
        """Pass data on (True), or drop the connection instead (False)."""
        if from_redis and self.marker in data and not self.dropped.is_set():
            self.dropped.set()
            return False
        return True

    def _pump(self, src, dst, from_redis):
        try:
            while True:
                data = src.recv(65536)
                if not data or not self._forward(data, from_redis):
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.lsock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


def test_taken_message_survives_a_lost_reply(redis_server, cworker_factory, app):
    """Redis takes a message for the worker and the connection drops before the
    answer arrives. The take recorded it in `unacked` in the same step, so the
    visibility scan gives it back and it runs; with BRPOP it would be gone."""
    c = redis_server.client()
    tid = "lost-reply-" + uuid.uuid4().hex
    proxy = ReplyDropProxy(redis_server.port, tid.encode())
    try:
        cworker_factory(["-c", "1", "--visibility-timeout", "2",
                         "-b", f"redis://127.0.0.1:{proxy.lport}/0",
                         "--result-backend", redis_server.url()], redis=None)
        app.send_task("cworker.echo", args=["after the lost reply"], task_id=tid)
        assert proxy.dropped.wait(20), "the worker never took the message"
        held = [json.loads(v)[0]["headers"]["id"] for v in c.hvals("unacked")]
        assert held == [tid], f"not recorded as unacked when taken: {held}"
        wait_for(lambda: meta(c, tid), 30, what="the restored task's result")
        m = meta(c, tid)
        assert (m["status"], m["result"]) == ("SUCCESS", "after the lost reply")
        wait_for(lambda: unacked_count(c) == 0 and queue_len(c) == 0, 10,
                 what="bookkeeping emptied")
    finally:
        proxy.close()


def _clients(c):
    return {int(x["id"]): x for x in c.client_list()}


def test_idle_worker_waits_on_tracking_notices(redis_server, cworker_factory, app):
    """An idle worker holds no BRPOP: its consumer connection has broadcast tracking on,
    redirected to its broadcast connection, and a push wakes it."""
    c = redis_server.client()
    w = cworker_factory(["-c", "1"], redis=redis_server)

    def tracking():
        cl = [x for x in c.client_list() if "t" in x["flags"]]
        return cl[0] if len(cl) == 1 else None
    wait_for(tracking, 10, what="a connection with tracking on")
    trk = tracking()
    target = int(trk.get("redir", -1))
    clients = _clients(c)
    assert target in clients, f"notices redirected to no live connection: {trk}"
    assert int(clients[target]["sub"]) >= 1, \
        f"the redirect target is not subscribed to the notices: {clients[target]}"
    assert not any(x["cmd"] in ("brpop", "blpop") for x in c.client_list()), \
        "an idle worker is blocked in BRPOP"
    assert app.send_task("cworker.add", args=[2, 3]).get(timeout=20) == 5
    assert w.alive()


def test_takes_and_acks_share_the_command_connection(redis_server, cworker_factory, app):
    """With tracking, the take script and the acks go on one connection, so what a loop
    turn sends leaves in one write (and its replies come back in one read); the consumer
    connection is kept for BRPOP.  Seen with MONITOR: every take and every ack of a burst
    comes from the same client address."""
    c = redis_server.client()
    cworker_factory(["-c", "2"], redis=redis_server)
    assert app.send_task("cworker.add", args=[0, 0]).get(timeout=20) == 0  # scripts loaded
    seen = []
    stop = threading.Event()
    ready = threading.Event()

    def watch():
        with redis_server.client().monitor() as m:
            ready.set()
            while not stop.is_set():
                try:
                    seen.append(m.next_command())
                except Exception:  # the connection closes when stop is set
                    return
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert ready.wait(5)
    time.sleep(0.2)
    n = 30
    assert [r.get(timeout=20) for r in [app.send_task("cworker.add", args=[i, 1])
                                        for i in range(n)]] == [i + 1 for i in range(n)]
    wait_for(lambda: unacked_count(c) == 0, 10, what="every message acked")
    time.sleep(0.3)
    stop.set()
    c.lpush("monitor-stop", "x")  # one more command so the watcher returns
    t.join(5)
    takes, acks = set(), set()
    for e in seen:
        words = e["command"].split()
        if not words or words[0].upper() not in ("EVALSHA", "EVAL") or len(words) < 6:
            continue
        src = (e.get("client_address"), e.get("client_port"))
        if words[3:6] == ["unacked_index", "unacked", "cworker.deliveries"]:
            (acks if len(words) == 7 else takes).add(src)
    assert takes and acks, f"no take or no ack seen: {len(seen)} commands"
    assert takes == acks, f"takes from {takes}, acks from {acks}"


def test_without_client_tracking_falls_back_to_brpop(redis_server, cworker_factory, app):
    """A user whose ACL forbids CLIENT (a managed Redis may) still gets served, with
    kombu's BRPOP, and the worker says so."""
    c = redis_server.client()
    c.execute_command("ACL", "SETUSER", "limited", "on", ">s3cret", "~*", "&*", "+@all",
                      "-client")
    w = cworker_factory(["-c", "1", "-b", f"redis://limited:s3cret@127.0.0.1:{redis_server.port}/0"],
                        redis=redis_server)
    w.wait_log(r"refused CLIENT TRACKING", timeout=10)
    assert app.send_task("cworker.add", args=[20, 22]).get(timeout=20) == 42
    wait_for(lambda: any(x["cmd"] == "brpop" for x in c.client_list()), 10,
             what="the worker waiting in BRPOP")


def test_hot_scripts_go_by_sha_and_survive_script_flush(redis_server, cworker_factory, app):
    """The per-task scripts (take, ack, result store) are sent with EVALSHA, not their text;
    after SCRIPT FLUSH (or a restart) the server answers NOSCRIPT, and each is sent once
    with its text: every task still runs, its result is stored and its message acked."""
    c = redis_server.client()
    w = cworker_factory(["-c", "2"], redis=redis_server)
    n = 20
    c.config_resetstat()
    assert [r.get(timeout=20) for r in [app.send_task("cworker.add", args=[i, 1])
                                        for i in range(n)]] == [i + 1 for i in range(n)]
    wait_for(lambda: unacked_count(c) == 0, 10, what="every message acked")
    stats = c.info("commandstats")
    by_sha = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    as_text = stats.get("cmdstat_eval", {}).get("calls", 0)
    # one ack and one store per task (a take may carry several messages when they wait
    # queued, so takes are at least one); the text goes only where the server lacked it
    assert by_sha >= 2 * n - 2, stats
    assert as_text <= 6, f"per-task scripts sent as text: {as_text} EVAL for {n} tasks"
    mark = w.log_size()
    c.script_flush()
    assert [r.get(timeout=20) for r in [app.send_task("cworker.add", args=[i, 2])
                                        for i in range(n)]] == [i + 2 for i in range(n)]
    wait_for(lambda: unacked_count(c) == 0, 10, what="every message acked after the flush")
    assert "failed" not in w.log_since(mark), w.log_since(mark)
    assert w.alive()


class DelayProxy(ReplyDropProxy):
    """A TCP relay in front of Redis that holds every command `delay` seconds on its way."""

    def __init__(self, port, delay):
        self.delay = delay
        super().__init__(port, marker=None)

    def _forward(self, data, from_redis):
        if not from_redis:
            time.sleep(self.delay)
        return True


@pytest.mark.parametrize("acks_late", [False, True])
def test_next_message_taken_while_the_result_is_stored(redis_server, cworker_factory, app,
                                                        acks_late):
    """--disable-prefetch, -c 1, two tasks queued, result stores held up 1 s.  Early ack:
    once the first task has returned, its place in the budget goes to the next message, so
    that message leaves the queue while the first result is still on its way.  acks_late:
    the first message is unacknowledged until its result is stored, so it keeps its place
    and the second stays queued until then."""
    proxy = DelayProxy(redis_server.port, 1.0)
    args = ["-c", "1", "--prefetch-multiplier", "1", "--disable-prefetch",
            "--result-backend", f"redis://127.0.0.1:{proxy.lport}/0"]
    if acks_late:
        args.append("--acks-late")
    w = cworker_factory(args, redis=redis_server)
    c = redis_server.client()
    a = app.send_task("cworker.add", args=[1, 1])
    b = app.send_task("cworker.add", args=[2, 2])

    def first():
        if c.exists(f"celery-task-meta-{a.id}"):
            return "first result stored"
        if queue_len(c, "celery") == 0:
            return "second message taken"
        return None
    try:
        seen = wait_for(first, 30, interval=0.01, what="the second message taken or the first "
                        "result stored")
        assert seen == ("first result stored" if acks_late else "second message taken")
        assert a.get(timeout=30) == 2 and b.get(timeout=30) == 4
        assert w.alive()
    finally:
        proxy.close()


def test_scripts_go_as_text_when_script_load_is_refused(redis_server, cworker_factory, app):
    """A user whose ACL forbids SCRIPT (LOAD) gets every script as EVAL, asked for the
    digest once per process and not again, and is served as usual."""
    c = redis_server.client()
    c.execute_command("ACL", "SETUSER", "noload", "on", ">s3cret", "~*", "&*", "+@all",
                      "-script")
    w = cworker_factory(["-c", "2", "-b", f"redis://noload:s3cret@127.0.0.1:{redis_server.port}/0",
                         "--result-backend",
                         f"redis://noload:s3cret@127.0.0.1:{redis_server.port}/0"],
                        redis=redis_server)
    c.config_resetstat()
    n = 20
    assert [r.get(timeout=20) for r in [app.send_task("cworker.add", args=[i, 3])
                                        for i in range(n)]] == [i + 3 for i in range(n)]
    wait_for(lambda: unacked_count(c) == 0, 10, what="every message acked")
    stats = c.info("commandstats")
    # one ack and one store per task, and at least one take (a take carries every queued
    # message the prefetch budget allows, so there may be fewer takes than tasks)
    assert stats.get("cmdstat_eval", {}).get("calls", 0) >= 2 * n + 1, stats
    assert stats.get("cmdstat_evalsha", {}).get("calls", 0) == 0, stats
    # refused once per process (master: take and ack; each child: store), then never asked
    refused = stats.get("cmdstat_script|load", {})
    assert refused.get("calls", 0) + refused.get("rejected_calls", 0) <= 4, refused
    assert w.alive()
